"""The time a run will take, said before its first step when a paper-sized config is started on a CPU."""
import torch

import medgen.pipelines._template  # noqa: F401
from medgen.engine.commands import build_config
from medgen.engine.estimate import estimate_message, forward_gflop, step_estimate


def _template(*overrides):
    cls, cfg = build_config("template_translation", None, ["data.dataset=unused", *overrides])
    p = cls(cfg)
    p.networks = p.build_networks()
    return p


def test_meta_flops_equal_the_count_on_real_tensors():
    from torch.utils.flop_counter import FlopCounterMode

    p = _template("data.patch_size=[16,16,16]")
    x = torch.rand(2, 1, 16, 16, 16)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        p.networks["G"](x)
    assert forward_gflop(p.networks["G"], x) == counter.get_total_flops() / 1e9
    est = step_estimate(p, batch_size=2)
    assert abs(est["gflop"] - 3 * counter.get_total_flops() / 1e9) < 1e-12 and est["gflop_per_s"] > 0


def test_a_big_network_on_a_cpu_is_announced_and_a_small_one_is_not():
    big = _template("data.patch_size=[64,64,64]", "model.ngf=32")  # about 7M parameters
    said = estimate_message(big, batch_size=4, steps=100_000)
    assert said.startswith("before the first step: each step will take at least") and "GFLOP" in said
    assert estimate_message(big, batch_size=4, steps=100_000, threshold_s=1e12) is None
    small = _template("data.patch_size=[16,16,16]")
    assert estimate_message(small, batch_size=2, steps=100_000) is None  # below the size that is counted
