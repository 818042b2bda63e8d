"""medgen.data.presets: forward/inverse round trips in the input's units."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medgen.data.presets import (NormalizeIntensityd, get_preset, invert_intensity, load_transforms, norm_params)
from medgen.errors import ConfigError


def _head(shape=(16, 16, 16), seed=0):
    """A 'head': positive values in a ball, zeros outside."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*[np.arange(s) - s / 2 + 0.5 for s in shape], indexing="ij")
    ball = (i**2 + j**2 + k**2) < (shape[0] / 2.5) ** 2
    x = np.where(ball, 100 + 400 * rng.random(shape), 0.0).astype(np.float32)
    return x[None], ball[None]


def test_pet_percentile_scale_roundtrip_and_zero_stays_zero():
    x, ball = _head()
    y, params = get_preset("pet").forward(torch.from_numpy(x))
    assert params["scale"] == pytest.approx(np.percentile(x[x > 0], 99.5), rel=1e-6)
    assert float(y[torch.from_numpy(~ball)].abs().max()) == 0.0
    json.dumps(params)  # plain JSON
    np.testing.assert_allclose(invert_intensity(y, params).numpy(), x, rtol=1e-6)


def test_pet_suv_from_weight_and_dose():
    x, _ = _head()
    y, params = get_preset("pet", weight_kg=70.0, injected_dose_bq=3.5e8).forward(x)
    np.testing.assert_allclose(y, x * 70000.0 / 3.5e8, rtol=1e-6)  # SUV = C * weight[g] / dose[Bq]
    np.testing.assert_allclose(invert_intensity(y, params), x, rtol=1e-5)
    y2, _ = get_preset("pet").forward(x, meta={"weight_kg": 70.0, "injected_dose_bq": 3.5e8})
    np.testing.assert_allclose(y2, y)


def test_mr_foreground_percentiles_background_minus_one():
    x, ball = _head()
    y, p = get_preset("mr").forward(torch.from_numpy(x))
    lo, hi = np.percentile(x[ball], [0.5, 99.5])
    assert (p["low"], p["high"]) == (pytest.approx(lo), pytest.approx(hi))
    y = y.numpy()
    assert np.all(y[~ball] == -1.0) and y.min() >= -1 and y.max() <= 1
    back = invert_intensity(torch.from_numpy(y), p).numpy()
    inside = ball & (x >= lo) & (x <= hi)
    np.testing.assert_allclose(back[inside], x[inside], rtol=1e-4)
    assert np.all(back[~ball] == 0.0)
    # a mask restricts the statistics and the foreground
    half = ball.copy()
    half[..., :8] = False
    y2, p2 = get_preset("mr").forward(x, mask=half)
    assert np.all(y2[~half] == -1.0)
    assert p2["low"] == pytest.approx(np.percentile(x[half], 0.5))


def test_zscore_inside_mask_keeps_tails_and_inverts():
    x, ball = _head()
    x[0, 8, 8, 8] = 5000.0  # a bright outlier, the kind of tail "mr" would clip
    y, p = get_preset("zscore").forward(torch.from_numpy(x), mask=ball)
    inside = y.numpy()[ball]
    assert inside.mean() == pytest.approx(0.0, abs=1e-5) and inside.std() == pytest.approx(1.0, abs=1e-4)
    assert y[0, 8, 8, 8] == pytest.approx((5000.0 - p["mean"]) / p["std"])  # not clipped
    np.testing.assert_allclose(invert_intensity(y, p).numpy(), x, rtol=1e-4, atol=1e-3)
    from medgen.errors import DataError
    with pytest.raises(DataError, match="empty mask"):
        get_preset("zscore").forward(x, {"filename_or_obj": "a.nii.gz"}, mask=np.zeros_like(ball))


def test_ct_window_to_minus_one_one_and_back():
    hu = np.array([[-1000.0, -1000.0 + 1500, 2000.0, 500.0, 3000.0]], dtype=np.float32)
    y, p = get_preset("ct").forward(hu)
    np.testing.assert_allclose(y, [[-1.0, 0.0, 1.0, 0.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(invert_intensity(y, p), [[-1000, 500, 2000, 500, 2000]], atol=1e-3)
    y, p = get_preset("ct", clip=False).forward(hu)
    np.testing.assert_allclose(invert_intensity(y, p), hu, atol=1e-3)


@pytest.mark.parametrize("dtype,top", [(np.uint8, 255), (np.uint16, 65535)])
def test_oct_ranges(dtype, top):
    x = np.array([[0, top // 2, top]], dtype=dtype)
    y, p = get_preset("oct").forward(x)
    np.testing.assert_allclose(y, [[0, (top // 2) / top, 1]], atol=1e-6)
    y, p = get_preset("oct", out_range=(-1, 1)).forward(torch.from_numpy(x.astype(np.int32)).to(torch.float32))
    assert p["in_high"] == top
    np.testing.assert_allclose(invert_intensity(y, p).numpy(), x, atol=1e-2)
    f = np.array([[0.1, 0.9]], np.float32)
    assert get_preset("oct").forward(f)[1]["in_high"] == 1.0


def test_label_and_unknown():
    lab = np.array([[0, 1, 2]])
    y, p = get_preset("label").forward(lab)
    assert y is lab and invert_intensity(y, p) is lab
    with pytest.raises(ConfigError, match="unknown intensity preset 'xray'"):
        get_preset("xray")
    with pytest.raises(ConfigError, match="bad options"):
        get_preset("ct", window=3)


def test_dictionary_transform_stores_params_in_meta():
    x, ball = _head()
    d = {"t1": MetaTensor(torch.from_numpy(x)), "mask": torch.from_numpy(ball.astype(np.float32))}
    out = NormalizeIntensityd("t1", "mr", mask_key="mask")(d)
    params = norm_params(out["t1"])
    assert isinstance(out["t1"], MetaTensor) and params["preset"] == "mr"
    back = invert_intensity(out["t1"], params)
    assert float(back[torch.from_numpy(~ball)].abs().max()) == 0
    plain = NormalizeIntensityd("t1", "ct")({"t1": np.zeros((1, 2, 2), np.float32)})
    assert plain["t1_medgen_norm"]["preset"] == "ct"
    # collated params (1-element tensors) still invert
    collated = {k: (torch.tensor([v]) if isinstance(v, float) else [v]) for k, v in params.items()}
    np.testing.assert_allclose(invert_intensity(out["t1"], collated).numpy(), back.numpy())


def test_load_transforms_orientation_and_label_nearest(tmp_path):
    aff = np.diag([-1.0, -1.0, 1.0, 1.0])
    lab = np.zeros((8, 8, 8), np.uint8)
    lab[2:5, 2:5, 2:5] = 3
    nib.save(nib.Nifti1Image(lab.astype(np.float32) * 10, aff), str(tmp_path / "img.nii.gz"))
    nib.save(nib.Nifti1Image(lab, aff), str(tmp_path / "lab.nii.gz"))
    t = load_transforms(image_keys=["img"], label_keys=["lab"], spacing=(0.7, 0.7, 0.7))
    out = t({"img": str(tmp_path / "img.nii.gz"), "lab": str(tmp_path / "lab.nii.gz")})
    assert nib.aff2axcodes(out["img"].affine.numpy()) == ("R", "A", "S")
    assert set(np.unique(out["lab"].numpy()).tolist()) == {0.0, 3.0}  # nearest: no new labels
    assert len(np.unique(out["img"].numpy())) > 2  # bilinear for the image
    with pytest.raises(ConfigError):
        load_transforms(keys=["a"], label_keys=["b"])
