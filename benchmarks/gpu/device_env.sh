# Sourced by the scripts of benchmarks/gpu/ on a lent GPU machine that has torch but neither monai nor nibabel
# (docs/benchmarks.md, "On a GPU machine without network"): from the repository root, installs the wheels carried
# in .whl/ to /tmp/site (nothing is fetched: the machine has no network), puts them and this checkout on
# PYTHONPATH, and sets PY (the interpreter), OUT_DIR (where results go: $OUT, what comes back from the machine,
# else the folder given as the first argument) and CONSOLE (a console log in $OUT, else /dev/null).
# Usage: source benchmarks/gpu/device_env.sh <default results folder> <console log name>
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
PY="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "$(basename "$0"): installing the carried wheels failed" >&2; exit 1; }
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's medgen, in every subprocess too
export PYTHONUNBUFFERED=1
OUT_DIR="${OUT:-$1}"
mkdir -p "$OUT_DIR"
CONSOLE=/dev/null
[ -n "${OUT:-}" ] && CONSOLE="$OUT/$2"
