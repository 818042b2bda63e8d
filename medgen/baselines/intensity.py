"""Intensity-mapping baselines for cross-contrast MR synthesis: how much of it is a voxel-wise intensity map?

- `HistogramMatching`: each source image's foreground histogram is matched (scikit-image `match_histograms`)
  to the pooled target foreground histogram of the TRAINING cases (a monotonic map).
- `PolynomialRegression`: target = polynomial(source channels) of total degree `degree` (1 = linear), least
  squares over the training cases' foreground voxels (can model non-monotonic maps, e.g. T1 -> T2).

Both work on cases as the image pipelines load them (normalised to [-1, 1], background -1) and return
predictions in their format ({"output": (1, *spatial) tensor}), so the pipeline's own `evaluate_case` scores
every method the same way.
"""

from __future__ import annotations

from itertools import combinations_with_replacement

import numpy as np
import torch

from medgen.errors import ConfigError, DataError

__all__ = ["HistogramMatching", "PolynomialRegression", "foreground"]

MAX_POOLED_VOXELS = 2_000_000  # a deterministic subsample keeps the fits cheap on real 1 mm volumes


def foreground(case: dict, source_keys, mask_key: str | None) -> np.ndarray:
    """Voxels the baselines map: the mask when the case has one, else where any source is not background."""
    if mask_key and mask_key in case:
        return case[mask_key].numpy()[0] > 0
    return np.any(np.stack([case[k].numpy()[0] > -1.0 for k in source_keys]), axis=0)


def _pooled(cases, key_fn, mask_key, source_keys, seed: int = 0) -> np.ndarray:
    values = [key_fn(c)[..., foreground(c, source_keys, mask_key)] for c in cases]
    out = np.concatenate(values, axis=-1)
    if out.shape[-1] > MAX_POOLED_VOXELS:
        idx = np.sort(np.random.default_rng(seed).choice(out.shape[-1], MAX_POOLED_VOXELS, replace=False))
        out = out[..., idx]
    return out


class _Baseline:
    name = "baseline"

    def __init__(self, source_keys, target_key: str, mask_key: str | None = "brain_mask"):
        self.source_keys, self.target_key, self.mask_key = list(source_keys), target_key, mask_key or None

    def _check_training(self, cases) -> None:
        if not cases:
            raise DataError(None, f"{self.name}: no training cases to fit on")
        for c in cases:
            if self.target_key not in c:
                raise DataError(None, f"{self.name}: training case {getattr(c, 'id', None)!r} has no target {self.target_key!r}")

    def predict_case(self, case: dict) -> dict:
        src = np.stack([case[k].numpy()[0] for k in self.source_keys])
        fg = foreground(case, self.source_keys, self.mask_key)
        out = np.full(src.shape[1:], -1.0, dtype=np.float32)
        if fg.any():
            out[fg] = np.clip(self._map(src[:, fg]), -1.0, 1.0)
        return {"output": torch.from_numpy(out[None])}

    def _map(self, values: np.ndarray) -> np.ndarray:  # (C, n) -> (n,)
        raise NotImplementedError


class HistogramMatching(_Baseline):
    """Match the (first) source channel's foreground histogram to the training targets' pooled histogram."""

    name = "histogram_matching"

    def fit(self, cases) -> "HistogramMatching":
        self._check_training(cases)
        self.reference = _pooled(cases, lambda c: c[self.target_key].numpy()[0], self.mask_key, self.source_keys)
        return self

    def _map(self, values):
        from skimage.exposure import match_histograms

        return match_histograms(values[0].astype(np.float64), self.reference.astype(np.float64)).astype(np.float32)


class PolynomialRegression(_Baseline):
    """Voxel-wise least-squares polynomial of total degree `degree` in the source channels."""

    def __init__(self, source_keys, target_key: str, mask_key: str | None = "brain_mask", degree: int = 1):
        super().__init__(source_keys, target_key, mask_key)
        if degree < 1:
            raise ConfigError(f"regression degree must be >= 1, got {degree}")
        self.degree = int(degree)
        self.name = "linear_regression" if degree == 1 else f"poly{degree}_regression"

    def _features(self, values: np.ndarray) -> np.ndarray:
        cols = [np.ones(values.shape[1])]
        for d in range(1, self.degree + 1):
            for combo in combinations_with_replacement(range(values.shape[0]), d):
                cols.append(np.prod(values[list(combo)].astype(np.float64), axis=0))
        return np.stack(cols, axis=1)

    def fit(self, cases) -> "PolynomialRegression":
        self._check_training(cases)
        keys = self.source_keys + [self.target_key]
        pooled = _pooled(cases, lambda c: np.stack([c[k].numpy()[0] for k in keys]), self.mask_key, self.source_keys)
        x, y = pooled[:-1], pooled[-1].astype(np.float64)
        self.coef, *_ = np.linalg.lstsq(self._features(x), y, rcond=None)
        return self

    def _map(self, values):
        return (self._features(values) @ self.coef).astype(np.float32)
