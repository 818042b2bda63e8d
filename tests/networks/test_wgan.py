import pytest
import torch
from torch import nn

from medgen.networks import IziEncoder, WGANResNetCritic, WGANResNetGenerator


def test_fanogan_64px_topology():
    g = WGANResNetGenerator(dim=8)
    c = WGANResNetCritic(dim=8)
    assert g.latent_dim == 128 and len(g.blocks) == 4 and len(c.blocks) == 4
    x = g(torch.randn(2, 128))
    assert x.shape == (2, 1, 64, 64) and x.abs().max() <= 1
    out, feats = c(x, return_features=True)
    assert out.shape == (2, 1)
    assert feats[-1].shape == (2, 8 * 8 * 4 * 4)  # penultimate: 8*dim x 4 x 4 flattened
    # no batch norm anywhere in the critic (gradient penalty)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in c.modules())
    assert any(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in c.modules())


@pytest.mark.parametrize("spatial_dims,size", [(2, 16), (3, 8)])
def test_gradient_penalty_and_encoder(spatial_dims, size):
    g = WGANResNetGenerator(spatial_dims, latent_dim=16, image_size=size, dim=4)
    c = WGANResNetCritic(spatial_dims, image_size=size, dim=4)
    e = IziEncoder(spatial_dims, image_size=size, dim=4, latent_dim=16)
    x = g(torch.randn(3, 16)).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(c(x).sum(), x, create_graph=True)
    gp = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    gp.backward()  # double backward works through the critic
    assert next(c.parameters()).grad is not None
    z = e(x)
    assert z.shape == (3, 16) and z.abs().max() < 1  # tanh-bounded latent
    assert e(x, return_features=True)[1][-1].shape[1] == c.feature_dim
