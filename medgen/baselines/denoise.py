"""Classical denoising baselines for low-dose PET (Wang et al. 2018 compare against them): Gaussian smoothing
with its sigma chosen on the validation split, and scikit-image non-local means with its strength chosen the
same way. They work on numpy arrays in the input's units, so every method is scored by the same metric code
(`medgen.metrics.pet`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from medgen.errors import MedgenError
from medgen.metrics.pet import case_metrics

# Candidate sigmas (voxels) for the Gaussian baseline: from barely any smoothing to a strong 3-voxel blur.
GAUSSIAN_SIGMAS = (0.25, 0.35, 0.45, 0.55, 0.65, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0)
# Candidate NLM strengths, as multiples of the noise sigma scikit-image estimates (its docs suggest ~0.8).
NLM_H_FACTORS = (0.4, 0.6, 0.8, 1.0)


def gaussian_smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.asarray(image, dtype=np.float32), sigma=float(sigma), mode="nearest")


def noise_sigma(x: np.ndarray) -> float:
    """Robust noise sd: MAD of neighbour differences along every axis inside the foreground, / sqrt(2).

    (scikit-image's estimate_sigma needs PyWavelets, which medgen does not depend on.)"""
    fg = x > 0.1 * float(x.max()) if x.max() > 0 else np.ones(x.shape, bool)
    diffs = []
    for ax in range(x.ndim):
        d = np.diff(x, axis=ax)
        sel = np.minimum(np.delete(fg, 0, axis=ax), np.delete(fg, -1, axis=ax))
        diffs.append(d[sel])
    d = np.concatenate(diffs) if diffs else np.zeros(1)
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0)) or 1e-6


def nlm_denoise(image: np.ndarray, h_factor: float = 0.8, patch_size: int = 3, patch_distance: int = 4,
                scale: float | None = None) -> np.ndarray:
    """scikit-image non-local means on a 3D volume; h = h_factor * estimated noise sigma.

    The volume is divided by `scale` (default: its 99.5th percentile of positive voxels) before filtering and
    multiplied back after, so h does not depend on the units.
    """
    from skimage.restoration import denoise_nl_means

    img = np.asarray(image, dtype=np.float64)
    if scale is None:
        pos = img[img > 0]
        scale = float(np.percentile(pos, 99.5)) if pos.size else 1.0
    x = img / scale
    sigma = noise_sigma(x)
    out = denoise_nl_means(x, h=h_factor * sigma, sigma=sigma, patch_size=patch_size,
                           patch_distance=patch_distance, fast_mode=True, channel_axis=None)
    return (out * scale).astype(np.float32)


def _mean_psnr(method, cases: Sequence[dict], data_range: float | None) -> float:
    scores = []
    for c in cases:
        pred = method(c["low_dose"])
        scores.append(case_metrics(pred, c["full_dose"], c.get("mask"), data_range=data_range)["psnr"])
    return float(np.mean(scores))


def choose_gaussian_sigma(validation: Sequence[dict], sigmas: Sequence[float] = GAUSSIAN_SIGMAS,
                          data_range: float | None = None) -> tuple[float, dict]:
    """The sigma (voxels) with the best mean PSNR on validation cases ({"low_dose", "full_dose", "mask"} arrays
    in source units; PSNR with the dataset's `data_range`). Returns (sigma, {sigma: mean PSNR})."""
    if not validation:
        raise MedgenError("choosing the Gaussian sigma needs at least one validation case with a full_dose image")
    scores = {float(s): _mean_psnr(lambda x, s=s: gaussian_smooth(x, s), validation, data_range) for s in sigmas}
    return max(scores, key=scores.get), scores


def choose_nlm_h(validation: Sequence[dict], factors: Sequence[float] = NLM_H_FACTORS,
                 data_range: float | None = None) -> tuple[float, dict]:
    """The NLM strength factor with the best mean PSNR on validation cases (see `choose_gaussian_sigma`)."""
    if not validation:
        raise MedgenError("choosing the NLM strength needs at least one validation case with a full_dose image")
    scores = {float(f): _mean_psnr(lambda x, f=f: nlm_denoise(x, f), validation, data_range) for f in factors}
    return max(scores, key=scores.get), scores
