"""The WGAN-GP penalty under mixed precision: computed in fp32 inside a bf16 autocast region it is the fp32
penalty (value and the gradient that trains the critic); computed under bf16 its value stays within tolerance;
on CUDA, TF32 convolutions give the fp32 penalty within tolerance. f-AnoGAN's one critic pass over real and fake
gives the scores of two passes."""

from __future__ import annotations

import pytest
import torch

from medgen.errors import MedgenError
from medgen.losses import gradient_penalty
from medgen.registry import NETWORKS


def _nets(device="cpu"):
    torch.manual_seed(0)
    D = NETWORKS.build("wgan_resnet_critic", 2, 1, 16, 8).to(device)
    G = NETWORKS.build("wgan_resnet_generator", 2, 16, 1, 16, 8).to(device)
    x = torch.rand(6, 1, 16, 16, device=device) * 2 - 1
    with torch.no_grad():
        fake = G(torch.randn(6, 16, device=device))
    return D, x, fake


def _penalty(D, x, fake, autocast, precision):
    D.zero_grad()
    torch.manual_seed(1)  # the same interpolation weights every call
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        gp = gradient_penalty(D, x, fake, 10.0, precision=precision)
    gp.backward()
    grads = torch.cat([q.grad.flatten() for q in D.parameters() if q.grad is not None])
    return gp.detach(), grads


def test_fp32_penalty_inside_bf16_autocast_is_the_fp32_penalty():
    D, x, fake = _nets()
    ref, ref_grad = _penalty(D, x, fake, autocast=False, precision="fp32")
    got, got_grad = _penalty(D, x, fake, autocast=True, precision="fp32")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_grad, ref_grad, rtol=1e-5, atol=1e-7)


def test_bf16_penalty_value_within_tolerance():
    D, x, fake = _nets()
    ref, _ = _penalty(D, x, fake, autocast=False, precision="fp32")
    got, _ = _penalty(D, x, fake, autocast=True, precision="amp")
    assert float(ref) > 1.0  # a penalty far from zero: the comparison means something
    assert abs(float(got) - float(ref)) <= 0.02 * float(ref)
    with pytest.raises(MedgenError, match="precision"):
        gradient_penalty(D, x, fake, precision="fp16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="TF32 exists only on CUDA")
def test_tf32_penalty_within_tolerance_of_fp32():
    D, x, fake = _nets("cuda")
    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        ref, ref_grad = _penalty(D, x, fake, autocast=False, precision="fp32")
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        got, got_grad = _penalty(D, x, fake, autocast=False, precision="fp32")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
    assert abs(float(got) - float(ref)) <= 1e-2 * float(ref)
    assert float((got_grad - ref_grad).norm() / ref_grad.norm()) < 0.05


def test_one_critic_pass_over_real_and_fake_equals_two():
    D, x, fake = _nets()
    both = D(torch.cat([x, fake]))
    torch.testing.assert_close(both, torch.cat([D(x), D(fake)]), rtol=1e-5, atol=1e-6)
