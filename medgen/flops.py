"""FLOPs of one training step and the device's dense matrix-multiply rate, so that a pipeline's speed reads
as a fraction of what the chip can do (`medgen gpu-check`, `python -m medgen.bench --flops`).

FLOPs are counted by torch's `torch.utils.flop_counter.FlopCounterMode`: matrix products, convolutions and
attention, forward and backward, at 2 FLOPs per multiply-add; elementwise work is not counted, so the
achieved rate it gives is a lower bound on what the chip did.
"""

from __future__ import annotations

import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _GlobalOnly:
    """Stands in for FlopCounterMode's per-module tracker: every count goes to the one "Global" total.

    Why: the tracker puts backward hooks on module inputs, and `torch.autograd.grad` refuses them ("A leaf
    node was passed to _will_engine_execute_node but we are currently running autograd.grad()"), so the
    WGAN-GP gradient penalty (a double backward, oct_anogan) cannot be counted with it. The FLOP formulas,
    which are what the total is made of, do not depend on it."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def _count(run, track_modules: bool) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    if not track_modules:
        if not hasattr(counter, "mod_tracker"):
            raise RuntimeError("this torch's FlopCounterMode has no module tracker to switch off")
        counter.mod_tracker = _GlobalOnly()
    with counter:
        run()
    return int(counter.get_total_flops())


def count_step_flops(trainer, batches) -> dict:
    """FLOPs of one full training step, `trainer.run_step(batches)` (critic updates and the train step, under
    the run's autocast), with `batches` an iterator of batches. The step really runs (it updates the weights).

    Returns {"step_gflop", "flops_counted_by"} and, where module tracking had to be switched off, "flops_note";
    {"step_gflop": None, "flops_error"} when nothing could be counted."""
    device = trainer.device
    try:
        flops = _count(lambda: trainer.run_step(batches), track_modules=True)
        _sync(device)
        return {"step_gflop": flops / 1e9, "flops_counted_by": "FlopCounterMode"}
    except RuntimeError as first:
        reason = str(first).strip().splitlines()[0][:160]
    try:
        flops = _count(lambda: trainer.run_step(batches), track_modules=False)
        _sync(device)
    except Exception as err:  # report, do not fail the bench: the timing is still valid
        return {"step_gflop": None, "flops_error": f"{type(err).__name__}: {str(err).strip()[:160]}",
                "flops_note": f"FlopCounterMode failed: {reason}"}
    return {"step_gflop": flops / 1e9, "flops_counted_by": "FlopCounterMode, module tracking off",
            "flops_note": f"FlopCounterMode's module tracker failed ({reason}); counted again with it off: "
                          "the same per-op formulas, double backward included"}


def matmul_tflops(device: torch.device, n: int, dtype: torch.dtype, fp32_precision: str = "highest",
                  min_seconds: float = 0.5, max_reps: int = 100) -> float:
    """Dense n x n x n matrix-product rate in TFLOP/s (2 n^3 FLOPs per product) on random data.

    `fp32_precision` is torch's float32 matmul precision during the probe: "highest" (true fp32) or "high"
    (TF32 tensor cores on CUDA). After warm-up, one product is timed to size a block of products that runs
    about `min_seconds`, and the block is timed with one synchronisation at its end."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    c = torch.empty(n, n, device=device, dtype=dtype)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(fp32_precision)
    try:
        for _ in range(3):
            torch.mm(a, b, out=c)
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        _sync(device)
        one = max(time.perf_counter() - t0, 1e-9)
        reps = int(min(max_reps, max(3, min_seconds / one)))
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=c)
        _sync(device)
        seconds = time.perf_counter() - t0
    finally:
        torch.set_float32_matmul_precision(previous)
    return 2.0 * n**3 * reps / seconds / 1e12


def matmul_probe(device: torch.device, n: int | None = None) -> dict:
    """The dense matmul rates the pipelines are compared with: bf16, fp32 and (CUDA) TF32.

    Default size: 8192 on CUDA (large enough to reach the tensor cores' peak: an H200 gives about 790 TFLOP/s
    in bf16), 1024 on a CPU (a few seconds in all)."""
    n = n or (8192 if device.type == "cuda" else 1024)
    seconds = 0.5 if device.type == "cuda" else 0.3
    probe = {"size": n, "device": str(device)}
    probe["bf16_tflops"] = matmul_tflops(device, n, torch.bfloat16, min_seconds=seconds)
    probe["fp32_tflops"] = matmul_tflops(device, n, torch.float32, "highest", min_seconds=seconds)
    probe["tf32_tflops"] = (matmul_tflops(device, n, torch.float32, "high", min_seconds=seconds)
                            if device.type == "cuda" else None)
    return probe
