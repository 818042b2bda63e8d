"""The blocks on a CUDA device with mixed precision (skipped without one)."""

import pytest
import torch

from medgen.networks import DeepMedic, DomainDiscriminator, PatchDiscriminator, UNetGenerator, NieFCN

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_generators_and_discriminator_train_step_amp():
    dev = torch.device("cuda")
    g = UNetGenerator(3, 1, 1, ngf=16, patch_size=64).to(dev)
    d = PatchDiscriminator(3, 2, ndf=16).to(dev)
    x = torch.randn(2, 1, 64, 64, 64, device=dev)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = g(x)
        loss = d(y, x).float().mean() + (y.float() - x).abs().mean()
    loss.backward()
    assert y.shape == x.shape and all(p.grad is not None for p in g.parameters())
    fcn = NieFCN(3).to(dev)
    assert fcn(torch.randn(2, 1, 32, 32, 32, device=dev)).shape == (2, 1, 16, 16, 16)


def test_deepmedic_with_domain_discriminator_on_gpu():
    dev = torch.device("cuda")
    net = DeepMedic().to(dev)
    sizes = net.input_sizes(21)
    x = torch.randn(2, 1, *sizes.context, device=dev)
    logits, feats = net(x, return_features=True)
    assert logits.shape == (2, 2, 21, 21, 21)
    d = DomainDiscriminator(3, sum(net.feature_channels)).to(dev)
    d(feats).mean().backward()
    assert net.normal.layers[0].weight.grad is not None
