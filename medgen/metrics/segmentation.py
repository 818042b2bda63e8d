"""Binary segmentation metrics: Dice, HD95, lesion-wise detection F1 and volume error.

Inputs are one binary mask each (numpy array or torch tensor, values 0/1 or bool, 2D or 3D, no batch or
channel axis). Spacing is the voxel size in mm per axis, in array axis order (for NIfTI: nibabel's
``img.header.get_zooms()[:3]``); ``None`` means 1 mm isotropic, so distances are then in voxels.

Empty masks are common in lesion data (a scan without lesions), so every metric defines them instead of
returning NaN; the conventions are listed in each docstring and in docs/metrics.md.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from medgen.errors import MedgenError
from medgen.metrics.image import _as_binary, _check_same_shape

__all__ = ["dice", "hd95", "lesion_f1", "volume_error", "segmentation_metrics"]


def _masks(pred: Any, ref: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _as_binary(pred, "pred")
    r = _as_binary(ref, "ref")
    _check_same_shape(p, r, "pred", "ref")
    return p, r


def _spatial(p: np.ndarray, what: str) -> None:
    if p.ndim not in (2, 3):
        raise MedgenError(
            f"{what} expects a 2D or 3D mask without batch/channel axes, got shape {tuple(p.shape)} "
            "(squeeze a leading channel axis of size 1 first)"
        )


def _spacing(spacing: Sequence[float] | float | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    if np.isscalar(spacing):
        sp = (float(spacing),) * ndim
    else:
        sp = tuple(float(s) for s in np.asarray(spacing, dtype=np.float64).ravel())
    if len(sp) != ndim:
        raise MedgenError(f"spacing {tuple(sp)} has {len(sp)} values but the mask has {ndim} dimensions")
    if not all(math.isfinite(s) and s > 0 for s in sp):
        raise MedgenError(f"spacing must be positive finite numbers (mm per voxel), got {tuple(sp)}")
    return sp


def dice(pred: Any, ref: Any) -> float:
    """Dice = 2 |P & R| / (|P| + |R|) for binary masks (any shape).

    Convention: both masks empty -> 1.0 (the prediction agrees perfectly: no lesion, none predicted);
    exactly one empty -> 0.0. MONAI's default (``ignore_empty=True``) returns NaN when the reference is empty
    (which then drops the case from a mean); medgen keeps such cases and scores them, which is MONAI's
    ``compute_dice(..., ignore_empty=False)``, called here (it counts in float32: 7 significant digits).
    """
    import torch
    from monai.metrics import compute_dice

    p, r = _masks(pred, ref)

    def batch(mask: np.ndarray) -> torch.Tensor:  # MONAI's (batch, channel, *spatial) layout
        return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]

    return float(compute_dice(batch(p), batch(r), include_background=True, ignore_empty=False))


def _surface(m: np.ndarray) -> np.ndarray:
    """Boundary voxels: foreground voxels with a face-neighbour outside (voxels on the image edge count)."""
    return m & ~ndimage.binary_erosion(m, border_value=0)


def hd95(pred: Any, ref: Any, spacing: Sequence[float] | float | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance between the mask surfaces, in mm (voxels if no spacing).

    Surfaces are the foreground voxels with a face-neighbour (4-/6-connectivity) in the background. For each
    surface voxel of one mask the Euclidean distance (with ``spacing``) to the nearest surface voxel of the
    other is computed with scipy's exact distance transform; HD95 = max(P95(pred->ref), P95(ref->pred)),
    percentiles with linear interpolation. This matches MONAI's ``compute_hausdorff_distance(...,
    percentile=95)`` (tested), without its one-hot/batch layout.

    Convention: both masks empty -> 0.0; exactly one empty -> ``inf`` (no finite distance exists; reports
    count it as non-finite). MONAI returns NaN/inf with a warning instead.
    """
    p, r = _masks(pred, ref)
    _spatial(p, "hd95")
    sp = _spacing(spacing, p.ndim)
    has_p, has_r = bool(p.any()), bool(r.any())
    if not has_p and not has_r:
        return 0.0
    if not (has_p and has_r):
        return float("inf")
    # crop to the union's bounding box (+1 voxel) so the distance transforms stay small
    idx = np.argwhere(p | r)
    lo = np.maximum(idx.min(axis=0) - 1, 0)
    hi = np.minimum(idx.max(axis=0) + 2, p.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    # erode in the full array so voxels on the true image edge stay surface, then crop
    sp_, sr_ = _surface(p)[box], _surface(r)[box]
    d_to_r = ndimage.distance_transform_edt(~sr_, sampling=sp)
    d_to_p = ndimage.distance_transform_edt(~sp_, sampling=sp)
    return float(max(np.percentile(d_to_r[sp_], 95), np.percentile(d_to_p[sr_], 95)))


def _components(m: np.ndarray) -> tuple[np.ndarray, int]:
    structure = ndimage.generate_binary_structure(m.ndim, m.ndim)  # 8-conn in 2D, 26-conn in 3D
    labels, n = ndimage.label(m, structure=structure)
    return labels, int(n)


def lesion_f1(pred: Any, ref: Any, min_overlap: int = 1) -> dict[str, float]:
    """Lesion-wise detection precision / recall / F1 from connected components.

    Components use full connectivity (26 in 3D, 8 in 2D). A reference lesion is detected when at least
    ``min_overlap`` of its voxels are predicted foreground (default 1: any overlapping voxel). A predicted
    component is a true positive when at least ``min_overlap`` of its voxels lie in the reference mask.
    recall = detected reference lesions / reference lesions; precision = true-positive predicted components
    / predicted components; F1 = 2PR / (P + R).

    Empty conventions: no predicted components -> precision 1.0 (no false positives were made); no
    reference lesions -> recall 1.0 (nothing could be missed); F1 is 0.0 when P + R == 0. So both empty
    gives 1/1/1, one empty gives F1 0. For a dataset, prefer pooling the returned counts over averaging
    per-case precision.

    Returns ``{lesion_precision, lesion_recall, lesion_f1, n_ref_lesions, n_pred_lesions,
    n_detected_lesions, n_tp_pred_lesions, n_fp_lesions, n_fn_lesions}``.
    """
    if int(min_overlap) != min_overlap or min_overlap < 1:
        raise MedgenError(f"min_overlap must be a positive whole number of voxels, got {min_overlap!r}")
    p, r = _masks(pred, ref)
    _spatial(p, "lesion_f1")
    lab_r, n_r = _components(r)
    lab_p, n_p = _components(p)
    # overlap voxel counts per component (index 0 = background, dropped)
    hit_r = np.bincount(lab_r[p], minlength=n_r + 1)[1:] >= min_overlap
    hit_p = np.bincount(lab_p[r], minlength=n_p + 1)[1:] >= min_overlap
    detected = int(hit_r.sum())
    tp_pred = int(hit_p.sum())
    precision = 1.0 if n_p == 0 else tp_pred / n_p
    recall = 1.0 if n_r == 0 else detected / n_r
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {
        "lesion_precision": float(precision),
        "lesion_recall": float(recall),
        "lesion_f1": float(f1),
        "n_ref_lesions": n_r,
        "n_pred_lesions": n_p,
        "n_detected_lesions": detected,
        "n_tp_pred_lesions": tp_pred,
        "n_fp_lesions": n_p - tp_pred,
        "n_fn_lesions": n_r - detected,
    }


def volume_error(pred: Any, ref: Any, spacing: Sequence[float] | float | None) -> dict[str, float]:
    """Volumes and their error in millilitres (spacing in mm; ``None`` means 1 mm isotropic).

    Returns ``{pred_volume_ml, ref_volume_ml, volume_diff_ml (pred - ref, signed), abs_volume_error_ml,
    rel_volume_error (|pred - ref| / ref as a fraction)}``. rel is 0.0 when both are empty and ``inf``
    when only the reference is empty.
    """
    p, r = _masks(pred, ref)
    sp = _spacing(spacing, p.ndim)
    voxel_ml = float(np.prod(sp)) / 1000.0  # 1 ml = 1000 mm^3
    vp = float(p.sum()) * voxel_ml
    vr = float(r.sum()) * voxel_ml
    diff = vp - vr
    if vr > 0:
        rel = abs(diff) / vr
    else:
        rel = 0.0 if vp == 0 else float("inf")
    return {
        "pred_volume_ml": vp,
        "ref_volume_ml": vr,
        "volume_diff_ml": diff,
        "abs_volume_error_ml": abs(diff),
        "rel_volume_error": rel,
    }


def segmentation_metrics(
    pred: Any, ref: Any, spacing: Sequence[float] | float | None = None
) -> dict[str, float]:
    """Dice, HD95, lesion-wise detection (min_overlap 1) and volume error in one flat dict."""
    p, r = _masks(pred, ref)
    _spatial(p, "segmentation_metrics")
    out: dict[str, float] = {"dice": dice(p, r), "hd95": hd95(p, r, spacing)}
    out.update(lesion_f1(p, r))
    out.update(volume_error(p, r, spacing))
    return out
