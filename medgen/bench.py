"""`medgen bench`: speed and memory of every pipeline, measured in one run so ratios are meaningful.

Per pipeline (at its config's default sizes, on the chosen device):
- training throughput (steps/s, samples/s and, for 3D, voxels/s) of medgen's step (its config's settings:
  bf16 autocast, fused optimizers, cuDNN autotuning on CUDA) over a few steps after warm-up, with the first
  step's time (compilation, autotuning) apart;
- data throughput of the trainer's own loader (batches cut on the device where `train.data_on_device` chose
  that, else the host DataLoader), its margin over what the step consumes, and, on the device path, the host
  loader's rate for comparison;
- inference time of one whole case: a synthetic 256^3 volume for the 3D pipelines, the first test case (a
  B-scan, a matrix split) for the others;
- peak memory: process RSS on CPU, max allocated on GPU;
- the same step in a "plain" setting of the same networks (fp32, eager, default optimizer kernels and
  layout, no cuDNN autotuning: the way a MONAI tutorial would run them) and the ratio medgen / plain, and
  any `VARIANTS` asked for, all on the same batches;
- the config's whole training length and its projected wall time at these rates;
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

from medgen.engine.trainer import move_batch


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure_steps(trainer, batches, steps: int, warmup: int) -> tuple[float, float]:
    """(median seconds per step over `steps` timed steps, seconds of the very first step: with compilation,
    cuDNN's algorithm search and first-touch allocations)."""
    p = trainer.pipeline
    for net in p.networks.values():
        net.train()
    times = []
    first = None
    source = itertools.cycle(batches)
    for i in range(warmup + steps):
        _sync(trainer.device)
        t0 = time.perf_counter()
        trainer.run_step(source)  # the trainer's own step: critic steps and the train step, under its autocast
        _sync(trainer.device)
        if first is None:
            first = time.perf_counter() - t0
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], first  # median seconds per step


# The plain step every ratio is taken against: fp32, eager, the optimizers' default kernels, torch's default
# layout and cuDNN heuristics (the way a MONAI tutorial runs the same networks).
PLAIN = ["train.amp=off", "train.compile=false", "train.fused_optimizer=off", "train.channels_last=false",
         "train.cudnn_benchmark=false"]
# Other settings timed on the same batches, in the same process: name -> (overrides, what the ratio shows).
VARIANTS = {
    "fp32": (["train.amp=off"], "medgen's settings with autocast off: what bf16 alone buys"),
    "channels_last": (["train.channels_last=true"], "channels-last (3D: channels_last_3d) networks and batches"),
    "compile": (["train.compile=true", "train.compile_mode=reduce-overhead"],
                "torch.compile, mode reduce-overhead (CUDA graphs); the first step's time is the compile time"),
}


def profile_step(trainer, batches, steps: int = 2, top: int = 12) -> list[dict]:
    """The operators that take the device's time over `steps` training steps (torch.profiler; on a CPU the
    host's time): name, self time per step (ms), calls per step and share of the total, largest first."""
    from torch.profiler import ProfilerActivity, profile

    cuda = trainer.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    source = itertools.cycle(batches)
    trainer.run_step(source)  # warm
    _sync(trainer.device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            trainer.run_step(source)
        _sync(trainer.device)

    def self_us(evt) -> float:
        if cuda:
            return float(getattr(evt, "self_device_time_total", getattr(evt, "self_cuda_time_total", 0.0)))
        return float(evt.self_cpu_time_total)

    events = [e for e in prof.key_averages() if self_us(e) > 0]
    total = sum(self_us(e) for e in events) or 1.0
    events.sort(key=self_us, reverse=True)
    return [{"name": e.key[:120], "self_ms_per_step": self_us(e) / 1e3 / steps, "calls_per_step": e.count / steps,
             "share": self_us(e) / total} for e in events[:top]]


def _trainer(cls, cfg, device, tmp, data=None):
    from medgen.engine.logging import RunLogger
    from medgen.engine.trainer import Trainer

    pipeline = cls(cfg, device)
    if data is not None:
        pipeline._data = data  # the cases already loaded: variants differ in settings, not data
    trainer = Trainer(pipeline, tmp)
    trainer.setup()
    trainer.logger = RunLogger(tmp, 1, enabled=False)
    return trainer


def _free(trainer, device) -> None:
    trainer.pipeline.networks.clear()
    trainer.pipeline.optimizers.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_one(name: str, config: str | None, overrides: list[str], steps: int, warmup: int, volume: int,
              plain: bool = True, flops: bool = False, variants=(), profile: bool = False) -> dict:
    """Measure one pipeline in this process; `flops`: also count one training step's FLOPs (medgen.flops);
    `variants`: names in VARIANTS timed on the same batches as medgen's default step; `profile`: the operators
    that take the step's time (`profile_step`), for medgen's step and the plain one."""
    from medgen.engine.commands import build_config
    from medgen.engine.sampling import StepSampler
    from medgen.engine.trainer import resolve_device

    cls, cfg = build_config(name, config, overrides)
    device = resolve_device(cfg.train.device)
    result: dict = {"pipeline": name, "device": str(device), "batch_size": cfg.train.batch_size}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _trainer(cls, cfg, device, tmp)
        pipeline, dataset = trainer.pipeline, trainer.dataset
        per_step = pipeline.critic_steps + 1
        result["batches_per_step"] = per_step
        n_batches = max(2, (steps + warmup) * per_step)
        # The trainer's own loader (batches cut on the device where train.data_on_device chose that), after one
        # untimed batch that pays for the one-time set-up (volumes copied to the device, workers started).
        loader = trainer._loader(0)
        next(loader)
        _sync(device)
        t0 = time.perf_counter()
        batches = [next(loader) for _ in range(n_batches)]
        _sync(device)
        load_s = (time.perf_counter() - t0) / n_batches
        result["data_batches_per_s"] = 1.0 / max(load_s, 1e-9)
        result["data_path"] = trainer.data_path
        if trainer.data_on_device:  # the host loader of the first GPU run (one process), for comparison
            stream = iter(StepSampler(dataset, cfg.train.batch_size, seed=cfg.train.seed))
            k = min(n_batches, 4)
            indices = [next(stream) for _ in range(k * cfg.train.batch_size)]
            host = torch.utils.data.DataLoader(dataset, batch_size=cfg.train.batch_size, sampler=indices)
            t0 = time.perf_counter()
            for batch in host:
                move_batch(batch, device)
            _sync(device)
            result["host_loader_batches_per_s"] = k / max(time.perf_counter() - t0, 1e-9)
        step_s, first_s = _measure_steps(trainer, batches, steps, warmup)
        result["step_s"] = step_s
        result["first_step_s"] = first_s
        result["steps_per_s"] = 1.0 / step_s
        samples = cfg.train.batch_size * per_step
        result["samples_per_s"] = samples / step_s
        result["loader_margin"] = result["data_batches_per_s"] / (per_step / step_s)  # batches made / batches used
        first = batches[0]
        image = next((v for v in _tensors(first) if v.ndim >= 5), None)
        if image is not None:
            result["patch"] = list(image.shape[2:])
            result["voxels_per_s"] = float(image[0, 0].numel()) * samples / step_s
        result["loader_is_bottleneck"] = load_s > step_s / per_step
        result["amp"] = str(trainer.amp)
        result["settings"] = {"data": trainer.data_path, "fused_optimizers": trainer.fused,
                              "channels_last": trainer.tcfg.channels_last, "compile": trainer.tcfg.compile,
                              "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}
        result["paper_steps"] = trainer.total_steps
        # the config's whole training at these rates, data and step added (the device path runs on the step's
        # stream, so they do not overlap)
        result["projected_train_h"] = trainer.total_steps * (step_s + per_step * load_s) / 3600
        if profile:
            result["profile"] = {"default": profile_step(trainer, batches)}
        if flops:  # counting runs one more step
            from medgen.flops import count_step_flops

            result.update(count_step_flops(trainer, itertools.cycle(batches)))
        result.update(_inference(pipeline, volume))
        result["peak_memory_mb"] = peak_memory_mb(device)  # medgen's step and inference (before the variants)
        data = pipeline._data
        if plain:
            _free(trainer, device)
            _, pcfg = build_config(name, config, [*overrides, *PLAIN])
            plain_trainer = _trainer(cls, pcfg, device, tmp, data)
            plain_s, _ = _measure_steps(plain_trainer, batches, steps, warmup)
            result["plain_step_s"] = plain_s
            result["speedup_vs_plain"] = plain_s / step_s
            if profile:
                result["profile"]["plain"] = profile_step(plain_trainer, batches)
            _free(plain_trainer, device)
        result["variants"] = {}
        for v in variants:
            extra, _ = VARIANTS[v]
            try:
                _, vcfg = build_config(name, config, [*overrides, *extra])
                vt = _trainer(cls, vcfg, device, tmp, data)
                v_s, v_first = _measure_steps(vt, batches, steps, warmup)
                row = {"step_s": v_s, "first_step_s": v_first, "vs_default": step_s / v_s}
                if plain:
                    row["vs_plain"] = result["plain_step_s"] / v_s
                if vcfg.train.compile:
                    row["compile_s"] = max(0.0, v_first - v_s)
                _free(vt, device)
            except Exception as exc:  # one variant failing (e.g. compile on this machine) leaves the rest
                row = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"}
            result["variants"][v] = row
    return result


def _tensors(batch):
    """Every tensor of a (nested) batch."""
    if torch.is_tensor(batch):
        yield batch
    elif isinstance(batch, dict):
        for v in batch.values():
            yield from _tensors(v)
    elif isinstance(batch, (list, tuple)):
        for v in batch:
            yield from _tensors(v)


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
    parser.add_argument("--variants", nargs="*", default=[], choices=sorted(VARIANTS),
                        help="other settings timed on the same batches (see VARIANTS)")
    parser.add_argument("--profile", action="store_true", help="also list the operators that take the step's time")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    print(json.dumps(bench_one(args.pipeline, args.config, args.overrides, args.steps, args.warmup, args.volume,
                               flops=args.flops, variants=args.variants, profile=args.profile)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
