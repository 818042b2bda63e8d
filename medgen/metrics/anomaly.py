"""Anomaly-detection metrics: ROC AUC, PR AUC, a threshold from normal scores, sensitivity/specificity.

Conventions used throughout: ``labels`` are 1 for abnormal (the positive class) and 0 for normal; a higher
score means more abnormal; a case is called abnormal when ``score > threshold`` (strictly greater) and
normal when ``score <= threshold``. AUCs come from scikit-learn; their confidence intervals and the paired
comparison of two scorers use DeLong's variance (DeLong, DeLong & Clarke-Pearson, Biometrics 1988), which
needs no resampling and so gives the same numbers on every run.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from medgen.errors import MedgenError
from medgen.metrics.image import _as_array, _as_binary, _check_finite, _check_same_shape

__all__ = ["roc_auc", "roc_auc_ci", "compare_roc_auc", "pr_auc", "threshold_at_specificity", "sensitivity_specificity",
           "pixel_auc"]


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


def _delong_components(score_sets: list[np.ndarray], y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per scorer: the AUC, and DeLong's placement values of each abnormal case (the fraction of normal cases it
    outranks) and of each normal case (the fraction of abnormal cases that outrank it), ties counting half."""
    aucs, v_abn, v_nor = [], [], []
    for s in score_sets:
        pos, neg = s[y], s[~y]
        diff = pos[:, None] - neg[None, :]
        psi = (diff > 0) + 0.5 * (diff == 0)  # m x n kernel; m, n are case counts, so this stays small
        aucs.append(psi.mean())
        v_abn.append(psi.mean(axis=1))
        v_nor.append(psi.mean(axis=0))
    return np.array(aucs), np.array(v_abn), np.array(v_nor)


def _delong_covariance(v_abn: np.ndarray, v_nor: np.ndarray) -> np.ndarray:
    """Covariance of the scorers' AUC estimates: S10 / m + S01 / n (k x k for k scorers)."""
    m, n = v_abn.shape[1], v_nor.shape[1]
    if m < 2 or n < 2:
        raise MedgenError(f"an AUC confidence interval needs at least 2 normal and 2 abnormal cases, got {n} and {m}")
    return np.atleast_2d(np.cov(v_abn)) / m + np.atleast_2d(np.cov(v_nor)) / n


def _normal_quantile(level: float) -> float:
    if not (0.0 < float(level) < 1.0):
        raise MedgenError(f"confidence level must be in (0, 1), got {level!r}")
    from scipy.stats import norm

    return float(norm.ppf(0.5 + float(level) / 2.0))


def roc_auc_ci(scores: Any, labels: Any, level: float = 0.95) -> dict[str, float]:
    """ROC AUC with its DeLong standard error and a normal-approximation confidence interval clipped to [0, 1].

    Returns ``{auc, se, low, high, level}``. With few cases (10 normal and 10 abnormal scans give an SE near
    0.1 at AUC 0.8) the interval is wide: report it next to the AUC before ranking methods. At an AUC of exactly
    0 or 1 the DeLong SE is 0 and the interval collapses to that point: it then says nothing about precision.
    """
    s, y = _scores_labels(scores, labels, "roc_auc_ci")
    auc, v_abn, v_nor = _delong_components([s], y.astype(bool))
    se = math.sqrt(max(float(_delong_covariance(v_abn, v_nor)[0, 0]), 0.0))
    z = _normal_quantile(level)
    a = float(auc[0])
    return {"auc": a, "se": se, "low": max(0.0, a - z * se), "high": min(1.0, a + z * se), "level": float(level)}


def compare_roc_auc(scores_a: Any, scores_b: Any, labels: Any, level: float = 0.95) -> dict[str, float]:
    """Paired comparison of two scorers on the same cases (DeLong's test for correlated ROC curves).

    Returns ``{auc_a, auc_b, difference (a - b), se, low, high, z, p}``: a two-sided p-value for "equal AUCs"
    and a confidence interval of the difference. Pairing matters: two scorers of the same scans are
    correlated, so their AUC difference is usually known more precisely than either AUC alone.
    """
    _check_same_shape(_as_array(scores_a, "scores_a").ravel(), _as_array(scores_b, "scores_b").ravel(),
                      "scores_a", "scores_b")
    a, y = _scores_labels(scores_a, labels, "compare_roc_auc")
    b, _ = _scores_labels(scores_b, labels, "compare_roc_auc")
    aucs, v_abn, v_nor = _delong_components([a, b], y.astype(bool))
    cov = _delong_covariance(v_abn, v_nor)
    diff = float(aucs[0] - aucs[1])
    se = math.sqrt(max(float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1]), 0.0))
    zq = _normal_quantile(level)
    if se > 0:
        from scipy.stats import norm

        z = diff / se
        p = float(2.0 * norm.sf(abs(z)))
    elif diff == 0:  # e.g. both scorers separate the classes perfectly
        z, p = 0.0, 1.0
    else:  # every case ranked the same way by both, with different AUCs: no sampling spread to test against
        z, p = math.copysign(math.inf, diff), 0.0
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "difference": diff, "se": se,
            "low": diff - zq * se, "high": diff + zq * se, "z": z, "p": p}


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
