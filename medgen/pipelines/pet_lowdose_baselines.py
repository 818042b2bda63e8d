"""Baselines and region metrics of `pet_lowdose` (Wang et al. 2018 compare against the low-dose input and
classical denoisers): Gaussian smoothing with sigma chosen on the validation split, scikit-image non-local
means with its strength chosen the same way, and regional mean bias (%) in tissue label regions.

Everything here works on plain numpy arrays in the input's units (Bq/mL or SUV), so the benchmark, the
pipeline's `evaluate_case` and the tests compute identical numbers.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from medgen.errors import MedgenError

# Candidate sigmas (voxels) for the Gaussian baseline: from barely any smoothing to a strong 3-voxel blur.
GAUSSIAN_SIGMAS = (0.25, 0.35, 0.45, 0.55, 0.65, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0)
# Candidate NLM strengths, as multiples of the noise sigma scikit-image estimates (its docs suggest ~0.8).
NLM_H_FACTORS = (0.4, 0.6, 0.8, 1.0)


def data_range_in_mask(target: np.ndarray, mask: np.ndarray | None) -> float:
    """PSNR / SSIM data range: the target's range inside the metric mask (fixed per case for all methods)."""
    values = target[mask] if mask is not None else target
    return float(values.max() - values.min()) or 1.0


def region_bias(pred: np.ndarray, target: np.ndarray, labels: np.ndarray | None,
                regions: Mapping[str, int]) -> dict[str, float]:
    """Mean bias in % per labelled region: 100 * (mean(pred) - mean(target)) / mean(target) over the region.

    A region missing from the label map (or with zero target mean) gives NaN, not an error, so one odd case
    does not stop a whole evaluation.
    """
    out: dict[str, float] = {}
    if labels is None:
        return out
    for name, label in regions.items():
        sel = labels == int(label)
        ref = float(target[sel].mean()) if sel.any() else 0.0
        out[f"bias_{name}_pct"] = 100.0 * (float(pred[sel].mean()) - ref) / ref if ref else float("nan")
    return out


def case_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None,
                 labels: np.ndarray | None = None, regions: Mapping[str, int] | None = None) -> dict[str, float]:
    """PSNR, SSIM and NMSE inside the mask (plus MAE / MSE / NCC) and regional bias, in source units."""
    from medgen.metrics import image_metrics

    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if mask is not None and not mask.any():
        raise MedgenError("the metric mask is empty: PSNR / SSIM / NMSE inside it are undefined")
    values = image_metrics(pred, target, data_range=data_range_in_mask(target, mask), mask=mask)
    values.update(region_bias(pred, target, labels, regions or {}))
    return values


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


def _mean_psnr(method, cases: Sequence[dict]) -> float:
    scores = []
    for c in cases:
        pred = method(c["low_dose"])
        scores.append(case_metrics(pred, c["full_dose"], c.get("mask"))["psnr"])
    return float(np.mean(scores))


def choose_gaussian_sigma(validation: Sequence[dict], sigmas: Sequence[float] = GAUSSIAN_SIGMAS) -> tuple[float, dict]:
    """The sigma (voxels) with the best mean PSNR on validation cases ({"low_dose", "full_dose", "mask"} arrays
    in source units). Returns (sigma, {sigma: mean PSNR})."""
    if not validation:
        raise MedgenError("choosing the Gaussian sigma needs at least one validation case with a full_dose image")
    scores = {float(s): _mean_psnr(lambda x, s=s: gaussian_smooth(x, s), validation) for s in sigmas}
    return max(scores, key=scores.get), scores


def choose_nlm_h(validation: Sequence[dict], factors: Sequence[float] = NLM_H_FACTORS) -> tuple[float, dict]:
    """The NLM strength factor with the best mean PSNR on validation cases (see `choose_gaussian_sigma`)."""
    if not validation:
        raise MedgenError("choosing the NLM strength needs at least one validation case with a full_dose image")
    scores = {float(f): _mean_psnr(lambda x, f=f: nlm_denoise(x, f), validation) for f in factors}
    return max(scores, key=scores.get), scores
