import pytest
import torch
from torch import nn

from medgen.errors import ConfigError
from medgen.networks import UNetGenerator, unet_depth_for_patch


@pytest.mark.parametrize("spatial_dims,size", [(2, 32), (3, 16)])
def test_shapes_and_tanh_range(spatial_dims, size):
    net = UNetGenerator(spatial_dims, in_channels=2, out_channels=1, ngf=4, patch_size=size)
    x = torch.randn(2, 2, *([size] * spatial_dims))
    y = net(x)
    assert y.shape == (2, 1, *([size] * spatial_dims))
    assert y.abs().max() <= 1.0
    assert net.num_downs == int(torch.log2(torch.tensor(size)).item())


def test_depth_from_patch_and_channel_cap():
    assert unet_depth_for_patch((128, 128, 128)) == 7  # Ea-GANs: 7 levels for 128^3
    assert unet_depth_for_patch((256, 256)) == 8  # pix2pix
    assert unet_depth_for_patch((64, 64, 32)) == 5
    assert unet_depth_for_patch((48, 48)) == 4  # 48 = 3 * 16
    net = UNetGenerator(3, ngf=2, patch_size=128)  # ngf doubling, capped at 8 * ngf
    assert net.channels == (2, 4, 8, 16, 16, 16, 16)


def test_bad_patch_size_is_a_config_error():
    with pytest.raises(ConfigError, match="not divisible by 2\\*\\*num_downs = 16"):
        UNetGenerator(3, ngf=4, num_downs=4, patch_size=24)
    with pytest.raises(ConfigError, match="num_downs"):
        UNetGenerator(3)
    net = UNetGenerator(2, ngf=4, num_downs=3)
    with pytest.raises(ConfigError, match="divisible"):
        net(torch.randn(1, 1, 20, 20))


def test_pix2pix_dropout_blocks_and_no_norm_at_ends():
    # pix2pix: num_downs - 5 dropout blocks next to the innermost level (2 for 7 levels)
    net = UNetGenerator(3, ngf=2, num_downs=7, dropout=0.5)
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 2 and all(d.p == 0.5 for d in drops)
    assert [any(isinstance(m, nn.Dropout) for m in blk.modules()) for blk in net.up] == [False] * 4 + [True] * 2 + [False]
    # outermost down and innermost down have no norm
    assert not any(isinstance(m, nn.BatchNorm3d) for m in net.down[0].modules())
    assert not any(isinstance(m, nn.BatchNorm3d) for m in net.down[-1].modules())
    inst = UNetGenerator(2, ngf=2, num_downs=3, norm="instance")
    assert any(isinstance(m, nn.InstanceNorm2d) for m in inst.modules())


def test_features_linear_output_and_residual():
    net = UNetGenerator(2, 1, 1, ngf=4, num_downs=3, out_act="linear", residual=True).eval()
    x = torch.randn(1, 1, 16, 16)
    y, feats = net(x, return_features=True)
    # encoder outermost -> innermost, then decoder innermost -> up
    assert [tuple(f.shape[1:]) for f in feats] == [(4, 8, 8), (8, 4, 4), (16, 2, 2), (8, 4, 4), (4, 8, 8)]
    for p in net.up[0].parameters():
        nn.init.zeros_(p)
    assert torch.allclose(net(x), x)  # zero last layer + residual = identity
