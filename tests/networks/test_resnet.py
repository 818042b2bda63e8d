import pytest
import torch
from torch import nn

from medgen.errors import ConfigError
from medgen.networks import ResNetGenerator


@pytest.mark.parametrize("spatial_dims,size", [(2, 32), (3, 16)])
def test_shapes(spatial_dims, size):
    net = ResNetGenerator(spatial_dims, 2, 1, ngf=4, n_blocks=2)
    x = torch.randn(2, 2, *([size] * spatial_dims))
    y, feats = net(x, return_features=True)
    assert y.shape == (2, 1, *([size] * spatial_dims)) and y.abs().max() <= 1
    assert len(feats) == 3  # encoder output + one per residual block
    assert feats[0].shape == (2, 16, *([size // 4] * spatial_dims))


def test_reflect_padding_and_divisibility():
    net = ResNetGenerator(3, ngf=2, n_blocks=1)
    assert any(isinstance(m, nn.ReflectionPad3d) for m in net.modules())
    with pytest.raises(ConfigError, match="divisible by 4"):
        net(torch.randn(1, 1, 18, 16, 16))
