"""Evaluation metrics: image similarity, segmentation, anomaly detection, and per-case reports.

Conventions (data range, masks, empty masks, thresholds, std) are in docs/metrics.md.
"""

from __future__ import annotations

from medgen.metrics.anomaly import (
    compare_roc_auc,
    pixel_auc,
    pr_auc,
    roc_auc,
    roc_auc_ci,
    sensitivity_specificity,
    threshold_at_specificity,
)
from medgen.metrics.image import image_metrics, mae, mse, ncc, nmse, psnr, ssim
from medgen.metrics.tables import format_table, summarise, write_report
from medgen.metrics.segmentation import dice, hd95, lesion_f1, segmentation_metrics, volume_error

__all__ = [
    "psnr", "ssim", "mae", "mse", "nmse", "ncc", "image_metrics",
    "dice", "hd95", "lesion_f1", "volume_error", "segmentation_metrics",
    "roc_auc", "roc_auc_ci", "compare_roc_auc", "pr_auc", "threshold_at_specificity", "sensitivity_specificity",
    "pixel_auc",
    "write_report", "summarise", "format_table",
]
