"""Image-similarity metrics (PSNR, SSIM, MAE, MSE, NMSE, NCC), optionally restricted to a mask.

Every function takes one image as a numpy array or torch tensor (no batch axis), computes in float64 and
returns a Python float. Bad input (shape mismatch, empty mask, NaN/inf values, non-positive data range)
raises :class:`medgen.errors.MedgenError` with a message that says what to fix.

The small private helpers at the top (``_as_array``, ``_as_binary``, ...) are shared with
``segmentation.py`` and ``anomaly.py`` so that every metric checks its input the same way.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medgen.errors import MedgenError

__all__ = ["psnr", "ssim", "mae", "mse", "nmse", "ncc", "image_metrics"]

# Wang et al. 2004 (IEEE TIP 13(4)): 11x11 circular-symmetric Gaussian window, sigma 1.5, K1 0.01, K2 0.03.
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
# scikit-image truncates the Gaussian at 3.5 sigma: window = 2 * int(3.5 * 1.5 + 0.5) + 1 = 11 voxels.
SSIM_WIN_SIZE = 2 * int(3.5 * SSIM_SIGMA + 0.5) + 1


# --------------------------------------------------------------------------- shared input checks
def _as_array(x: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """Convert a numpy array / torch tensor (MetaTensor included) / sequence to a numpy array."""
    if x is None:
        raise MedgenError(f"{name} is None; expected an array or tensor")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch here
        t = x.detach().cpu()
        if getattr(t, "is_floating_point", lambda: False)():
            t = t.double()  # bfloat16 / float16 have no numpy equivalent
        x = t.numpy()
    try:
        arr = np.asarray(x)
        if dtype is not None:
            arr = arr.astype(dtype, copy=False)
    except (TypeError, ValueError) as exc:
        raise MedgenError(f"{name} cannot be converted to a numeric array: {exc}") from None
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    if arr.size and not np.isfinite(arr).all():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(np.isinf(arr).sum())
        raise MedgenError(f"{name} contains {n_nan} NaN and {n_inf} infinite values; metrics need finite input")


def _check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise MedgenError(
            f"shape mismatch: {name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}"
        )
    if a.size == 0:
        raise MedgenError(f"{name_a} and {name_b} are empty (shape {tuple(a.shape)})")


def _as_binary(x: Any, name: str) -> np.ndarray:
    """A boolean mask; values must be 0/1 (or bool) so probabilities / label maps are not silently binarised."""
    arr = _as_array(x, name, dtype=None)
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.number):
        raise MedgenError(f"{name} must be numeric or boolean, got dtype {arr.dtype}")
    if arr.size and np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise MedgenError(f"{name} contains NaN or infinite values; a mask must be 0/1")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        vals = np.unique(arr[bad])[:5].tolist()
        raise MedgenError(
            f"{name} must be binary (0/1 or bool) but contains other values, e.g. {vals}; "
            "threshold probabilities or select one label first (e.g. mask == 1)"
        )
    return arr.astype(bool)


def _pair(pred: Any, target: Any, mask: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Checked float64 pred/target and an optional non-empty boolean mask of the same shape."""
    p = _as_array(pred, "pred")
    t = _as_array(target, "target")
    _check_same_shape(p, t, "pred", "target")
    _check_finite(p, "pred")
    _check_finite(t, "target")
    m = None
    if mask is not None:
        m = _as_binary(mask, "mask")
        _check_same_shape(m, t, "mask", "target")
        if not m.any():
            raise MedgenError("mask is empty (no foreground voxels); the metric is undefined inside an empty mask")
    return p, t, m


def _select(p: np.ndarray, t: np.ndarray, m: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    return (p, t) if m is None else (p[m], t[m])


def _check_data_range(data_range: Any) -> float:
    try:
        dr = float(data_range)
    except (TypeError, ValueError):
        raise MedgenError(f"data_range must be a positive number, got {data_range!r}") from None
    if not math.isfinite(dr) or dr <= 0:
        raise MedgenError(f"data_range must be a positive finite number, got {data_range!r}")
    return dr


# --------------------------------------------------------------------------- metrics
def mse(pred: Any, target: Any, mask: Any = None) -> float:
    """Mean squared error over all voxels, or over the voxels where ``mask`` is true."""
    p, t = _select(*_pair(pred, target, mask))
    return float(np.mean((p - t) ** 2))


def mae(pred: Any, target: Any, mask: Any = None) -> float:
    """Mean absolute error (in the images' units, e.g. HU for CT) over all voxels or inside ``mask``."""
    p, t = _select(*_pair(pred, target, mask))
    return float(np.mean(np.abs(p - t)))


def nmse(pred: Any, target: Any, mask: Any = None) -> float:
    """Normalised MSE: sum((pred - target)^2) / sum(target^2) inside the mask (0 is perfect).

    Raises when the target has zero energy inside the mask (the ratio is undefined).
    """
    p, t = _select(*_pair(pred, target, mask))
    den = float(np.sum(t**2))
    if den == 0.0:
        raise MedgenError("nmse is undefined: target is all zeros inside the mask (sum(target^2) == 0)")
    return float(np.sum((p - t) ** 2) / den)


def ncc(pred: Any, target: Any, mask: Any = None) -> float:
    """Normalised cross-correlation = Pearson correlation of the voxel values inside the mask.

    Returns NaN (not an error) when either image is constant inside the mask, because a constant
    prediction is a legitimate (bad) model output; reports count such NaNs as non-finite.
    """
    p, t = _select(*_pair(pred, target, mask))
    pc = p - p.mean()
    tc = t - t.mean()
    den = math.sqrt(float(np.sum(pc**2)) * float(np.sum(tc**2)))
    if den == 0.0:
        return float("nan")
    return float(np.clip(np.sum(pc * tc) / den, -1.0, 1.0))


def psnr(pred: Any, target: Any, data_range: float, mask: Any = None) -> float:
    """Peak signal-to-noise ratio in dB: 10 * log10(data_range^2 / MSE), MSE over the mask.

    ``data_range`` is required on purpose: the maximum of each target changes from case to case (one hot
    voxel in a PET scan moves it), so PSNR computed with ``target.max()`` is not comparable between cases,
    methods or papers. Pass the fixed range of the intensity scale (e.g. 1.0 for [0, 1] images, the HU
    window width for CT) and report it. Returns ``inf`` when pred equals target inside the mask.
    """
    dr = _check_data_range(data_range)
    err = mse(pred, target, mask)
    if err == 0.0:
        return float("inf")
    return float(10.0 * np.log10(dr**2 / err))


def _ssim_map(p: np.ndarray, t: np.ndarray, dr: float, channel_axis: int | None) -> np.ndarray:
    from skimage.metrics import structural_similarity

    _, smap = structural_similarity(
        p,
        t,
        data_range=dr,
        channel_axis=channel_axis,
        gaussian_weights=True,
        sigma=SSIM_SIGMA,
        use_sample_covariance=False,
        K1=SSIM_K1,
        K2=SSIM_K2,
        full=True,
    )
    return np.asarray(smap, dtype=np.float64)


def ssim(
    pred: Any, target: Any, data_range: float, mask: Any = None, spatial_dims: int | None = None
) -> float:
    """Structural similarity (Wang et al. 2004) for 2D or 3D images, averaged inside ``mask``.

    Computed by scikit-image's ``structural_similarity(full=True)`` with the paper's settings: Gaussian
    window with sigma 1.5 (11 voxels wide), K1 = 0.01, K2 = 0.03, population covariance. The SSIM map is
    then averaged over the mask. Like scikit-image's own mean, voxels within 5 of the image border
    (half a window, where the local statistics are made up by reflection) are left out, so
    ``mask=None`` equals ``skimage.metrics.structural_similarity`` and an all-true mask gives the same value.

    ``spatial_dims`` (2 or 3) defaults to ``pred.ndim``. If ``pred.ndim == spatial_dims + 1`` the first
    axis is a channel axis (channel-first, as elsewhere in medgen): SSIM is computed per channel and
    averaged, and ``mask`` may have the spatial shape or the full shape. Every spatial size must be >= 11.
    """
    dr = _check_data_range(data_range)
    p = _as_array(pred, "pred")
    t = _as_array(target, "target")
    _check_same_shape(p, t, "pred", "target")
    _check_finite(p, "pred")
    _check_finite(t, "target")
    sd = p.ndim if spatial_dims is None else int(spatial_dims)
    if sd not in (2, 3):
        raise MedgenError(
            f"ssim supports 2D and 3D images; got spatial_dims={sd} for shape {tuple(p.shape)} "
            "(pass spatial_dims, and remove any batch axis)"
        )
    if p.ndim not in (sd, sd + 1):
        raise MedgenError(
            f"ssim expects shape (*spatial) or (C, *spatial) with {sd} spatial dims, got {tuple(p.shape)}"
        )
    channel_axis = 0 if p.ndim == sd + 1 else None
    spatial = p.shape[-sd:]
    if min(spatial) < SSIM_WIN_SIZE:
        raise MedgenError(
            f"ssim needs every spatial size >= {SSIM_WIN_SIZE} (Gaussian window, sigma {SSIM_SIGMA}); "
            f"got spatial shape {tuple(spatial)}"
        )
    smap = _ssim_map(p, t, dr, channel_axis)

    pad = (SSIM_WIN_SIZE - 1) // 2
    interior = np.zeros(spatial, dtype=bool)
    interior[tuple(slice(pad, s - pad) for s in spatial)] = True
    if channel_axis is not None:
        interior = np.broadcast_to(interior, p.shape)
    if mask is None:
        sel = interior
    else:
        m = _as_binary(mask, "mask")
        if channel_axis is not None and m.shape == tuple(spatial):
            m = np.broadcast_to(m, p.shape)
        if m.shape != p.shape:
            raise MedgenError(
                f"shape mismatch: mask has shape {tuple(m.shape)} but the images have shape {tuple(p.shape)}"
            )
        if not m.any():
            raise MedgenError("mask is empty (no foreground voxels); ssim is undefined inside an empty mask")
        sel = m & interior
        if not sel.any():
            raise MedgenError(
                f"mask lies entirely within {pad} voxels of the image border, where ssim is not evaluated"
            )
    return float(smap[sel].mean())


def image_metrics(pred: Any, target: Any, data_range: float, mask: Any = None) -> dict[str, float]:
    """All image metrics at once: ``{psnr, ssim, mae, mse, nmse, ncc}``.

    SSIM is included when every spatial size is >= 11 and the image is 2D or 3D, otherwise it is NaN.
    NMSE is NaN (instead of an error) when the target is zero inside the mask, so one degenerate case
    does not stop a whole evaluation; reports count NaNs as non-finite.
    """
    p, t, m = _pair(pred, target, mask)
    dr = _check_data_range(data_range)
    out: dict[str, float] = {"psnr": psnr(p, t, dr, m)}
    if p.ndim in (2, 3) and min(p.shape) >= SSIM_WIN_SIZE:
        try:
            out["ssim"] = ssim(p, t, dr, m)
        except MedgenError:  # e.g. mask only near the border
            out["ssim"] = float("nan")
    else:
        out["ssim"] = float("nan")
    out["mae"] = mae(p, t, m)
    out["mse"] = mse(p, t, m)
    try:
        out["nmse"] = nmse(p, t, m)
    except MedgenError:
        out["nmse"] = float("nan")
    out["ncc"] = ncc(p, t, m)
    return out
