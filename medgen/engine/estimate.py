"""How long a run will take, said before its first step: a paper-sized config started on a CPU takes minutes per
step, and a user should learn that before waiting for the first one.

The estimate is a lower bound built from things that cost well under a second: the FLOPs of the prediction
network's forward pass at the training batch size, counted by torch's FlopCounterMode on the meta device (shapes
only: no memory, no arithmetic), times 3 for forward and backward (the usual rule: backward costs about twice
the forward), divided by the device's measured dense matrix-multiply rate (`medgen.flops.matmul_tflops`).
Discriminators, critics, data loading and the lower efficiency of convolutions than of matrix products all make
the real step slower, so the message says "at least"; the first step's real duration is announced after it.
Counting on the meta device costs a few seconds once per process (torch loads its meta kernels), so it is done
only for networks of at least MIN_PARAMETERS parameters: the paper-sized ones, never the smoke configs.
"""

from __future__ import annotations

import torch

MIN_PARAMETERS = 1_000_000  # paper configs: 1.9M (mr_to_ct) to 167M (mr_synthesis); smoke configs: < 0.4M


def forward_gflop(network: torch.nn.Module, example: torch.Tensor) -> float:
    """GFLOP of one forward pass of `network` on `example`, counted on the meta device."""
    from torch.func import functional_call
    from torch.utils.flop_counter import FlopCounterMode

    state = {k: torch.empty_like(v, device="meta") for k, v in network.state_dict(keep_vars=True).items()}
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        functional_call(network, state, (example.to("meta"),))
    return counter.get_total_flops() / 1e9


def step_estimate(pipeline, batch_size: int) -> dict | None:
    """{"gflop", "gflop_per_s", "seconds"} for one training step at `batch_size` (a lower bound), or None when
    the pipeline declares no example input (`export_examples`) or the count fails."""
    from medgen.flops import matmul_tflops

    examples = pipeline.export_examples()
    if not examples:
        return None
    try:
        gflop = 0.0
        for name, example in examples.items():
            batch = example.expand(batch_size, *example.shape[1:])
            gflop += 3.0 * forward_gflop(pipeline.networks[name], batch)
    except Exception:  # noqa: BLE001 - an estimate that cannot be made is left out, never fatal
        return None
    rate = matmul_tflops(pipeline.device, 512, torch.float32, min_seconds=0.1, max_reps=20) * 1e3
    return {"gflop": gflop, "gflop_per_s": rate, "seconds": gflop / rate}


def estimate_message(pipeline, batch_size: int, steps: int, threshold_s: float = 600.0) -> str | None:
    """The line to print before the first step when the run would take longer than `threshold_s` on a CPU."""
    if pipeline.device.type != "cpu" or steps <= 0:
        return None
    examples = pipeline.export_examples()
    size = sum(p.numel() for name in examples for p in pipeline.networks[name].parameters())
    if size < MIN_PARAMETERS:
        return None
    est = step_estimate(pipeline, batch_size)
    if est is None or est["seconds"] * steps < threshold_s:
        return None
    from medgen.engine.trainer import _hours

    return (f"before the first step: each step will take at least {est['seconds']:.1f} s on this CPU "
            f"({est['gflop']:.0f} GFLOP for the forward and backward pass of the prediction network at batch "
            f"{batch_size}, at the CPU's measured {est['gflop_per_s']:.0f} GFLOP/s), so the {steps} steps at least "
            f"{_hours(est['seconds'] * steps)}. A paper-sized config is meant for a GPU; for a quick try use the "
            "pipeline's smoke config (configs/<pipeline>_smoke.yaml)")
