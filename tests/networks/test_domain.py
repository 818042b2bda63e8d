import pytest
import torch

from medgen.errors import ConfigError
from medgen.networks import GradReverse, DomainDiscriminator, center_crop, grad_reverse, ramp_weight


def test_gradient_reversal_hand_check():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    w = torch.tensor([0.5, 1.0, -2.0])
    layer = GradReverse(0.3)
    y = layer(x)
    assert torch.equal(y, x)  # identity forward
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.3 * w)  # d/dx (w . x) = w, reversed and scaled
    x.grad = None
    layer.set_weight(2.0)
    (layer(x) * w).sum().backward()
    assert torch.allclose(x.grad, -2.0 * w)
    x.grad = None
    (grad_reverse(x, 0.0) * w).sum().backward()
    assert torch.count_nonzero(x.grad) == 0


def test_ramp_weight():
    assert ramp_weight(0, warmup=10, ramp=20, max_weight=0.5) == 0.0
    assert ramp_weight(9, 10, 20, 0.5) == 0.0
    assert ramp_weight(10, 10, 20, 0.5) == 0.0
    assert ramp_weight(20, 10, 20, 0.5) == pytest.approx(0.25)
    assert ramp_weight(30, 10, 20, 0.5) == 0.5
    assert ramp_weight(1000, 10, 20, 0.5) == 0.5
    assert ramp_weight(10, 10, 0, 0.5) == 0.5
    s = [ramp_weight(t, 0, 10, 1.0, mode="sigmoid") for t in range(12)]
    assert s[0] == 0.0 and s[-1] == 1.0 and all(a <= b for a, b in zip(s, s[1:]))
    with pytest.raises(ConfigError):
        ramp_weight(0, -1, 10)


def test_center_crop_matches_slicing():
    x = torch.arange(2 * 9 * 8 * 7, dtype=torch.float32).reshape(1, 2, 9, 8, 7)
    assert torch.equal(center_crop(x, (5, 4, 7)), x[:, :, 2:7, 2:6, :])
    with pytest.raises(ConfigError):
        center_crop(x, (10, 4, 4))


@pytest.mark.parametrize("resize", ["crop", "resample"])
def test_discriminator_accepts_mismatched_features(resize):
    feats = [torch.randn(2, 3, 11, 11, 11), torch.randn(2, 5, 7, 7, 7), torch.randn(2, 4, 9, 7, 8)]
    d = DomainDiscriminator(3, in_channels=12, channels=(8, 8), resize=resize)
    assert d.align(feats).shape == (2, 12, 7, 7, 7)  # smallest per axis
    assert d(feats).shape == (2, 1)
    fixed = DomainDiscriminator(3, in_channels=12, channels=(8,), target_size=5, resize=resize)
    assert fixed.align(feats).shape == (2, 12, 5, 5, 5)


def test_crop_keeps_centre_and_lazy_in_channels():
    big = torch.zeros(1, 1, 9, 9, 9)
    big[0, 0, 4, 4, 4] = 1.0
    small = torch.zeros(1, 1, 3, 3, 3)
    d = DomainDiscriminator(3, channels=(4,))  # lazy in_channels
    aligned = d.align([big, small])
    assert aligned[0, 0, 1, 1, 1] == 1.0 and aligned[0, 0].sum() == 1.0
    assert d([big, small]).shape == (1, 1)
    assert d.stem.in_channels == 2
    d2 = DomainDiscriminator(2, in_channels=3, channels=(4, 4))
    assert d2([torch.randn(2, 1, 12, 12), torch.randn(2, 2, 6, 9)]).shape == (2, 1)
