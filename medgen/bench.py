"""`medgen bench`: speed and memory of every pipeline, measured in one run so ratios are meaningful.

Per pipeline (at its config's default sizes, on the chosen device):
- training throughput (steps/s, samples/s and, for 3D, voxels/s) over a few steps after warm-up;
- data-loading throughput of the same training dataset, next to the step throughput;
- inference time of one whole case: a synthetic 256^3 volume for the 3D pipelines, the first test case (a
  B-scan, a matrix split) for the others;
- peak memory: process RSS on CPU, max allocated on GPU;
- the same training-step measurement for a "plain" setting of the same networks (fp32, eager, no compile,
  the way a MONAI tutorial would run them) and the ratio medgen / plain;
- with `--flops`, one training step's FLOPs (medgen.flops; `medgen gpu-check` turns them into TFLOP/s).

Each pipeline is measured in a fresh subprocess so peak RSS belongs to it alone.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure_steps(trainer, batches, steps: int, warmup: int) -> float:
    p = trainer.pipeline
    for net in p.networks.values():
        net.train()
    times = []
    source = itertools.cycle(batches)
    for i in range(warmup + steps):
        _sync(trainer.device)
        t0 = time.perf_counter()
        trainer.run_step(source)  # the trainer's own step: critic steps and the train step, under its autocast
        _sync(trainer.device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]  # median seconds per step


def bench_one(name: str, config: str | None, overrides: list[str], steps: int, warmup: int, volume: int,
              plain: bool = True, flops: bool = False) -> dict:
    """Measure one pipeline in this process; `flops`: also count one training step's FLOPs (medgen.flops)."""
    from medgen.engine.commands import build_config
    from medgen.engine.logging import RunLogger
    from medgen.engine.sampling import StepSampler
    from medgen.engine.trainer import Trainer, resolve_device

    cls, cfg = build_config(name, config, overrides)
    device = resolve_device(cfg.train.device)
    result: dict = {"pipeline": name, "device": str(device), "batch_size": cfg.train.batch_size}
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = cls(cfg, device)
        trainer = Trainer(pipeline, tmp)
        trainer.setup()
        trainer.logger = RunLogger(tmp, 1, enabled=False)
        dataset = trainer.dataset
        n_batches = max(2, (steps + warmup) * (pipeline.critic_steps + 1))
        # The trainer's own index stream (endless: a finite dataset such as expression_vae's samples starts a
        # new permutation per epoch), so the bench reads what training reads and never indexes past the end.
        stream = iter(StepSampler(dataset, cfg.train.batch_size, seed=cfg.train.seed))
        indices = [next(stream) for _ in range(n_batches * cfg.train.batch_size)]
        loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.train.batch_size, sampler=indices,
                                             num_workers=0)
        t0 = time.perf_counter()
        batches = list(loader)
        load_s = (time.perf_counter() - t0) / len(batches)
        result["data_batches_per_s"] = 1.0 / max(load_s, 1e-9)
        step_s = _measure_steps(trainer, batches, steps, warmup)
        result["step_s"] = step_s
        result["steps_per_s"] = 1.0 / step_s
        samples = cfg.train.batch_size * (pipeline.critic_steps + 1)
        result["samples_per_s"] = samples / step_s
        first = batches[0]
        image = next((v for v in first.values() if torch.is_tensor(v) and v.ndim >= 5), None)
        if image is not None:
            result["patch"] = list(image.shape[2:])
            result["voxels_per_s"] = float(image[0, 0].numel()) * samples / step_s
        result["loader_is_bottleneck"] = load_s > step_s
        result["amp"] = str(trainer.amp)
        if plain:
            plain_trainer = Trainer(cls(cfg, device), tmp)
            plain_trainer.tcfg.amp, plain_trainer.tcfg.compile = "off", False
            plain_trainer.amp = None
            plain_trainer.setup()
            plain_trainer.logger = RunLogger(tmp, 1, enabled=False)
            plain_s = _measure_steps(plain_trainer, batches, steps, warmup)
            result["plain_step_s"] = plain_s
            result["speedup_vs_plain"] = plain_s / step_s
        if flops:  # after the timings: counting runs one more step
            from medgen.flops import count_step_flops

            result.update(count_step_flops(trainer, itertools.cycle(batches)))
        result.update(_inference(pipeline, volume))
    result["peak_memory_mb"] = peak_memory_mb(device)
    return result


def _inference(pipeline, size: int) -> dict:
    """Time of `predict_case` on one whole case: for volumes a synthetic size^3 volume of every input key (the
    sliding-window path at a known size), otherwise the first test case of the dataset (a B-scan, a split)."""
    from medgen.data.cases import Case

    if pipeline.spatial_dims == 3:
        if not size:
            return {}
        keys = [k.name for k in pipeline.case_keys() if k.role == "input"]
        case = Case(id="bench", split="test", arrays={k: torch.rand(1, size, size, size) for k in keys})
        result = {"volume": size}
    else:
        from medgen.errors import MedgenError

        try:
            cases = pipeline.data.load("test") or pipeline.data.load("validation")
        except MedgenError as e:  # a pipeline that generates its training data (the engine's toy) has no cases
            return {"inference_note": f"no test case to time: {e}"}
        if not cases:
            return {}
        case = cases[0]
        result = {"case_shape": list(next(iter(case.arrays.values())).shape)}
    for net in pipeline.networks.values():
        net.eval()
    _sync(pipeline.device)
    t0 = time.perf_counter()
    with torch.no_grad(), pipeline._engine.autocast():
        pipeline.predict_case(case)
    _sync(pipeline.device)
    key = "volume_inference_s" if pipeline.spatial_dims == 3 else "case_inference_s"
    return {**result, key: time.perf_counter() - t0}


def memory_scaling(sizes=(128, 192, 256), ngf: int = 64, window: int = 64, window_batch: int = 4,
                   overlap: float = 0.25) -> list[dict]:
    """Peak RSS of whole-volume sliding-window inference with the pix2pix 3D U-Net, one subprocess per size."""
    rows = []
    for size in sizes:
        code = (
            "import json, resource, time, torch\n"
            "from medgen.registry import NETWORKS\n"
            "from medgen.inference.windows import sliding_window\n"
            f"net = NETWORKS.build('unet_generator', 3, in_channels=1, out_channels=1, ngf={ngf}, patch_size=[{window}]*3).eval()\n"
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
            f"x = torch.rand(1, 1, {size}, {size}, {size})\n"
            "t0 = time.perf_counter()\n"
            "with torch.no_grad():\n"
            f"    out = sliding_window(net, x, [{window}]*3, overlap={overlap}, window_batch={window_batch}, stitch_on_cpu='always')\n"
            "print(json.dumps({'size': %d, 'seconds': time.perf_counter() - t0, 'peak_rss_mb': "
            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 'rss_before_mb': base}))\n" % size
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            rows.append({"size": size, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return fit_memory_slope(rows)


def fit_memory_slope(rows: list[dict]) -> list[dict]:
    """Add the least-squares line peak RSS (MB) = slope x million voxels + intercept to every row, when at least
    two sizes were measured."""
    good = [r for r in rows if "peak_rss_mb" in r]
    if len(good) >= 2:
        import numpy as np

        mvox = np.array([r["size"] ** 3 / 1e6 for r in good])
        rss = np.array([r["peak_rss_mb"] for r in good])
        slope, intercept = np.polyfit(mvox, rss, 1)
        for r in rows:
            r["slope_mb_per_mvoxel"], r["intercept_mb"] = float(slope), float(intercept)
    return rows


def run_in_subprocess(name: str, config, overrides, steps, warmup, volume, timeout=3600, extra_args=()) -> dict:
    cmd = [sys.executable, "-m", "medgen.bench", name, *overrides, "--steps", str(steps), "--warmup", str(warmup),
           "--volume", str(volume), *extra_args]
    if config:
        cmd += ["-c", str(config)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"pipeline": name, "error": [f"timed out after {timeout:g} s"]}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"pipeline": name, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["failed"]}
    return json.loads(lines[-1])


COLUMNS = [("pipeline", "{}"), ("device", "{}"), ("steps_per_s", "{:.3g}"), ("samples_per_s", "{:.3g}"),
           ("voxels_per_s", "{:.3g}"), ("data_batches_per_s", "{:.3g}"), ("speedup_vs_plain", "{:.2f}"),
           ("volume_inference_s", "{:.1f}"), ("case_inference_s", "{:.3g}"), ("peak_memory_mb", "{:.0f}")]


def format_results(results: list[dict]) -> str:
    header = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    rows = [header, "|" + "---|" * len(COLUMNS)]
    for r in results:
        cells = []
        for col, fmt in COLUMNS:
            v = r.get(col)
            cells.append("-" if v is None else (fmt.format(v) if not isinstance(v, str) else v))
        if "error" in r:
            cells[1] = "error: " + " ".join(r["error"])[:80]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m medgen.bench", description="measure one pipeline (JSON line)")
    parser.add_argument("pipeline")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("-c", "--config", default=None)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--volume", type=int, default=256)
    parser.add_argument("--flops", action="store_true", help="also count one training step's FLOPs")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    print(json.dumps(bench_one(args.pipeline, args.config, args.overrides, args.steps, args.warmup, args.volume,
                               flops=args.flops)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
