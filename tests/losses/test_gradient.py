"""Gradient difference loss (Nie et al. 2017): hand values in 2D and 3D, properties, module form."""

from __future__ import annotations

import pytest
import torch

from medgen.losses import GradientDifferenceLoss, gradient_difference_loss


def test_2d_by_hand():
    pred = torch.tensor([0.0, 1.0, 3.0]).reshape(1, 1, 1, 3)
    target = torch.zeros_like(pred)
    # axis H has length 1 (no differences); axis W: |grad pred| = [1, 2], |grad target| = [0, 0]
    assert gradient_difference_loss(pred, target).item() == pytest.approx((1 + 4) / 2)
    assert gradient_difference_loss(pred, target, alpha=1.0).item() == pytest.approx((1 + 2) / 2)


def test_3d_by_hand_sums_axes():
    pred = torch.zeros(1, 1, 2, 2, 2)
    pred[0, 0, 1, 1, 1] = 1.0
    target = torch.zeros_like(pred)
    # per axis: 4 forward differences, one equal to 1 -> mean 1/4; three axes summed -> 3/4
    assert gradient_difference_loss(pred, target).item() == pytest.approx(0.75)
    # differences along each axis are compared as magnitudes: 2 vs 1 on one of 4 -> (2 - 1)^2 / 4 per axis
    assert gradient_difference_loss(2 * pred, pred).item() == pytest.approx(0.75)


def test_properties_and_module():
    pred = torch.rand(2, 1, 5, 6, 7)
    assert gradient_difference_loss(pred, pred + 3.0).item() == pytest.approx(0.0, abs=1e-6)  # shift-invariant
    assert gradient_difference_loss(pred, -pred).item() == pytest.approx(0.0, abs=1e-6)  # magnitudes only
    target = torch.rand(2, 1, 5, 6, 7)
    module = GradientDifferenceLoss(alpha=2.0)
    assert module(pred, target).item() == pytest.approx(gradient_difference_loss(pred, target).item())
    p = pred.clone().requires_grad_(True)
    module(p, target).backward()
    assert p.grad.abs().sum() > 0


def test_half_precision_input_reduces_in_float32():
    pred = torch.rand(1, 1, 8, 8).to(torch.bfloat16)
    out = gradient_difference_loss(pred, torch.zeros_like(pred))
    assert out.dtype == torch.float32
