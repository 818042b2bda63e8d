import pytest
import torch

from medgen.errors import ConfigError
from medgen.networks import DCGANDiscriminator, DCGANGenerator


def test_anogan_defaults():
    g = DCGANGenerator()
    assert g.channels == (512, 256, 128, 64) and g.latent_dim == 100
    x = g(torch.randn(2, 100))
    assert x.shape == (2, 1, 64, 64) and x.abs().max() <= 1
    d = DCGANDiscriminator()
    logits, feats = d(x, return_features=True)
    assert logits.shape == (2, 1)
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]


@pytest.mark.parametrize("spatial_dims,size", [(2, 32), (3, 8)])
def test_other_sizes_and_3d(spatial_dims, size):
    g = DCGANGenerator(spatial_dims, latent_dim=8, image_size=size, ngf=4)
    d = DCGANDiscriminator(spatial_dims, image_size=size, ndf=4)
    x = g(torch.randn(3, 8, *([1] * spatial_dims)))
    assert x.shape == (3, 1, *([size] * spatial_dims))
    assert d(x).shape == (3, 1)


def test_bad_size():
    with pytest.raises(ConfigError, match="power of 2"):
        DCGANGenerator(image_size=48)
    with pytest.raises(ConfigError, match="needs 4 channel entries"):
        DCGANGenerator(image_size=64, channels=(64, 32))
    with pytest.raises(ConfigError, match="expects"):
        DCGANDiscriminator(image_size=16, ndf=4)(torch.randn(1, 1, 32, 32))
