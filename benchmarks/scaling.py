"""Data-parallel scaling under torchrun: the same training run on 1 and on N processes.

On CPU the processes talk over gloo and each uses one torch thread, so N processes need N free cores; on a
GPU machine each rank takes one GPU (NCCL). Throughput is read from the run's own metrics.csv (steps per
second between log lines, the first interval dropped as warm-up), so start-up, phantom writing and the
final checkpoint are not counted. Scaling efficiency = samples/s on N ranks / (N x samples/s on 1 rank),
at a fixed per-rank batch (weak scaling, as torchrun users run it).

    python benchmarks/scaling.py                 # mr_synthesis and pet_lowdose, 1 vs 2 ranks
    python benchmarks/scaling.py --ranks 1 2 4 --pipelines mr_synthesis

Results: benchmarks/results/scaling_<device>.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Small but compute-bound settings: 32^3 patches, so a step is tens of milliseconds of convolution against
# one all-reduce of a few hundred thousand parameters. No validation or checkpoint inside the timed steps.
SETTINGS = {
    "mr_synthesis": ["data.patch_size=[32,32,32]", "data.phantom_shape=[48,48,48]", "data.phantom_cases=6",
                     "model.ngf=16", "model.ndf=16", "model.n_layers_d=3", "train.batch_size=2"],
    "pet_lowdose": ["data.patch_size=[32,32,32]", "model.ngf=16", "model.ndf=16", "model.d_layers=2",
                    "train.batch_size=2", "model.stages=1"],
}


def run(pipeline: str, ranks: int, steps: int, log_every: int, workdir: Path, port: int) -> dict:
    out = workdir / f"{pipeline}_{ranks}"
    overrides = SETTINGS[pipeline] + [
        "train.epochs=0", f"train.iterations={steps}", f"train.log_every={log_every}", f"train.val_every={steps}",
        f"train.checkpoint_every={steps}", "train.progress=off", "train.threads=1",
        f"data.phantom_dir={workdir / 'data'}", f"output.root={out}", "output.name=run"]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}", f"--master_port={port}",
           "-m", "medgen", "train", pipeline, "-c", str(ROOT / "configs" / f"{pipeline}.yaml"), *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"pipeline": pipeline, "ranks": ranks, "error": " | ".join(tail)}
    rows = list(csv.DictReader(open(out / pipeline / "run" / "metrics.csv")))
    rates = [float(r["steps_per_s"]) for r in rows if r.get("steps_per_s")][1:]  # first interval: warm-up
    steps_per_s = statistics.median(rates)
    batch = int(next(o for o in SETTINGS[pipeline] if o.startswith("train.batch_size=")).split("=")[1])
    return {"pipeline": pipeline, "ranks": ranks, "steps_per_s": steps_per_s,
            "samples_per_s": steps_per_s * batch * ranks, "wall_s": wall, "intervals": len(rates)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = []
    with tempfile.TemporaryDirectory(prefix="medgen_scaling_") as tmp:
        for pipeline in args.pipelines:
            base = None
            for i, n in enumerate(args.ranks):
                r = run(pipeline, n, args.steps, args.log_every, Path(tmp), 29611 + i)
                if "error" not in r:
                    base = r if n == 1 else base
                    if base is not None:
                        r["efficiency"] = r["samples_per_s"] / (n * base["samples_per_s"])
                print(json.dumps(r), flush=True)
                results.append(r)
    print("\n| pipeline | ranks | steps/s per rank | samples/s (all ranks) | efficiency |\n|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['pipeline']} | {r['ranks']} | error: {r['error'][:80]} | | |")
        else:
            eff = f"{r['efficiency']:.2f}" if "efficiency" in r else "-"
            print(f"| {r['pipeline']} | {r['ranks']} | {r['steps_per_s']:.3g} | {r['samples_per_s']:.3g} | {eff} |")
    info = {"device": device, "cpu_count": os.cpu_count(), "torch": torch.__version__, "steps": args.steps,
            "settings": SETTINGS, "results": results}
    path = Path(args.out) / f"scaling_{device}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=1))
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
