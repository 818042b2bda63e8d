"""The Tybalt VAE objective: hand computation, BCE-sum equivalence, KL against torch.distributions."""

from __future__ import annotations

import math

import pytest
import torch

from medgen.errors import ConfigError
from medgen.losses import kl_divergence, vae_loss


def test_hand_computation():
    x = torch.tensor([[1.0, 0.0]])
    recon = torch.tensor([[0.5, 0.5]])
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    # BCE of 0.5 is ln 2 per feature; default n_features = 2 -> sum = 2 ln 2
    # KL = -0.5 * [(1 + 0 - 1 - 1) + (1 + ln 2 - 0 - 2)] = 1 - ln2 / 2
    kl = 1.0 - math.log(2.0) / 2.0
    out = vae_loss(recon, x, mu, logvar, beta=0.5)
    assert set(out) == {"loss", "reconstruction", "kl"}
    assert out["reconstruction"].item() == pytest.approx(2 * math.log(2.0), rel=1e-6)
    assert out["kl"].item() == pytest.approx(kl, rel=1e-6)
    assert out["loss"].item() == pytest.approx(2 * math.log(2.0) + 0.5 * kl, rel=1e-6)
    # Tybalt: 5000 * mean BCE
    out5000 = vae_loss(recon, x, mu, logvar, beta=0.0, n_features=5000)
    assert out5000["reconstruction"].item() == pytest.approx(5000 * math.log(2.0), rel=1e-6)
    assert out5000["loss"].item() == pytest.approx(out5000["reconstruction"].item())
    # MSE option: errors 0.25 and 0.25 -> 2 * 0.25
    assert vae_loss(recon, x, mu, logvar, 1.0, reconstruction="mse")["reconstruction"].item() == pytest.approx(0.5)


def test_batch_means_and_sum_of_bce():
    x = torch.rand(4, 30)
    recon = torch.rand(4, 30) * 0.98 + 0.01
    mu, logvar = torch.randn(4, 5), torch.randn(4, 5) * 0.3
    out = vae_loss(recon, x, mu, logvar, beta=torch.tensor(0.25))
    bce_sum = -(x * recon.log() + (1 - x) * (1 - recon).log()).sum(dim=1).mean()
    assert out["reconstruction"].item() == pytest.approx(bce_sum.item(), rel=1e-5)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    ref_kl = torch.distributions.kl_divergence(q, p).sum(dim=1)
    assert torch.allclose(kl_divergence(mu, logvar), ref_kl, atol=1e-5)
    assert out["kl"].item() == pytest.approx(ref_kl.mean().item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(out["reconstruction"].item() + 0.25 * out["kl"].item(), rel=1e-6)


def test_gradients_and_errors():
    mu = torch.zeros(2, 3, requires_grad=True)
    logvar = torch.zeros(2, 3, requires_grad=True)
    recon = torch.full((2, 8), 0.3, requires_grad=True)
    out = vae_loss(recon, torch.ones(2, 8), mu + 1.0, logvar, beta=1.0)
    out["loss"].backward()
    assert recon.grad.abs().sum() > 0 and mu.grad.abs().sum() > 0
    with pytest.raises(ConfigError):
        vae_loss(recon, torch.ones(2, 8), mu, logvar, reconstruction="l1")
