"""Adversarial losses: hand values per mode, label smoothing redrawn per call, multi-scale inputs, the
generator really receives the adversarial gradient (the released dEa-GAN code did not), and WGAN-GP."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medgen.errors import ConfigError, MedgenError
from medgen.losses import AdversarialLoss, gradient_penalty, sobel_edges

LOGITS = torch.tensor([-1.0, 0.0, 2.0]).reshape(1, 1, 1, 1, 3)  # a 3D patch output


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


@pytest.mark.parametrize(
    "mode, d_real, d_fake, g",
    [
        ("vanilla", sum(_softplus(-v) for v in (-1, 0, 2)) / 3, sum(_softplus(v) for v in (-1, 0, 2)) / 3,
         sum(_softplus(-v) for v in (-1, 0, 2)) / 3),
        ("lsgan", (4 + 1 + 1) / 3, (1 + 0 + 4) / 3, (4 + 1 + 1) / 3),
        ("hinge", (2 + 1 + 0) / 3, (0 + 1 + 3) / 3, -1 / 3),
        ("wgan", -1 / 3, 1 / 3, -1 / 3),
    ],
)
def test_modes_by_hand(mode, d_real, d_fake, g):
    loss = AdversarialLoss(mode)
    assert loss(LOGITS, True).item() == pytest.approx(d_real, rel=1e-6)
    assert loss(LOGITS, False).item() == pytest.approx(d_fake, rel=1e-6)
    assert loss(LOGITS, True, for_discriminator=False).item() == pytest.approx(g, rel=1e-6)
    # same in 2D
    assert loss(LOGITS.reshape(1, 1, 1, 3), False).item() == pytest.approx(d_fake, rel=1e-6)


def test_multi_scale_average_and_feature_lists():
    loss = AdversarialLoss("lsgan")
    a = torch.full((2, 1, 4, 4, 4), 1.0)  # real loss 0
    b = torch.full((2, 1, 2, 2, 2), 3.0)  # real loss 4
    assert loss([a, b], True).item() == pytest.approx(2.0)
    feats_a = [torch.randn(2, 8, 8, 8, 8), a]
    feats_b = [torch.randn(2, 8, 4, 4, 4), b]
    assert loss([feats_a, feats_b], True).item() == pytest.approx(2.0)  # last element of each list
    assert loss([feats_b], True).item() == pytest.approx(4.0)
    with pytest.raises(MedgenError):
        loss("nope", True)


def test_label_smoothing_redrawn_every_call_and_seeded():
    loss = AdversarialLoss("lsgan", real_label_range=(0.7, 1.2), fake_label_range=(0.0, 0.3))
    zeros = torch.zeros(1, 1, 3, 3, 3)
    # with zero logits the LSGAN loss is target^2: recover the drawn targets
    reals = [math.sqrt(loss(zeros, True).item()) for _ in range(20)]
    fakes = [math.sqrt(loss(zeros, False).item()) for _ in range(20)]
    assert all(0.7 - 1e-6 <= r <= 1.2 + 1e-6 for r in reals)
    assert all(0.0 <= f <= 0.3 + 1e-6 for f in fakes)
    assert reals[0] != reals[1] and len(set(round(r, 6) for r in reals)) == 20
    assert len(set(round(f, 6) for f in fakes)) == 20
    # the draw uses torch's RNG: same seed, same targets; the value is low + (high - low) * torch.rand(())
    torch.manual_seed(123)
    t1 = loss.draw_target(zeros, True)
    t2 = loss.draw_target(zeros, True)
    torch.manual_seed(123)
    u = torch.rand(())
    assert torch.allclose(t1, torch.full_like(zeros, 0.7 + 0.5 * u.item()))
    torch.manual_seed(123)
    assert torch.equal(loss.draw_target(zeros, True), t1)
    assert not torch.equal(t1, t2)
    # a private generator works too
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    la = AdversarialLoss("vanilla", real_label_range=(0.7, 1.2), generator=g1)
    lb = AdversarialLoss("vanilla", real_label_range=(0.7, 1.2), generator=g2)
    assert la(LOGITS, True).item() == lb(LOGITS, True).item()


def test_per_element_and_generator_targets():
    zeros = torch.zeros(2, 1, 4, 4)
    loss = AdversarialLoss("lsgan", real_label_range=(0.7, 1.2), per_element=True)
    t = loss.draw_target(zeros, True)
    assert t.unique().numel() == t.numel() and t.min() >= 0.7 and t.max() <= 1.2
    fixed_g = AdversarialLoss("lsgan", real_label_range=(0.7, 1.2), smooth_generator=False)
    assert torch.equal(fixed_g.draw_target(zeros, True, for_discriminator=False), torch.ones_like(zeros))
    assert not torch.equal(fixed_g.draw_target(zeros, True), torch.ones_like(zeros))
    plain = AdversarialLoss("lsgan", real_label=0.9, fake_label=0.1)
    assert plain(zeros, True).item() == pytest.approx(0.81)
    assert plain(zeros, False).item() == pytest.approx(0.01)


def test_config_errors():
    with pytest.raises(ConfigError, match="mode"):
        AdversarialLoss("bce")
    with pytest.raises(ConfigError, match="smoothing"):
        AdversarialLoss("hinge", real_label_range=(0.7, 1.2))
    with pytest.raises(ConfigError):
        AdversarialLoss("lsgan", fake_label_range=(0.3, 0.0))


def test_float32_under_autocast():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = AdversarialLoss("vanilla")(LOGITS.to(torch.bfloat16), True)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("mode", ["vanilla", "lsgan", "hinge", "wgan"])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_generator_receives_adversarial_gradient(mode, spatial_dims):
    """dEa-GAN style: D sees [source, estimate, sobel(estimate)]; G must get a gradient through D."""
    conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
    gen = nn.Sequential(conv(1, 4, 3, padding=1), nn.ReLU(), conv(4, 1, 3, padding=1), nn.Tanh())
    disc = nn.Sequential(conv(3, 4, 4, stride=2, padding=1), nn.LeakyReLU(0.2), conv(4, 1, 3, padding=1))
    src = torch.rand(2, 1, *([8] * spatial_dims)) * 2 - 1
    kwargs = {"real_label_range": (0.7, 1.2)} if mode in ("vanilla", "lsgan") else {}
    loss = AdversarialLoss(mode, **kwargs)

    fake = gen(src)
    loss(disc(torch.cat([src, fake, sobel_edges(fake)], 1)), True, for_discriminator=False).backward()
    grads = [p.grad for p in gen.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0

    # negative control: the reference's detaching image pool cuts the path
    gen.zero_grad(set_to_none=True)
    fake = gen(src).detach()
    loss(disc(torch.cat([src, fake, sobel_edges(fake)], 1)), True, for_discriminator=False).backward()
    assert all(p.grad is None for p in gen.parameters())


class LinearCritic(nn.Module):
    """f(x) = <w, x>: its input gradient is w everywhere, so the GP is weight * (||w|| - 1)^2 exactly."""

    def __init__(self, shape, norm: float, return_features: bool = False):
        super().__init__()
        n = math.prod(shape)
        w = torch.randn(n)
        self.w = nn.Parameter(w / w.norm() * norm)
        self.return_features = return_features

    def forward(self, x):
        out = x.flatten(1) @ self.w
        return (out, [x]) if self.return_features else out


@pytest.mark.parametrize("shape", [(2, 6, 6), (1, 4, 4, 4)])
def test_gradient_penalty_linear_critic(shape):
    real = torch.rand(3, *shape)
    fake = torch.rand(3, *shape)
    unit = LinearCritic(shape, 1.0)
    assert gradient_penalty(unit, real, fake).item() == pytest.approx(0.0, abs=1e-8)
    steep = LinearCritic(shape, 2.0, return_features=True)  # (logits, features) output
    gp = gradient_penalty(steep, real, fake, weight=10.0)
    assert gp.item() == pytest.approx(10.0, rel=1e-5)
    gp.backward()  # create_graph=True: the penalty trains the critic; d/dw 10 (|w| - 1)^2 = 10 w at |w| = 2
    assert torch.allclose(steep.w.grad, 10.0 * steep.w.detach(), rtol=1e-4, atol=1e-6)


def test_gradient_penalty_conv_critic_3d_positive_and_seeded():
    critic = nn.Sequential(nn.Conv3d(1, 4, 3, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Conv3d(4, 1, 3))
    real, fake = torch.rand(2, 1, 8, 8, 8), torch.rand(2, 1, 8, 8, 8, requires_grad=True)
    torch.manual_seed(7)
    gp1 = gradient_penalty(critic, real, fake)
    torch.manual_seed(7)
    gp2 = gradient_penalty(critic, real, fake)
    assert gp1.item() > 0 and gp1.item() == pytest.approx(gp2.item())
    gp1.backward()
    # conv weights shape the input gradient (biases do not: their GP gradient is legitimately 0)
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in (critic[0], critic[2]))
    assert fake.grad is None  # the penalty is a critic-only term
    with pytest.raises(MedgenError):
        gradient_penalty(critic, real, torch.rand(2, 1, 4, 4, 4))


def test_shared_batch_lets_batch_norm_see_a_level_shift():
    """Regression (mr_to_ct): with separate calls, a batch-norm discriminator in training mode normalises a shift
    common to the whole fake batch away, so D(fake + c) == D(fake) and nothing holds the generator's level; in
    one shared batch the shift changes the fake logits."""
    from medgen.losses import real_fake_logits

    torch.manual_seed(0)
    D = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.BatchNorm3d(4), torch.nn.ReLU(),
                            torch.nn.Flatten(), torch.nn.LazyLinear(1)).train()
    real = torch.randn(4, 1, 6, 6, 6)
    fake = torch.randn(4, 1, 6, 6, 6)
    _, sep = real_fake_logits(D, real, fake, shared_batch=False)
    _, sep_shifted = real_fake_logits(D, real, fake + 0.5, shared_batch=False)
    assert torch.allclose(sep, sep_shifted, atol=1e-4)  # the shift is invisible to D
    _, joint = real_fake_logits(D, real, fake, shared_batch=True)
    _, joint_shifted = real_fake_logits(D, real, fake + 0.5, shared_batch=True)
    assert (joint - joint_shifted).abs().max() > 1e-2
    # without batch norm the two forms agree
    D.eval()
    a = real_fake_logits(D, real, fake, shared_batch=False)
    b = real_fake_logits(D, real, fake, shared_batch=True)
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a, b))
    with pytest.raises(MedgenError, match="differ in shape"):
        real_fake_logits(D, real, fake[:, :, :5])
