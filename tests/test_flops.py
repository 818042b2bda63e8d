"""medgen.flops: FLOPs of a training step (also through a double backward) and the matmul probe."""

import math
from types import SimpleNamespace

import torch

from medgen.flops import count_step_flops, matmul_probe, matmul_tflops

B, IN, OUT = 4, 8, 16
MM = 2 * B * IN * OUT  # one (B x IN) @ (IN x OUT) product at 2 FLOPs per multiply-add


def _trainer(step):
    return SimpleNamespace(device=torch.device("cpu"), run_step=step)


def test_counts_forward_and_backward_of_one_step():
    lin = torch.nn.Linear(IN, OUT, bias=False)

    def step(batches):
        lin(next(batches)).sum().backward()

    r = count_step_flops(_trainer(step), iter([torch.randn(B, IN)]))
    # forward product + weight gradient (the input needs no gradient)
    assert r == {"step_gflop": 2 * MM / 1e9, "flops_counted_by": "FlopCounterMode"}


def test_gradient_penalty_double_backward_is_counted_with_module_tracking_off():
    lin = torch.nn.Linear(IN, OUT, bias=False)

    def penalty_step(batches):  # the shape of WGAN-GP: autograd.grad with create_graph, then backward
        x = next(batches).requires_grad_(True)
        (grad,) = torch.autograd.grad(lin(x).sum(), x, create_graph=True)
        grad.square().sum().backward()

    r = count_step_flops(_trainer(penalty_step), iter([torch.randn(B, IN)] * 2))
    # forward, input gradient, and the weight gradient through the input gradient: three products
    assert r["step_gflop"] == 3 * MM / 1e9
    assert r["flops_counted_by"] == "FlopCounterMode, module tracking off" and "autograd.grad" in r["flops_note"]


def test_an_uncountable_step_is_reported_not_raised():
    def broken(batches):
        raise RuntimeError("boom")

    r = count_step_flops(_trainer(broken), iter([]))
    assert r["step_gflop"] is None and "boom" in r["flops_error"]


def test_matmul_probe_on_cpu():
    before = torch.get_float32_matmul_precision()
    assert 0 < matmul_tflops(torch.device("cpu"), 64, torch.float32, min_seconds=0.01) < 100
    probe = matmul_probe(torch.device("cpu"), 128)
    assert probe["size"] == 128 and probe["tf32_tflops"] is None  # TF32 is a CUDA mode
    assert all(math.isfinite(probe[k]) and probe[k] > 0 for k in ("bf16_tflops", "fp32_tflops"))
    assert torch.get_float32_matmul_precision() == before  # the probe restores torch's setting
