"""Schedules: values at the boundaries, fractional epochs, LambdaLR integration."""

from __future__ import annotations

import math

import pytest
import torch

from medgen.losses import LinearRamp, constant_then_linear_decay, kl_warmup, sigmoid_rampup


def test_linear_ramp_ea_gans_lambda_edge():
    ramp = LinearRamp(0.0, 100.0, start=0, duration=20)
    assert ramp(-1) == 0.0
    assert ramp(0) == 0.0
    assert ramp(1) == pytest.approx(5.0)  # Ea-GANs: lambda / 20 * epoch
    assert ramp(10.5) == pytest.approx(52.5)
    assert ramp(20) == 100.0
    assert ramp(150) == 100.0
    offset = LinearRamp(1.0, 0.0, start=5, duration=10)
    assert offset(5) == 1.0 and offset(10) == pytest.approx(0.5) and offset(15) == 0.0
    step = LinearRamp(0.0, 1.0, start=3, duration=0)
    assert step(2.999) == 0.0 and step(3) == 1.0


def test_kl_warmup():
    assert kl_warmup(0, 0.05) == 0.0
    assert kl_warmup(10, 0.05) == pytest.approx(0.5)
    assert kl_warmup(20, 0.05) == pytest.approx(1.0)
    assert kl_warmup(40, 0.05) == 1.0
    assert kl_warmup(4, 0.3) == 1.0  # capped (the reference would reach 1.2)
    assert kl_warmup(1, 1.0) == 1.0


def test_constant_then_linear_decay_boundaries_and_lambda_lr():
    f = constant_then_linear_decay(100, 50)
    assert f(0) == 1.0 and f(99) == 1.0 and f(100) == 1.0
    assert f(101) == pytest.approx(1 - 1 / 50)
    assert f(149) == pytest.approx(1 / 50)
    assert f(150) == 0.0 and f(400) == 0.0
    assert f(125) == pytest.approx(0.5)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, constant_then_linear_decay(2, 4))
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([2e-4, 2e-4, 2e-4, 1.5e-4, 1e-4, 0.5e-4, 0.0])
    assert constant_then_linear_decay(3, 0)(3) == 0.0


def test_sigmoid_rampup():
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(5, 10) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(10, 10) == 1.0 and sigmoid_rampup(50, 10) == 1.0
    assert sigmoid_rampup(3, 0) == 1.0
