from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from medgen.errors import MedgenError
from medgen.metrics import dice, hd95, lesion_f1, segmentation_metrics, volume_error


def _cube(shape, lo, size):
    m = np.zeros(shape, bool)
    m[tuple(slice(a, a + size) for a in lo)] = True
    return m


def test_dice_hand_and_empty_convention():
    a = np.array([1, 1, 1, 0, 0, 0])
    b = np.array([0, 1, 1, 1, 1, 0])
    assert dice(a, b) == pytest.approx(2 * 2 / (3 + 4))
    assert dice(a, a) == 1.0
    z = np.zeros(6)
    assert dice(z, z) == 1.0  # both empty: perfect agreement (MONAI would give NaN)
    assert dice(a, z) == 0.0 and dice(z, a) == 0.0
    assert dice(torch.tensor(a, dtype=torch.bool), torch.tensor(b)) == pytest.approx(4 / 7)
    assert isinstance(dice(a, b), float)


def test_input_errors():
    a = np.zeros((8, 8))
    with pytest.raises(MedgenError, match="shape mismatch"):
        dice(a, np.zeros((8, 7)))
    with pytest.raises(MedgenError, match="binary"):
        dice(a + 0.3, a)
    with pytest.raises(MedgenError, match="binary"):
        dice(np.full((8, 8), 2), a)  # a label map, not a mask
    with pytest.raises(MedgenError, match="NaN"):
        dice(np.full((8, 8), np.nan), a)
    with pytest.raises(MedgenError, match="2D or 3D"):
        hd95(np.zeros((1, 8, 8, 8)), np.zeros((1, 8, 8, 8)))
    with pytest.raises(MedgenError, match="spacing"):
        hd95(_cube((8, 8, 8), (2, 2, 2), 3), _cube((8, 8, 8), (2, 2, 2), 3), spacing=(1, 1))
    with pytest.raises(MedgenError, match="spacing"):
        volume_error(a, a, spacing=(1, -1))


def test_hd95_shifted_cubes_known_distance():
    shape = (32, 32, 32)
    a = _cube(shape, (8, 8, 8), 8)
    b = _cube(shape, (11, 8, 8), 8)  # shifted by 3 voxels along axis 0
    # every surface distance is <= 3, and a whole 8x8 face (64 of 296 surface voxels) is exactly 3 away
    assert hd95(a, b) == pytest.approx(3.0)
    assert hd95(b, a) == pytest.approx(3.0)
    assert hd95(a, b, spacing=(2.0, 1.0, 1.0)) == pytest.approx(6.0)  # the shift axis is 2 mm
    assert hd95(a, b, spacing=(1.0, 0.5, 0.5)) == pytest.approx(3.0)
    assert hd95(a, a) == 0.0


def test_hd95_empty_convention():
    z = np.zeros((16, 16, 16), bool)
    a = _cube(z.shape, (4, 4, 4), 4)
    assert hd95(z, z) == 0.0
    assert hd95(a, z) == math.inf and hd95(z, a) == math.inf


def test_hd95_matches_monai():
    from monai.metrics import compute_hausdorff_distance

    rng = np.random.default_rng(0)
    shape = (24, 24, 20)
    for seed in range(3):
        noise = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
        p = noise > 0.05
        r = ndimage.binary_dilation(noise > 0.1, iterations=seed)
        # keep away from the image edge, where MONAI's crop-with-margin differs
        for m in (p, r):
            m[:2], m[-2:], m[:, :2], m[:, -2:], m[:, :, :2], m[:, :, -2:] = (False,) * 6
        spacing = (1.0, 0.8, 2.5)
        ref = compute_hausdorff_distance(
            torch.from_numpy(p)[None, None].float(), torch.from_numpy(r)[None, None].float(),
            include_background=True, percentile=95, spacing=spacing,
        ).item()
        assert hd95(p, r, spacing) == pytest.approx(ref, rel=1e-5)


def test_hd95_2d():
    a = _cube((20, 20), (5, 5), 6)
    b = _cube((20, 20), (5, 9), 6)  # shift 4 along axis 1
    assert hd95(a, b) == pytest.approx(4.0)


def test_lesion_f1_crafted_components():
    ref = np.zeros((20, 20, 20), bool)
    ref[2:5, 2:5, 2:5] = True  # lesion A: detected
    ref[10:13, 10:13, 10:13] = True  # lesion B: detected by a 1-voxel overlap
    ref[16:19, 2:5, 2:5] = True  # lesion C: missed
    pred = np.zeros_like(ref)
    pred[3:6, 3:6, 3:6] = True  # overlaps A
    pred[12:14, 12:14, 12:14] = True  # overlaps B in exactly one voxel (12,12,12)
    pred[2:4, 15:17, 15:17] = True  # false positive
    pred[7, 7, 7] = True  # diagonal neighbours: one 26-connected false positive
    pred[8, 8, 8] = True
    out = lesion_f1(pred, ref)
    assert out["n_ref_lesions"] == 3 and out["n_pred_lesions"] == 4
    assert out["n_detected_lesions"] == 2 and out["n_fn_lesions"] == 1
    assert out["n_tp_pred_lesions"] == 2 and out["n_fp_lesions"] == 2
    assert out["lesion_recall"] == pytest.approx(2 / 3)
    assert out["lesion_precision"] == pytest.approx(2 / 4)
    assert out["lesion_f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    # stricter overlap: B's single-voxel overlap no longer counts
    strict = lesion_f1(pred, ref, min_overlap=2)
    assert strict["n_detected_lesions"] == 1 and strict["n_tp_pred_lesions"] == 1


def test_lesion_f1_one_pred_bridging_two_lesions_and_empty():
    ref = np.zeros((12, 12), bool)
    ref[1:3, 1:3] = True
    ref[1:3, 8:10] = True
    pred = np.zeros_like(ref)
    pred[2, 1:10] = True  # one component touching both lesions
    out = lesion_f1(pred, ref)
    assert (out["lesion_recall"], out["lesion_precision"], out["lesion_f1"]) == (1.0, 1.0, 1.0)
    z = np.zeros_like(ref)
    assert lesion_f1(z, z)["lesion_f1"] == 1.0
    e = lesion_f1(z, ref)
    assert (e["lesion_precision"], e["lesion_recall"], e["lesion_f1"]) == (1.0, 0.0, 0.0)
    e = lesion_f1(pred, z)
    assert (e["lesion_precision"], e["lesion_recall"], e["lesion_f1"]) == (0.0, 1.0, 0.0)
    with pytest.raises(MedgenError, match="min_overlap"):
        lesion_f1(pred, ref, min_overlap=0)


def test_volume_error_ml():
    ref = _cube((16, 16, 16), (0, 0, 0), 10)  # 1000 voxels
    pred = _cube((16, 16, 16), (0, 0, 0), 5)  # 125 voxels
    out = volume_error(pred, ref, spacing=(2.0, 1.0, 0.5))  # 1 mm^3 per voxel
    assert out["ref_volume_ml"] == pytest.approx(1.0)
    assert out["pred_volume_ml"] == pytest.approx(0.125)
    assert out["volume_diff_ml"] == pytest.approx(-0.875)
    assert out["abs_volume_error_ml"] == pytest.approx(0.875)
    assert out["rel_volume_error"] == pytest.approx(0.875)
    z = np.zeros_like(ref)
    assert volume_error(z, z, None)["rel_volume_error"] == 0.0
    assert volume_error(pred, z, None)["rel_volume_error"] == math.inf


def test_segmentation_metrics_combines():
    shape = (32, 32, 32)
    a = _cube(shape, (8, 8, 8), 8)
    b = _cube(shape, (11, 8, 8), 8)
    out = segmentation_metrics(a, b, spacing=(1.0, 1.0, 1.0))
    assert out["dice"] == pytest.approx(2 * 5 * 64 / 1024)
    assert out["hd95"] == pytest.approx(3.0)
    assert out["lesion_f1"] == 1.0
    assert out["abs_volume_error_ml"] == 0.0
    assert {"lesion_precision", "n_ref_lesions", "ref_volume_ml"} <= set(out)


def test_dice_is_monai_with_empty_masks_kept():
    """medgen's Dice is MONAI's compute_dice(ignore_empty=False): 2|P&R| / (|P|+|R|), and 1 for two empty masks."""
    rng = np.random.default_rng(0)
    for shape in ((9, 7), (6, 5, 4)):
        p, r = rng.random(shape) > 0.5, rng.random(shape) > 0.7
        assert dice(p, r) == pytest.approx(2 * (p & r).sum() / (p.sum() + r.sum()), rel=1e-6)
    empty = np.zeros((4, 4), bool)
    assert dice(empty, empty) == 1.0 and dice(empty, ~empty) == 0.0
