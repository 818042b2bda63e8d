import pytest
import torch

from medgen.errors import ConfigError
from medgen.networks import NieFCN


def test_paper_size_arithmetic():
    net = NieFCN(3)
    assert net.margin == 8  # two 9^3 valid convs, 4 voxels per side each
    assert net.output_size(32) == (16, 16, 16)
    assert net.input_size(16) == (32, 32, 32)
    assert net.input_size((16, 8, 4)) == (32, 24, 20)
    # the paper's layer widths
    assert [layer.conv.out_channels for layer in net.layers] == [32, 32, 32, 32, 64, 64, 64, 32]
    assert [layer.conv.kernel_size[0] for layer in net.layers] == [9, 3, 3, 3, 9, 3, 3, 3]


def test_bad_sizes_are_config_errors():
    net = NieFCN(3, channels=(2,) * 8)
    with pytest.raises(ConfigError, match="at least 17"):
        net.output_size(16)
    with pytest.raises(ConfigError, match="too small"):
        net(torch.randn(1, 1, 16, 16, 16))
    with pytest.raises(ConfigError, match="one entry per layer"):
        NieFCN(3, channels=(4, 4))


def test_forward_3d_autocontext_channels_and_features():
    net = NieFCN(3, in_channels=2, out_channels=1, channels=(4, 4, 4, 4, 6, 6, 6, 4))
    x = torch.randn(2, 2, 20, 24, 18)
    y, feats = net(x, return_features=True)
    assert y.shape == (2, 1, 4, 8, 2)
    assert [f.shape[2] for f in feats] == [12, 12, 12, 12, 4, 4, 4, 4]


def test_forward_2d():
    net = NieFCN(2, channels=(4,) * 8)
    assert net(torch.randn(1, 1, 32, 32)).shape == (1, 1, 16, 16)
