"""Peak memory of whole-volume sliding-window inference as the volume grows (docs/benchmarks.md).

The pix2pix 3D U-Net of pet_lowdose / mr_synthesis (ngf 64, 64^3 windows, 4 windows per forward pass,
overlap 0.25), stitching buffer on the host. Target: peak RSS under 3 GB at 256^3 and at most linear
growth with the voxel count. Each size runs in its own process so each peak is its own.

    python benchmarks/inference_memory.py [--sizes 128 192 256]
"""
import argparse
import json
from pathlib import Path

from medgen.bench import memory_scaling

parser = argparse.ArgumentParser()
parser.add_argument("--sizes", type=int, nargs="+", default=[128, 192, 256])
parser.add_argument("--out", default="benchmarks/results/inference_memory.json")
args = parser.parse_args()
rows = memory_scaling(tuple(args.sizes))
print("| volume | voxels (M) | seconds | peak RSS (MB) | RSS before (MB) |")
print("|---|---|---|---|---|")
for r in rows:
    if "error" in r:
        print(f"| {r['size']}^3 | error: {r['error']} |")
        continue
    print(f"| {r['size']}^3 | {r['size'] ** 3 / 1e6:.1f} | {r['seconds']:.0f} | {r['peak_rss_mb']:.0f} | {r['rss_before_mb']:.0f} |")
if "slope_mb_per_mvoxel" in rows[0]:
    print(f"linear fit: {rows[0]['slope_mb_per_mvoxel']:.1f} MB per million voxels + {rows[0]['intercept_mb']:.0f} MB")
Path(args.out).parent.mkdir(parents=True, exist_ok=True)
Path(args.out).write_text(json.dumps(rows, indent=2))
