#!/usr/bin/env bash
# benchmarks/paper_scale.py on a lent GPU machine without network (docs/benchmarks.md, "Paper-scale run"): the
# monai and nibabel wheels carried in .whl/ are installed as for run_on_device.sh (device_env.sh). From the
# repository root:
#
#   MEDGEN_COMMIT=<git rev-parse HEAD of the tree sent> bash benchmarks/gpu/paper_scale_on_device.sh [options]
#
# The JSON, the markdown and this console log go to $OUT (what comes back from the machine), or to
# benchmarks/results/paper_scale when OUT is unset. The default budget (8 minutes, --budget-minutes) fits one
# 10-minute command; later options override the --out given here.
set -uo pipefail
source "$(dirname "$0")/device_env.sh" benchmarks/results/paper_scale paper_scale_console.log
"$PY" benchmarks/paper_scale.py --out "$OUT_DIR" "$@" 2>&1 | tee "$CONSOLE"
exit "${PIPESTATUS[0]}"
