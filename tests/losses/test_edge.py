"""Ea-GANs Sobel edge map and EdgeL1Loss: hand computations, scipy cross-check, fixed filters, 2D/3D."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from medgen.errors import MedgenError
from medgen.losses import EdgeL1Loss, sobel_edges, sobel_kernels


def _mapped(norm: float) -> float:
    return math.tanh(norm) * 2.0 - 1.0


def test_kernels_are_fixed_sobel_filters():
    k3 = sobel_kernels(3)
    assert k3.shape == (3, 1, 3, 3, 3) and not k3.requires_grad
    smooth = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])
    # kernel a: -smooth on the plane before the centre along axis a, 0 on the centre plane, +smooth after
    for axis in range(3):
        k = k3[axis, 0]
        assert torch.equal(k.select(axis, 0), -smooth)
        assert torch.equal(k.select(axis, 1), torch.zeros(3, 3))
        assert torch.equal(k.select(axis, 2), smooth)
    k2 = sobel_kernels(2)
    assert torch.equal(k2[0, 0], torch.tensor([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]]))
    assert torch.equal(k2[1, 0], k2[0, 0].T)


def test_step_edge_3d_by_hand():
    # background -1 (= pad value), a slab at -0.9 for i >= 2: a 0.1 step along axis i
    x = torch.full((1, 1, 5, 5, 5), -1.0)
    x[:, :, 2:] = -0.9
    e = sobel_edges(x)
    assert e.shape == x.shape and e.dtype == torch.float32
    # (1,2,2): G_i = sum of the 1-2-1 x 1-2-1 weights (16) * (x[2] - x[0]) = 16 * 0.1, / 4 -> 0.4; G_j = G_k = 0
    assert e[0, 0, 1, 2, 2].item() == pytest.approx(_mapped(0.4), abs=1e-6)
    # (0,2,2): x[1] - pad = -1 - (-1) = 0 everywhere -> flat -> -1
    assert e[0, 0, 0, 2, 2].item() == pytest.approx(-1.0, abs=1e-6)
    # (4,2,2): the -1 padding beyond the slab makes an edge: 16 * (pad - x[3]) / 4 = -0.4 -> norm 0.4
    assert e[0, 0, 4, 2, 2].item() == pytest.approx(_mapped(0.4), abs=1e-6)
    # (4,0,2), a slab corner against the padding in i and j:
    #   G_i: padded row j=-1 gives 0; rows j=0 (w 2), j=1 (w 1): (pad - x[3]) = -0.1; k weights sum 4
    #        -> (2 + 1) * 4 * -0.1 = -1.2, / 4 = -0.3
    #   G_j: i=3 (w 1): x[3,1] - pad = 0.1; i=4 (w 2): 0.1; i=5 (pad, w 1): 0 -> (0.1 + 0.2) * 4 = 1.2, / 4 = 0.3
    #   G_k: 0  -> norm = 0.3 * sqrt(2)
    assert e[0, 0, 4, 0, 2].item() == pytest.approx(_mapped(0.3 * math.sqrt(2.0)), abs=1e-6)
    # constant background gives -1 everywhere (the padding matches it)
    assert torch.allclose(sobel_edges(torch.full((1, 1, 4, 4, 4), -1.0)), torch.full((1, 1, 4, 4, 4), -1.0))


def test_step_edge_2d_by_hand():
    x = torch.full((1, 1, 5, 5), -1.0)
    x[:, :, :, 3:] = -0.8  # 0.2 step along the second axis
    e = sobel_edges(x)
    # (2,2): G_1 = (1+2+1) * (x[.,3] - x[.,1]) = 4 * 0.2 = 0.8, / 4 = 0.2; G_0 = 0
    assert e[0, 0, 2, 2].item() == pytest.approx(_mapped(0.2), abs=1e-6)
    assert e[0, 0, 2, 0].item() == pytest.approx(-1.0, abs=1e-6)


def _reference_numpy(vol: np.ndarray, pad_value: float) -> np.ndarray:
    """Independent edge map of one channel: pad, scipy's separable Sobel per axis, crop, /4, norm, tanh."""
    padded = np.pad(vol.astype(np.float64), 1, mode="constant", constant_values=pad_value)
    crop = tuple(slice(1, -1) for _ in range(vol.ndim))
    grads = [ndimage.sobel(padded, axis=a)[crop] / 4.0 for a in range(vol.ndim)]
    return np.tanh(np.sqrt(sum(g * g for g in grads))) * 2.0 - 1.0


@pytest.mark.parametrize("spatial", [(6, 7), (5, 6, 7)])
def test_matches_scipy_per_channel(spatial):
    x = torch.rand(2, 3, *spatial) * 2 - 1
    e = sobel_edges(x).numpy()
    for b in range(2):
        for c in range(3):
            np.testing.assert_allclose(e[b, c], _reference_numpy(x[b, c].numpy(), -1.0), atol=1e-5)
    # pad_value is honoured
    e0 = sobel_edges(x, pad_value=0.0).numpy()
    np.testing.assert_allclose(e0[1, 2], _reference_numpy(x[1, 2].numpy(), 0.0), atol=1e-5)


def test_gradient_reaches_input_not_filters_and_is_finite_on_flat_regions():
    x = torch.full((1, 2, 6, 6, 6), -1.0)
    x[:, :, 3:] = 0.5
    x.requires_grad_(True)
    loss = EdgeL1Loss()
    assert list(loss.parameters()) == []
    target = torch.full_like(x, -1.0)
    out = loss(x, target)
    out.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # flat input: zero norm everywhere, the gradient must be 0, not NaN
    flat = torch.full((1, 1, 4, 4), -1.0, requires_grad=True)
    sobel_edges(flat).sum().backward()
    assert torch.isfinite(flat.grad).all()


def test_edge_l1_loss_value_and_target_detached():
    pred = (torch.rand(2, 1, 6, 6, 6) * 2 - 1).requires_grad_(True)
    target = (torch.rand(2, 1, 6, 6, 6) * 2 - 1).requires_grad_(True)
    loss = EdgeL1Loss()(pred, target)
    expected = (sobel_edges(pred) - sobel_edges(target)).abs().mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert pred.grad.abs().sum() > 0 and target.grad is None
    assert EdgeL1Loss()(target, target).item() == 0.0


def test_autocast_computes_in_float32():
    x = torch.rand(1, 1, 6, 6, 6) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        e = sobel_edges(x)
    assert e.dtype == torch.float32
    assert torch.allclose(e, sobel_edges(x), atol=1e-6)


def test_bad_rank_is_a_clear_error():
    with pytest.raises(MedgenError, match="sobel_edges"):
        sobel_edges(torch.zeros(4, 4))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_autocast_float16_matches_float32():
    from medgen.losses import AdversarialLoss, gradient_difference_loss

    x = (torch.rand(1, 2, 16, 16, 16, device="cuda") * 2 - 1)
    ref = sobel_edges(x)
    with torch.autocast("cuda", dtype=torch.float16):
        e = sobel_edges(x.half())
        adv = AdversarialLoss("lsgan", real_label_range=(0.7, 1.2))(x.half(), True)
        gdl = gradient_difference_loss(x.half(), torch.zeros_like(x))
    assert e.dtype == adv.dtype == gdl.dtype == torch.float32
    assert torch.allclose(e, ref, atol=2e-3)
