"""MR-to-CT baselines that need no network: an intensity-to-HU regression ("tissue class by intensity") and
bulk density.

`IntensityRegression` bins the normalised MR intensity (the mr preset's [-1, 1], background exactly -1) and
maps each bin to the mean HU of the training voxels that fall in it, then interpolates between bin centres.
It is the non-parametric form of a piecewise / polynomial intensity-to-HU regression, and is what a
bulk-density or tissue-class assignment by intensity amounts to. Its known failure, which context-aware
synthesis must fix, is that bone and CSF / air are all dark on T1: one intensity, very different HU.
"""

from __future__ import annotations

import numpy as np
import torch

from medgen.errors import MedgenError


class IntensityRegression:
    """Mean HU per normalised-MR-intensity bin, fitted on training cases (every voxel of each volume)."""

    def __init__(self, bins: int = 64, window=(-1000.0, 2000.0)):
        self.bins = int(bins)
        self.window = (float(window[0]), float(window[1]))
        self.centres: np.ndarray | None = None
        self.values: np.ndarray | None = None
        self.background_hu = -1000.0

    def _to_hu(self, ct_norm: np.ndarray) -> np.ndarray:
        lo, hi = self.window
        return (ct_norm + 1.0) * (hi - lo) / 2.0 + lo

    def fit(self, cases, mr_key: str = "mr", ct_key: str = "ct") -> "IntensityRegression":
        """cases: normalised cases as mr_to_ct loads them (mr in [-1, 1], ct in the HU window)."""
        if not cases:
            raise MedgenError("IntensityRegression.fit got no training cases")
        mr = np.concatenate([np.asarray(c[mr_key]).reshape(-1) for c in cases])
        hu = np.concatenate([self._to_hu(np.asarray(c[ct_key]).reshape(-1)) for c in cases])
        bg = mr <= -1.0 + 1e-6
        if bg.any():
            self.background_hu = float(hu[bg].mean())
        edges = np.linspace(-1.0, 1.0, self.bins + 1)
        idx = np.clip(np.digitize(mr[~bg], edges) - 1, 0, self.bins - 1)
        sums = np.bincount(idx, weights=hu[~bg], minlength=self.bins)
        counts = np.bincount(idx, minlength=self.bins)
        centres = (edges[:-1] + edges[1:]) / 2
        keep = counts > 0
        if not keep.any():
            raise MedgenError("IntensityRegression.fit: no foreground MR voxels in the training cases")
        self.centres, self.values = centres[keep], sums[keep] / counts[keep]
        return self

    def predict_hu(self, mr_norm) -> np.ndarray:
        if self.centres is None:
            raise MedgenError("IntensityRegression: call fit() first")
        mr = np.asarray(mr_norm, dtype=np.float64)
        out = np.interp(mr, self.centres, self.values)
        return np.where(mr <= -1.0 + 1e-6, self.background_hu, out).astype(np.float32)

    def predict_normalised(self, case: dict, pipeline=None, mr_key: str = "mr") -> torch.Tensor:
        """The prediction in the CT preset's [-1, 1] (what the FCN outputs), for the pipeline's evaluate_case."""
        lo, hi = pipeline.config.data.hu_window if pipeline is not None else self.window
        hu = self.predict_hu(np.asarray(case[mr_key]))
        return torch.from_numpy(((hu - lo) * 2.0 / (hi - lo) - 1.0).astype(np.float32))


class BulkDensity:
    """The simplest MR-only CT: one HU value (the training mean inside the head mask) for every head voxel,
    air (-1000 HU) elsewhere; the "water-equivalent bulk density" assignment of early MR-only planning."""

    def __init__(self, window=(-1000.0, 2000.0)):
        self.window = (float(window[0]), float(window[1]))
        self.value_hu = 0.0

    def fit(self, cases, ct_key: str = "ct", mask_key: str = "mask") -> "BulkDensity":
        lo, hi = self.window
        vals = [((np.asarray(c[ct_key]) + 1.0) * (hi - lo) / 2.0 + lo)[np.asarray(c[mask_key]) > 0] for c in cases]
        if not vals or sum(v.size for v in vals) == 0:
            raise MedgenError("BulkDensity.fit needs training cases with a non-empty mask")
        self.value_hu = float(np.concatenate(vals).mean())
        return self

    def predict_normalised(self, case: dict, pipeline=None, mask_key: str = "mask") -> torch.Tensor:
        lo, hi = self.window
        hu = np.where(np.asarray(case[mask_key]) > 0, self.value_hu, -1000.0).astype(np.float32)
        return torch.from_numpy((hu - lo) * 2.0 / (hi - lo) - 1.0)
