from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from medgen.errors import MedgenError
from medgen.metrics import (
    compare_roc_auc,
    pixel_auc,
    pr_auc,
    roc_auc,
    roc_auc_ci,
    sensitivity_specificity,
    threshold_at_specificity,
)


def test_roc_and_pr_auc_hand_and_sklearn():
    # positives 0.8, 0.4; negatives 0.1, 0.5, 0.3 -> pairs won: 0.8 beats 3, 0.4 beats 2 -> 5/6
    scores = [0.8, 0.4, 0.1, 0.5, 0.3]
    labels = [1, 1, 0, 0, 0]
    assert roc_auc(scores, labels) == pytest.approx(5 / 6)
    # ranking: 0.8(+) 0.5(-) 0.4(+) -> AP = 1/2 * (1/1) + 1/2 * (2/3)
    assert pr_auc(scores, labels) == pytest.approx(0.5 + 1 / 3)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = rng.random(200) + 0.5 * y
    assert roc_auc(s, y) == pytest.approx(roc_auc_score(y, s))
    assert pr_auc(torch.tensor(s), torch.tensor(y)) == pytest.approx(average_precision_score(y, s))
    assert isinstance(roc_auc(s, y), float)


def test_one_class_and_bad_input_errors():
    with pytest.raises(MedgenError, match="both normal"):
        roc_auc([0.1, 0.2], [0, 0])
    with pytest.raises(MedgenError, match="both normal"):
        pr_auc([0.1, 0.2], [1, 1])
    with pytest.raises(MedgenError, match="both normal"):
        sensitivity_specificity([0.1, 0.2], [1, 1], 0.5)
    with pytest.raises(MedgenError, match="both normal"):
        pixel_auc(np.random.rand(2, 4, 4), np.zeros((2, 4, 4)))
    with pytest.raises(MedgenError, match="shape mismatch"):
        roc_auc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(MedgenError, match="NaN"):
        roc_auc([0.1, np.nan], [0, 1])
    with pytest.raises(MedgenError, match="binary"):
        roc_auc([0.1, 0.2, 0.3], [0, 1, 2])


def test_threshold_at_specificity_crafted():
    normals = [float(v) for v in range(1, 21)]  # 1..20
    t = threshold_at_specificity(normals, 0.95)
    assert t == 19.0  # 19 of 20 scores <= 19 -> exactly 95 %
    assert np.mean(np.asarray(normals) <= t) >= 0.95
    assert threshold_at_specificity(normals[::-1], 0.95) == 19.0  # order does not matter
    assert threshold_at_specificity(normals, 0.9) == 18.0
    assert threshold_at_specificity(normals, 0.96) == 20.0  # needs 19.2 -> 20 of 20
    assert threshold_at_specificity(normals, 1.0) == 20.0
    # floating point: 0.7 * 10 = 7.000000000000001 must still pick the 7th value
    assert threshold_at_specificity(np.arange(10.0), 0.7) == 6.0
    # ties: achieved specificity may exceed the request
    assert threshold_at_specificity([1, 2, 2, 2, 5], 0.4) == 2.0
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(MedgenError, match="specificity"):
            threshold_at_specificity(normals, bad)
    with pytest.raises(MedgenError, match="at least one"):
        threshold_at_specificity([], 0.95)


def test_sensitivity_specificity_uses_strict_greater():
    scores = [0.1, 0.5, 0.5, 0.9, 0.2, 0.6]
    labels = [0, 0, 1, 1, 1, 0]
    out = sensitivity_specificity(scores, labels, threshold=0.5)
    # called abnormal: 0.9, 0.6 (0.5 is not > 0.5)
    assert (out["tp"], out["fn"], out["tn"], out["fp"]) == (1, 2, 2, 1)
    assert out["sensitivity"] == pytest.approx(1 / 3)
    assert out["specificity"] == pytest.approx(2 / 3)
    # the threshold from the normals gives at least the requested specificity on those normals
    normals = np.random.default_rng(1).random(37)
    thr = threshold_at_specificity(normals, 0.9)
    s = np.concatenate([normals, normals + 1])
    y = np.r_[np.zeros(37), np.ones(37)]
    assert sensitivity_specificity(s, y, thr)["specificity"] >= 0.9


def test_pixel_auc_array_and_list():
    rng = np.random.default_rng(2)
    masks = rng.random((3, 8, 8)) > 0.8
    maps = rng.random((3, 8, 8)) + masks
    ref = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auc(maps, masks) == pytest.approx(ref)
    assert pixel_auc(list(maps), list(masks)) == pytest.approx(ref)
    # lists may hold images of different sizes
    m2 = [masks[0], masks[1, :4]]
    a2 = [maps[0], maps[1, :4]]
    flat_y = np.concatenate([m.ravel() for m in m2])
    flat_s = np.concatenate([a.ravel() for a in a2])
    assert pixel_auc(a2, m2) == pytest.approx(roc_auc_score(flat_y, flat_s))
    with pytest.raises(MedgenError, match="shape mismatch"):
        pixel_auc([maps[0]], [masks[0, :4]])
    with pytest.raises(MedgenError, match="2 maps but 1 masks"):
        pixel_auc([maps[0], maps[1]], [masks[0]])


def test_roc_auc_ci_by_hand():
    # abnormal 0.9, 0.6; normal 0.7, 0.1: the abnormal cases outrank 1 and 1/2 of the normals, the normals are
    # outranked by 1/2 and 1 of the abnormals -> AUC 0.75, variance 0.125/2 + 0.125/2 (sample variances)
    r = roc_auc_ci([0.9, 0.6, 0.7, 0.1], [1, 1, 0, 0])
    assert r["auc"] == pytest.approx(0.75)
    assert r["se"] == pytest.approx(np.sqrt(0.125))
    assert r["low"] == pytest.approx(0.75 - 1.959964 * np.sqrt(0.125)) and r["high"] == 1.0  # clipped at 1
    # ties count half, as in sklearn
    s, y = [1.0, 1.0, 0.5, 1.0, 0.2], [1, 0, 1, 0, 0]
    assert roc_auc_ci(s, y)["auc"] == pytest.approx(roc_auc_score(y, s))
    with pytest.raises(MedgenError, match="at least 2 normal and 2 abnormal"):
        roc_auc_ci([0.9, 0.6, 0.1], [1, 1, 0])
    with pytest.raises(MedgenError, match="confidence level"):
        roc_auc_ci([0.9, 0.6, 0.7, 0.1], [1, 1, 0, 0], level=95)


def test_roc_auc_ci_coverage_and_paired_test_size():
    """Binormal scores (normal N(0,1), abnormal N(d,1), true AUC = Phi(d / sqrt 2)): over 400 simulated
    studies of 30 + 30 cases the 95 % interval covers the true AUC in 90-98 % of them; and two correlated
    scorers with the same true AUC are called different (p < 0.05) in at most 9 % of them."""
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    d, m = 1.2, 30
    true_auc = norm.cdf(d / np.sqrt(2))
    y = np.r_[np.ones(m), np.zeros(m)]
    covered = rejected = 0
    for _ in range(400):
        shared = rng.normal(size=2 * m)  # what both scorers see of each case
        a = y * d + np.sqrt(0.5) * shared + np.sqrt(0.5) * rng.normal(size=2 * m)
        b = y * d + np.sqrt(0.5) * shared + np.sqrt(0.5) * rng.normal(size=2 * m)
        ci = roc_auc_ci(a, y)
        covered += ci["low"] <= true_auc <= ci["high"]
        rejected += compare_roc_auc(a, b, y)["p"] < 0.05
    assert 0.90 <= covered / 400 <= 0.98
    assert rejected / 400 <= 0.09


def test_compare_roc_auc_detects_a_better_scorer_and_pairs():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(40), np.zeros(40)]
    case = rng.normal(size=80)
    good = 1.5 * y + case  # AUC about 0.86
    worse = 0.3 * y + case + 0.5 * rng.normal(size=80)
    r = compare_roc_auc(good, worse, y)
    assert r["auc_a"] == pytest.approx(roc_auc(good, y)) and r["auc_b"] == pytest.approx(roc_auc(worse, y))
    assert r["difference"] > 0 and r["p"] < 0.01 and r["low"] > 0
    # the paired SE is smaller than the two unpaired SEs combined, because the scorers share the case term
    unpaired = np.hypot(roc_auc_ci(good, y)["se"], roc_auc_ci(worse, y)["se"])
    assert r["se"] < unpaired
    same = compare_roc_auc(good, good, y)
    assert same["difference"] == 0 and same["p"] == 1.0
    flipped = compare_roc_auc([2, 3, 0, 1], [0, 1, 2, 3], [1, 1, 0, 0])  # AUC 1 vs 0, no spread at all
    assert flipped["difference"] == 1.0 and flipped["p"] == 0.0
    with pytest.raises(MedgenError, match="scores_a"):
        compare_roc_auc([0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3], [1, 1, 0, 0])
