"""Anomaly-detection metrics: ROC AUC, PR AUC, a threshold from normal scores, sensitivity/specificity.

Conventions used throughout: ``labels`` are 1 for abnormal (the positive class) and 0 for normal; a higher
score means more abnormal; a case is called abnormal when ``score > threshold`` (strictly greater) and
normal when ``score <= threshold``. AUCs come from scikit-learn.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from medgen.errors import MedgenError
from medgen.metrics.image import _as_array, _as_binary, _check_finite, _check_same_shape

__all__ = ["roc_auc", "pr_auc", "threshold_at_specificity", "sensitivity_specificity", "pixel_auc"]


def _scores_labels(scores: Any, labels: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    s = _as_array(scores, "scores").ravel()
    y = _as_binary(labels, "labels").ravel()
    _check_same_shape(s, y, "scores", "labels")
    _check_finite(s, "scores")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        only = "abnormal (1)" if n_pos else "normal (0)"
        raise MedgenError(
            f"{what} needs both normal (0) and abnormal (1) labels, but all {y.size} labels are {only}"
        )
    return s, y


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``); 0.5 is chance, ties count half."""
    from sklearn.metrics import roc_auc_score

    s, y = _scores_labels(scores, labels, "roc_auc")
    return float(roc_auc_score(y, s))


def pr_auc(scores: Any, labels: Any) -> float:
    """Area under the precision-recall curve as average precision (``sklearn.metrics.average_precision_score``).

    Average precision is the step-wise sum over thresholds, not a trapezoid; chance level equals the
    fraction of abnormal cases, so always report it next to the prevalence.
    """
    from sklearn.metrics import average_precision_score

    s, y = _scores_labels(scores, labels, "pr_auc")
    return float(average_precision_score(y, s))


def threshold_at_specificity(normal_scores: Any, specificity: float = 0.95) -> float:
    """The smallest threshold t, among the given normal scores, with fraction(normal_scores <= t) >= specificity.

    With the rule "abnormal iff score > t", at least ``specificity`` of these normal cases are then called
    normal. Concretely: sort the n scores ascending and take the k-th smallest with
    k = ceil(specificity * n) (1-based). Ties can make the achieved specificity higher than requested.
    Choose it on validation normals and apply it unchanged to the test set.
    """
    s = _as_array(normal_scores, "normal_scores").ravel()
    if s.size == 0:
        raise MedgenError("threshold_at_specificity needs at least one normal score, got none")
    _check_finite(s, "normal_scores")
    spec = float(specificity)
    if not (0.0 < spec <= 1.0):
        raise MedgenError(f"specificity must be in (0, 1], got {specificity!r}")
    k = math.ceil(spec * s.size - 1e-9)  # tolerance: 0.7 * 10 is 7.000000000000001 in floating point
    k = min(max(k, 1), s.size)
    return float(np.sort(s)[k - 1])


def sensitivity_specificity(scores: Any, labels: Any, threshold: float) -> dict[str, float]:
    """Sensitivity (true-positive rate) and specificity (true-negative rate) at ``threshold``.

    A case is predicted abnormal iff ``score > threshold``. Returns ``{sensitivity, specificity, tp, fn,
    tn, fp}``; both classes must be present.
    """
    s, y = _scores_labels(scores, labels, "sensitivity_specificity")
    thr = float(threshold)
    if math.isnan(thr):
        raise MedgenError("threshold is NaN")
    called = s > thr
    tp = int(np.sum(called & y))
    fn = int(np.sum(~called & y))
    tn = int(np.sum(~called & ~y))
    fp = int(np.sum(called & ~y))
    return {
        "sensitivity": tp / (tp + fn),
        "specificity": tn / (tn + fp),
        "tp": tp,
        "fn": fn,
        "tn": tn,
        "fp": fp,
    }


def pixel_auc(maps: Any | Sequence[Any], masks: Any | Sequence[Any]) -> float:
    """Pixel-level ROC AUC: every pixel of every anomaly map is one sample, its mask value the label.

    ``maps`` and ``masks`` are either two arrays of the same shape (e.g. a (N, H, W) stack) or two
    sequences of per-image arrays (sizes may differ between images, but each map must match its mask).
    """
    if isinstance(maps, (list, tuple)) or isinstance(masks, (list, tuple)):
        if not isinstance(maps, (list, tuple)) or not isinstance(masks, (list, tuple)):
            raise MedgenError("pixel_auc: pass maps and masks both as arrays or both as lists")
        if len(maps) != len(masks):
            raise MedgenError(f"pixel_auc: {len(maps)} maps but {len(masks)} masks")
        if not maps:
            raise MedgenError("pixel_auc: no maps given")
        s_parts, y_parts = [], []
        for i, (a, m) in enumerate(zip(maps, masks)):
            a_ = _as_array(a, f"maps[{i}]")
            m_ = _as_binary(m, f"masks[{i}]")
            _check_same_shape(a_, m_, f"maps[{i}]", f"masks[{i}]")
            s_parts.append(a_.ravel())
            y_parts.append(m_.ravel())
        s, y = np.concatenate(s_parts), np.concatenate(y_parts)
    else:
        s = _as_array(maps, "maps")
        y = _as_binary(masks, "masks")
        _check_same_shape(s, y, "maps", "masks")
    from sklearn.metrics import roc_auc_score

    s, y = _scores_labels(s, y, "pixel_auc")
    return float(roc_auc_score(y, s))
