import torch
from torch import nn

from medgen.networks import TybaltVAE, AdageAutoencoder, MLPDecoder, MLPEncoder


def test_tybalt_defaults_and_variants():
    vae = TybaltVAE()
    lin = [m for m in vae.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(5000, 100), (5000, 100), (100, 5000)]
    v2 = TybaltVAE(5000, 100, hidden_sizes=(300,))
    lin = [m for m in v2.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(5000, 300), (300, 100), (300, 100), (100, 300), (300, 5000)]


def test_vae_forward_sampling_and_heads():
    vae = TybaltVAE(40, 6, hidden_sizes=(12,))
    x = torch.rand(8, 40)
    recon, mu, logvar, z = vae(x)
    assert recon.shape == (8, 40) and mu.shape == logvar.shape == z.shape == (8, 6)
    assert (recon > 0).all() and (recon < 1).all()
    assert not torch.allclose(z, mu)  # training mode samples
    vae.eval()
    recon, mu, logvar, z = vae(x)
    assert torch.equal(z, mu)  # eval: deterministic latent
    # reparameterisation: z = mu + exp(logvar / 2) * eps, eps ~ N(0, 1)
    torch.manual_seed(1)
    z_s = vae.reparameterize(mu, logvar)
    torch.manual_seed(1)
    eps = torch.randn_like(mu)
    assert torch.allclose(z_s, mu + torch.exp(logvar / 2) * eps)


def test_head_relu_quirk():
    enc = MLPEncoder(20, 4, head_relu=True)
    mu, logvar = enc(torch.randn(16, 20))
    assert (logvar >= 0).all() and (mu >= 0).all()  # sigma >= 1: the reference quirk
    enc = MLPEncoder(20, 4)
    mu, logvar = enc(torch.randn(16, 20))
    assert (logvar < 0).any()
    assert MLPEncoder(20, 4, variational=False)(torch.randn(2, 20)).shape == (2, 4)
    assert MLPDecoder(4, 20, hidden_sizes=(8,))(torch.randn(2, 4)).shape == (2, 20)


def test_dae_tied_and_corruption():
    dae = AdageAutoencoder(200, 10, corruption=0.3, tied=True)
    assert sum(p.numel() for p in dae.parameters()) == 200 * 10 + 10 + 200
    x = torch.ones(50, 200)
    assert abs((dae.corrupt(x) == 0).float().mean().item() - 0.3) < 0.03
    recon, h = dae(torch.rand(4, 200))
    assert recon.shape == (4, 200) and h.shape == (4, 10)
    dae.eval()
    xe = torch.rand(4, 200)
    assert torch.allclose(dae(xe)[1], torch.sigmoid(dae.encoder(xe)))  # no corruption in eval
    untied = AdageAutoencoder(200, 10, tied=False)
    assert untied.decoder.weight.shape == (200, 10)
