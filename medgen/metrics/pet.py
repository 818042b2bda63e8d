"""PET metrics in the input's units (Bq/mL or SUV): the image metrics inside the head mask with the range
of the reference inside it, and the mean bias (%) per labelled tissue region, as Wang et al. 2018 report
regional uptake. Plain numpy arrays in, so the pipeline, its baselines and the benchmark score alike.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from medgen.errors import MedgenError

__all__ = ["data_range_in_mask", "region_bias", "case_metrics"]


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
                 labels: np.ndarray | None = None, regions: Mapping[str, int] | None = None,
                 data_range: float | None = None) -> dict[str, float]:
    """PSNR, SSIM and NMSE inside the mask (plus MAE / MSE / NCC) and regional bias, in source units.

    data_range: the dataset's fixed PSNR / SSIM range (what medgen's evaluation uses); None takes this case's
    own range inside the mask (`data_range_in_mask`), which only a comparison within one case may do."""
    from medgen.metrics import image_metrics

    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if mask is not None and not mask.any():
        raise MedgenError("the metric mask is empty: PSNR / SSIM / NMSE inside it are undefined")
    dr = data_range if data_range is not None else data_range_in_mask(target, mask)
    values = image_metrics(pred, target, data_range=dr, mask=mask)
    values.update(region_bias(pred, target, labels, regions or {}))
    return values
