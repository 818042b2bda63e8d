import pytest
import torch

from medgen.errors import ConfigError
from medgen.networks import NieDiscriminator, PatchDiscriminator


def test_receptive_field_hand_values():
    assert PatchDiscriminator(2, n_layers=3).receptive_field == 70  # the "70x70 PatchGAN"
    assert PatchDiscriminator(2, n_layers=1).receptive_field == 16
    assert PatchDiscriminator(2, n_layers=2).receptive_field == 34
    assert PatchDiscriminator(3, n_layers=4).receptive_field == 142


def test_receptive_field_matches_gradient_support():
    net = PatchDiscriminator(2, in_channels=1, ndf=2, n_layers=3, norm="none")
    x = torch.randn(1, 1, 128, 128, requires_grad=True)
    y = net(x)
    assert y.shape[2:] == net.output_size(128) == (14, 14)
    y[0, 0, 7, 7].backward()
    rows = (x.grad[0, 0].abs().sum(1) > 0).nonzero().flatten()
    assert rows.max() - rows.min() + 1 == 70


def test_pix2pix_output_size_conditional_and_features():
    assert PatchDiscriminator(2).output_size(256) == (30, 30)  # pix2pix: 30x30 patches for 256 px
    net = PatchDiscriminator(3, in_channels=3, ndf=4, n_layers=2, norm="instance")
    img, cond = torch.randn(2, 1, 16, 16, 16), torch.randn(2, 2, 16, 16, 16)
    logits, feats = net(img, cond, return_features=True)
    assert torch.equal(logits, net(torch.cat([cond, img], 1)))  # condition first
    assert logits.shape == (2, 1, 2, 2, 2)
    assert len(feats) == 3 and feats[-1].shape[1] == 16
    with pytest.raises(ConfigError, match="at least"):
        net(torch.randn(1, 3, 8, 8, 8))


def test_ct_discriminator_linear_logit():
    net = NieDiscriminator(3, channels=(4, 4, 4, 4), fc_channels=8)
    x = torch.randn(6, 1, 16, 16, 16)
    logit, feats = net(x, return_features=True)
    assert logit.shape == (6, 1)
    assert feats[3].shape == (6, 4, 6, 6, 6) and feats[-1].shape == (6, 8)
    with torch.no_grad():
        net.fc2.bias.fill_(-5.0)
    assert (net(x) < 0).all()  # no ReLU on the logit (the reference's bug)
    with pytest.raises(ConfigError):
        net(torch.randn(1, 1, 20, 20, 20))
