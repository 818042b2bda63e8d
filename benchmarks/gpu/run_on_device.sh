#!/usr/bin/env bash
# `medgen gpu-check` on a lent GPU machine that has torch, pytest, pytest-xdist and pytest-timeout but neither
# monai nor nibabel (docs/benchmarks.md, "Checking a GPU"). Run from the repository root, with the monai and
# nibabel wheels carried in .whl/:
#
#   MEDGEN_COMMIT=<git rev-parse HEAD of the tree sent> bash benchmarks/gpu/run_on_device.sh [gpu-check options]
#
# The wheels go to /tmp/site (device_env.sh); the JSON, markdown, pytest log and this console log go to $OUT (what
# comes back from the machine), or to benchmarks/results/gpu when OUT is unset. The defaults below keep the whole
# run inside one 10-minute command; later options override them.
set -uo pipefail
source "$(dirname "$0")/device_env.sh" benchmarks/results/gpu gpu-check_console.log
"$PY" -m medgen gpu-check --out "$OUT_DIR" --time-limit 480 --tests-timeout 240 --test-timeout 120 \
    --bench-timeout 150 --steps 5 --warmup 2 "$@" 2>&1 | tee "$CONSOLE"
exit "${PIPESTATUS[0]}"
