"""Feature matching: hand values, weights, L2 / sum options, real side detached."""

from __future__ import annotations

import pytest
import torch

from medgen.errors import ConfigError, MedgenError
from medgen.losses import feature_matching_loss


def test_l1_mean_over_layers_by_hand():
    fake = [torch.ones(1, 2, 2, 2), torch.full((1, 1, 3, 3, 3), 3.0)]
    real = [torch.zeros(1, 2, 2, 2), torch.ones(1, 1, 3, 3, 3)]
    # layer L1 means: 1 and 2 -> default weights 1/2 each -> 1.5
    assert feature_matching_loss(fake, real).item() == pytest.approx(1.5)
    assert feature_matching_loss(fake, real, weights=[1.0, 10.0]).item() == pytest.approx(21.0)
    # L2 (MSE): 1 and 4 -> 2.5
    assert feature_matching_loss(fake, real, norm="l2").item() == pytest.approx(2.5)
    # sum (AnoGAN): 8 * 1 and 27 * 2 -> mean of the two = 31
    assert feature_matching_loss(fake, real, reduction="sum").item() == pytest.approx(31.0)
    # a single tensor is plain L1
    assert feature_matching_loss(fake[1], real[1]).item() == pytest.approx(2.0)


def test_real_detached_fake_gets_gradient():
    fake = torch.rand(2, 4, 5, 5, requires_grad=True)
    real = torch.rand(2, 4, 5, 5, requires_grad=True)
    feature_matching_loss([fake], [real]).backward()
    assert fake.grad.abs().sum() > 0 and real.grad is None


def test_errors():
    with pytest.raises(MedgenError):
        feature_matching_loss([torch.zeros(1, 2)], [torch.zeros(1, 2), torch.zeros(1, 2)])
    with pytest.raises(ConfigError):
        feature_matching_loss([torch.zeros(1, 2)], [torch.zeros(1, 2)], norm="l3")
    with pytest.raises(MedgenError, match="shapes"):
        feature_matching_loss([torch.zeros(1, 2)], [torch.zeros(1, 3)])
