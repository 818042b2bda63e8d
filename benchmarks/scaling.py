"""Data-parallel scaling of the shared trainer under torchrun (docs/benchmarks.md).

Trains the same pipeline with 1 and with N processes (one thread each, gloo on CPU or NCCL on GPUs) and
reports samples per second and the scaling efficiency: throughput(N) / (N x throughput(1)). On the 2-core
CPU machine this checks the mechanism's overhead, not speed: the cores are the limit.

    python benchmarks/scaling.py [--nproc 2] [--steps 40] [pipeline overrides ...]
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--nproc", type=int, default=2)
parser.add_argument("--steps", type=int, default=40)
parser.add_argument("--pipeline", default="mr_synthesis")
parser.add_argument("overrides", nargs="*", default=["data.patch_size=[32,32,32]", "model.ngf=16", "train.batch_size=2",
                                                     "train.device=cpu", "train.val_every=100000"])
parser.add_argument("--out", default="benchmarks/results/scaling.json")
args = parser.parse_args()


def run(nproc: int, root: str) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_port=29561",
           "-m", "medgen", "train", args.pipeline, f"train.iterations={args.steps}", "train.log_every=5",
           "train.progress=off", "train.threads=1", f"output.root={root}", f"output.name=n{nproc}", *args.overrides]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    wall = time.perf_counter() - t0
    rows = [r for r in csv.DictReader(open(Path(root) / args.pipeline / f"n{nproc}" / "stage1" / "metrics.csv"
                                           if (Path(root) / args.pipeline / f"n{nproc}" / "stage1").exists()
                                           else Path(root) / args.pipeline / f"n{nproc}" / "metrics.csv"))
            if r.get("steps_per_s")]
    rates = sorted(float(r["steps_per_s"]) for r in rows[1:])  # the first interval includes warm-up
    steps_per_s = rates[len(rates) // 2]
    batch = next(int(o.split("=")[1]) for o in args.overrides if o.startswith("train.batch_size="))
    return {"nproc": nproc, "steps_per_s": steps_per_s, "samples_per_s": steps_per_s * batch * nproc, "wall_s": wall}


with tempfile.TemporaryDirectory() as tmp:
    one = run(1, tmp)
    many = run(args.nproc, tmp)
efficiency = many["samples_per_s"] / (args.nproc * one["samples_per_s"])
print("| processes | steps/s | samples/s | wall (s) |")
print("|---|---|---|---|")
for r in (one, many):
    print(f"| {r['nproc']} | {r['steps_per_s']:.3g} | {r['samples_per_s']:.3g} | {r['wall_s']:.0f} |")
print(f"scaling efficiency with {args.nproc} processes: {efficiency:.2f}")
Path(args.out).write_text(json.dumps({"runs": [one, many], "efficiency": efficiency, "pipeline": args.pipeline,
                                      "overrides": args.overrides}, indent=2))
