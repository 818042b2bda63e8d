from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from medgen.errors import MedgenError
from medgen.metrics import image_metrics, mae, mse, ncc, nmse, psnr, ssim


def _pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.random(shape)
    p = np.clip(t + 0.1 * rng.standard_normal(shape), 0, 1)
    return p, t


def _sk_ssim(p, t, dr, **kw):
    return structural_similarity(
        p, t, data_range=dr, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, **kw
    )


def test_hand_computed_values():
    p = np.array([[1.0, 2.0], [3.0, 4.0]])
    t = np.array([[1.0, 2.0], [3.0, 6.0]])
    assert mse(p, t) == pytest.approx(1.0)  # (0+0+0+4)/4
    assert mae(p, t) == pytest.approx(0.5)
    assert nmse(p, t) == pytest.approx(4.0 / (1 + 4 + 9 + 36))
    assert psnr(p, t, data_range=10.0) == pytest.approx(20.0)  # 10 log10(100 / 1)
    m = np.array([[0, 0], [1, 1]])
    assert mse(p, t, m) == pytest.approx(2.0)
    assert mae(p, t, m) == pytest.approx(1.0)
    assert nmse(p, t, m) == pytest.approx(4.0 / 45.0)
    assert psnr(p, t, 10.0, m) == pytest.approx(10 * math.log10(100 / 2))
    # Pearson of (1,2,3,4) vs (1,2,3,6)
    assert ncc(p, t) == pytest.approx(np.corrcoef(p.ravel(), t.ravel())[0, 1])
    assert ncc(p, 3 * p + 1) == pytest.approx(1.0)
    assert ncc(p, -p) == pytest.approx(-1.0)


def test_psnr_matches_skimage_and_torch_input():
    p, t = _pair((24, 20, 16))
    ref = peak_signal_noise_ratio(t, p, data_range=1.0)
    assert psnr(p, t, 1.0) == pytest.approx(ref, rel=1e-12)
    assert psnr(torch.from_numpy(p).float(), torch.from_numpy(t).float(), 1.0) == pytest.approx(ref, rel=1e-5)
    assert isinstance(psnr(p, t, 1.0), float)
    assert psnr(t, t, 1.0) == math.inf


def test_psnr_mask_equals_psnr_of_masked_voxels():
    p, t = _pair((20, 20))
    m = np.zeros((20, 20), bool)
    m[5:15, 3:12] = True
    ref = peak_signal_noise_ratio(t[m], p[m], data_range=2.0)
    assert psnr(p, t, 2.0, mask=m) == pytest.approx(ref)
    assert psnr(p, t, 2.0, mask=m) != pytest.approx(psnr(p, t, 2.0))


@pytest.mark.parametrize("shape", [(32, 28), (16, 18, 20)])
def test_ssim_matches_skimage_2d_3d(shape):
    p, t = _pair(shape, seed=1)
    ref = _sk_ssim(p, t, 1.0)
    assert ssim(p, t, 1.0) == pytest.approx(ref, abs=1e-10)
    assert ssim(p, t, 1.0, mask=np.ones(shape, bool)) == pytest.approx(ref, abs=1e-10)
    assert ssim(t, t, 1.0) == pytest.approx(1.0)


def test_ssim_mask_averages_the_map_inside_the_mask():
    p, t = _pair((32, 32), seed=2)
    _, smap = _sk_ssim(p, t, 1.0, full=True)
    m = np.zeros((32, 32), bool)
    m[8:20, 10:24] = True  # fully inside the 5-voxel border
    assert ssim(p, t, 1.0, mask=m) == pytest.approx(smap[m].mean(), abs=1e-12)
    # degrade only outside the mask: masked SSIM unchanged, global SSIM drops
    p2 = p.copy()
    p2[:, :3] = 0.0
    assert ssim(p2, t, 1.0, mask=m) == pytest.approx(ssim(p, t, 1.0, mask=m), abs=1e-12)
    assert ssim(p2, t, 1.0) < ssim(p, t, 1.0)


def test_ssim_channel_first_and_spatial_dims():
    p, t = _pair((2, 16, 16, 16), seed=3)
    ref = _sk_ssim(p, t, 1.0, channel_axis=0)
    assert ssim(p, t, 1.0, spatial_dims=3) == pytest.approx(ref, abs=1e-10)
    m = np.zeros((16, 16, 16), bool)
    m[6:10, 6:10, 6:10] = True
    assert ssim(p, t, 1.0, mask=m, spatial_dims=3) == pytest.approx(
        np.mean([ssim(p[c], t[c], 1.0, mask=m) for c in range(2)]), abs=1e-10
    )


def test_data_range_changes_ssim_and_is_validated():
    p, t = _pair((20, 20))
    assert ssim(p, t, 1.0) != pytest.approx(ssim(p, t, 100.0))
    for bad in (0, -1.0, float("nan"), None, "x"):
        with pytest.raises(MedgenError, match="data_range"):
            psnr(p, t, bad)


def test_errors_shape_mask_nan():
    p, t = _pair((12, 12))
    with pytest.raises(MedgenError, match="shape mismatch"):
        mse(p, t[:-1])
    with pytest.raises(MedgenError, match="mask is empty"):
        psnr(p, t, 1.0, mask=np.zeros((12, 12)))
    with pytest.raises(MedgenError, match="shape mismatch"):
        mae(p, t, mask=np.ones((12, 11)))
    with pytest.raises(MedgenError, match="binary"):
        mae(p, t, mask=np.full((12, 12), 0.5))
    bad = p.copy()
    bad[0, 0] = np.nan
    with pytest.raises(MedgenError, match="NaN"):
        mse(bad, t)
    with pytest.raises(MedgenError, match=">= 11"):
        ssim(p[:10], t[:10], 1.0)
    with pytest.raises(MedgenError, match="border"):
        m = np.zeros((12, 12), bool)
        m[0, 0] = True
        ssim(p, t, 1.0, mask=m)
    with pytest.raises(MedgenError, match="undefined"):
        nmse(p, np.zeros_like(t))


def test_ncc_constant_is_nan():
    p, t = _pair((8, 8))
    assert math.isnan(ncc(np.ones_like(t), t))


def test_image_metrics_dict():
    p, t = _pair((16, 16, 16), seed=4)
    m = np.zeros(p.shape, bool)
    m[4:12, 4:12, 4:12] = True
    out = image_metrics(p, t, 1.0, mask=m)
    assert set(out) == {"psnr", "ssim", "mae", "mse", "nmse", "ncc"}
    assert out["psnr"] == psnr(p, t, 1.0, m)
    assert out["ssim"] == ssim(p, t, 1.0, m)
    assert out["nmse"] == nmse(p, t, m)
    assert out["ncc"] == ncc(p, t, m)
    assert all(isinstance(v, float) for v in out.values())
    small = image_metrics(p[:8, :8, :8], t[:8, :8, :8], 1.0)
    assert math.isnan(small["ssim"]) and math.isfinite(small["psnr"])
