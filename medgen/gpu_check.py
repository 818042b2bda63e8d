"""`medgen gpu-check`: everything a new GPU (or CPU) machine should be checked for, in one run, into one JSON
and one markdown table under benchmarks/results/gpu/.

1. the environment: device, torch / CUDA / cuDNN / MONAI / Python versions, date, git commit, and which
   optional packages are missing (nothing is installed: the run needs no network);
2. the device's dense matmul rate (medgen.flops.matmul_probe), the yardstick for every pipeline below;
3. the whole test suite on that device (medgen.suite_run: parallel where pytest-xdist is installed);
4. `medgen bench` on every pipeline, each in its own subprocess, with one training step's FLOPs counted, so
   the achieved TFLOP/s reads as a share of the probe's bf16 rate, and on CUDA the settings of CUDA_VARIANTS
   timed on the same batches;
5. the speed targets (medgen.gpu_targets), each met / not met / unmeasured.

On CUDA the pipelines run at their paper configs (configs/<name>.yaml); on a CPU ("CPU mode") at their smoke
configs (configs/<name>_smoke.yaml), so the same report comes back in minutes. The JSON and markdown are
rewritten after every stage, so a run that is stopped part-way still leaves what it measured.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from medgen.errors import ConfigError, RunDirError
from medgen.suite_run import importable

# (import name, distribution, what in medgen needs it)
PACKAGES = [
    ("torch", "torch", "everything"),
    ("monai", "monai", "networks, transforms, inference (required)"),
    ("nibabel", "nibabel", "NIfTI reading and writing (required)"),
    ("SimpleITK", "SimpleITK", "MetaImage / NRRD reading only"),
    ("numpy", "numpy", "required"),
    ("scipy", "scipy", "required"),
    ("skimage", "scikit-image", "required"),
    ("sklearn", "scikit-learn", "required"),
    ("pandas", "pandas", "required"),
    ("pyarrow", "pyarrow", "required (tables)"),
    ("yaml", "PyYAML", "required (configs)"),
    ("matplotlib", "matplotlib", "required (plots, previews)"),
    ("tqdm", "tqdm", "required (progress)"),
    ("pytest", "pytest", "the test suite"),
    ("xdist", "pytest-xdist", "parallel test run"),
    ("pytest_timeout", "pytest-timeout", "per-test time limit"),
    ("hypothesis", "hypothesis", "property tests"),
    ("onnx", "onnx", "medgen export --format onnx"),
    ("onnxruntime", "onnxruntime", "checking ONNX exports"),
    ("onnxscript", "onnxscript", "ONNX export"),
    ("tensorboard", "tensorboard", "optional TensorBoard logging"),
]

# Per device: timed steps, warm-up steps, side of the whole volume timed at inference (0: none).
DEFAULTS = {"cuda": {"steps": 10, "warmup": 3, "volume": 256}, "cpu": {"steps": 3, "warmup": 1, "volume": 64}}
# Settings timed beside medgen's default step on CUDA (medgen.bench.VARIANTS): bf16 alone ("fp32": the same
# settings, autocast off) where the targets ask for a bf16 ratio, channels-last where the 3D convolutions
# dominate, CUDA graphs through torch.compile for the launch-bound batch-1 step. None in CPU mode.
CUDA_VARIANTS = {"mr_synthesis": ["fp32", "channels_last"], "lesion_uda": ["fp32", "channels_last"],
                 "pet_lowdose": ["fp32", "compile"], "mr_to_ct": ["fp32"], "oct_anogan": ["fp32", "channels_last"]}
# Where the step's device time goes (torch.profiler), for medgen's and the plain step, on CUDA: the pipelines
# whose bf16 step was no faster than fp32 on the first H200 run.
CUDA_PROFILE = ("mr_synthesis", "lesion_uda")


def repo_root() -> Path:
    """The checkout medgen was imported from (configs/ and tests/ live there)."""
    return Path(__file__).resolve().parents[1]


def _run(cmd, cwd=None) -> str | None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_commit(repo: Path) -> dict:
    """MEDGEN_COMMIT when set (a copy of the tree without .git, e.g. on a lent GPU machine), else git."""
    if os.environ.get("MEDGEN_COMMIT"):
        return {"commit": os.environ["MEDGEN_COMMIT"], "source": "MEDGEN_COMMIT"}
    commit = _run(["git", "rev-parse", "HEAD"], cwd=repo) if shutil.which("git") else None
    if not commit:
        return {"commit": "unknown", "source": "no git checkout"}
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo)
    return {"commit": commit, "source": "git", "dirty": bool(dirty)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(repo: Path) -> dict:
    """What ran where: device, versions, packages present and missing, commit, date."""
    import warnings

    import torch

    import medgen

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    env = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **git_commit(repo),
        "medgen": medgen.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_cores": cpus,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    with warnings.catch_warnings():  # newer torch deprecates the allow_tf32 flags in favour of fp32_precision
        warnings.simplefilter("ignore")
        env["cudnn_allow_tf32"] = bool(torch.backends.cudnn.allow_tf32)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update({
            "device": "cuda",
            "device_name": props.name,
            "device_count": torch.cuda.device_count(),
            "device_memory_gib": round(props.total_memory / 2**30, 1),
            "compute_capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "driver": _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
            if shutil.which("nvidia-smi") else None,
        })
    else:
        env.update({"device": "cpu", "device_name": f"CPU: {env['cpu']} ({cpus} cores)"})
    packages = {}
    for module, dist, need in PACKAGES:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = None
        ok = importable(module)
        packages[dist] = {"installed": ok, "version": version if ok else None, "needed_for": need}
    env["packages"] = packages
    env["monai"] = packages["monai"]["version"]
    env["missing"] = [dist for dist, info in packages.items() if not info["installed"]]
    return env


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "device"


def output_paths(out_dir: Path, env: dict) -> dict:
    """<out>/gpu-check_<date>_<time>_<device>.{json,md} (+ _pytest.log): names a lent machine's $OUT accepts."""
    stamp = env["date"].replace("-", "").replace(":", "").replace("T", "-").rstrip("Z")  # 20261205-203300
    device = _slug(env["device_name"]) if env["device"] == "cuda" else "cpu-" + _slug(env["cpu"])
    stem = f"gpu-check_{stamp}_{device}"
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md", "log": out_dir / f"{stem}_pytest.log"}
    taken = [str(p) for p in paths.values() if p.exists()]
    if taken:
        raise RunDirError(f"gpu-check will not overwrite {', '.join(taken)}")
    return paths


def derive_rates(row: dict, probe: dict) -> dict:
    """Achieved TFLOP/s of the medgen step (its autocast: bf16 on CUDA) and of the plain fp32 step, and the
    medgen step's share of the probe's bf16 rate."""
    gflop = row.get("step_gflop")
    if gflop and row.get("step_s"):
        row["tflops"] = gflop / row["step_s"] / 1e3
        if row.get("plain_step_s"):
            row["tflops_fp32"] = gflop / row["plain_step_s"] / 1e3
        if probe.get("bf16_tflops"):
            row["pct_of_bf16_peak"] = 100.0 * row["tflops"] / probe["bf16_tflops"]
    return row


def run_benches(names, mode: str, repo: Path, steps: int, warmup: int, volume: int, overrides, probe: dict,
                timeout: float, deadline: float, phantom_dir: Path, on_row, variants=None,
                profile=()) -> list[dict]:
    """One `python -m medgen.bench <name> --flops` subprocess per pipeline (peak memory is its own);
    `variants` {pipeline: [medgen.bench.VARIANTS names]}."""
    from medgen.bench import run_in_subprocess

    rows = []
    for name in names:
        extra = ["--flops"] + (["--variants", *variants[name]] if variants and variants.get(name) else [])
        if profile and name in profile:
            extra.append("--profile")
        left = deadline - time.monotonic()
        config = repo / "configs" / f"{name}{'_smoke' if mode == 'smoke' else ''}.yaml"
        config = config if config.exists() else None
        label = str(config.relative_to(repo)) if config else "defaults"
        if left < 15:
            row = {"pipeline": name, "config": label, "error": ["not run: the --time-limit was reached"]}
        else:
            t0 = time.perf_counter()
            row = run_in_subprocess(name, config, [f"data.phantom_dir={phantom_dir}", *overrides], steps, warmup,
                                    volume, timeout=min(timeout, left), extra_args=extra)
            row.update(config=label, wall_s=time.perf_counter() - t0)
            derive_rates(row, probe)
        rows.append(row)
        on_row(row)
    return rows


def _write(report: dict, paths: dict) -> None:
    from medgen.files import atomic_write
    from medgen.gpu_report import format_report

    from medgen.gpu_targets import target_rows

    report["targets"] = target_rows(report)
    atomic_write(paths["json"], json.dumps(report, indent=2, default=str) + "\n")
    atomic_write(paths["md"], format_report(report))


def gpu_check(out_dir="benchmarks/results/gpu", pipelines=None, skip_tests: bool = False, pytest_args=(),
              workers: int | None = None, test_timeout: float = 300, tests_timeout: float = 1800,
              bench_timeout: float = 900, time_limit: float = 0, configs: str = "auto", steps: int | None = None,
              warmup: int | None = None, volume: int | None = None, probe_size: int | None = None,
              overrides=(), variants=None, log=print) -> tuple[dict, dict]:
    """Run the check; returns (report, paths of the files written). `pipelines`: None = all but the toy;
    `variants`: None = CUDA_VARIANTS on CUDA and none on a CPU, else the same list of names for every pipeline."""
    import torch

    from medgen.flops import matmul_probe
    from medgen.registry import PIPELINES

    start = time.monotonic()
    deadline = start + time_limit if time_limit else float("inf")
    repo = repo_root()
    names = [n for n in PIPELINES.names() if n != "toy_denoise"] if pipelines is None else list(pipelines)
    for name in names:
        PIPELINES.get(name)  # an unknown name fails now, not after the test suite
    if configs not in ("auto", "paper", "smoke"):
        raise ConfigError(f"--configs must be auto, paper or smoke, not {configs!r}")
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create {out_dir}: {exc.strerror}") from None
    env = environment(repo)
    paths = output_paths(out_dir, env)
    device = torch.device("cuda" if env["cuda_available"] else "cpu")
    mode = configs if configs != "auto" else ("paper" if device.type == "cuda" else "smoke")
    d = DEFAULTS[device.type]
    steps, warmup, volume = (d["steps"] if steps is None else steps, d["warmup"] if warmup is None else warmup,
                             d["volume"] if volume is None else volume)
    if variants is None:
        plan = CUDA_VARIANTS if device.type == "cuda" else {}
    else:
        from medgen.bench import VARIANTS

        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            raise ConfigError(f"unknown --variants {unknown}; choose from {', '.join(VARIANTS)}")
        plan = {name: list(variants) for name in names}
    report = {"kind": "medgen gpu-check", "complete": False, "environment": env,
              "settings": {"configs": mode, "pipelines": names, "steps": steps, "warmup": warmup, "volume": volume,
                           "variants": {n: plan.get(n, []) for n in names},
                           "overrides": list(overrides), "tests": not skip_tests, "pytest_args": list(pytest_args),
                           "time_limit_s": time_limit or None},
              "probe": None, "tests": None, "pipelines": []}
    log(f"gpu-check on {env['device_name']}: torch {env['torch']}, CUDA {env['cuda']}, MONAI {env['monai']}; "
        f"missing: {', '.join(env['missing']) or 'nothing'}")
    report["probe"] = matmul_probe(device, probe_size)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the tests and benches run in subprocesses: leave them the memory
    p = report["probe"]
    log(f"matmul probe {p['size']}^3: bf16 {p['bf16_tflops']:.3g}, fp32 {p['fp32_tflops']:.3g}"
        + (f", tf32 {p['tf32_tflops']:.3g}" if p["tf32_tflops"] else "") + " TFLOP/s")
    _write(report, paths)
    if not skip_tests:
        if not (repo / "tests").is_dir():
            report["tests"] = {"error": f"no tests/ folder beside the medgen package ({repo})"}
        else:
            log("test suite: running ...")
            from medgen.suite_run import run_suite

            left = deadline - time.monotonic()
            report["tests"] = run_suite(repo, paths["log"], pytest_args, workers, test_timeout,
                                        timeout=min(tests_timeout, max(left, 1.0)))
            log(f"test suite: {report['tests'].get('summary') or report['tests'].get('error')}")
        _write(report, paths)
    with tempfile.TemporaryDirectory(prefix="medgen-gpu-check-") as phantoms:  # phantoms live only this long
        def on_row(row):
            report["pipelines"].append(row)
            _write(report, paths)
            log(f"bench {row['pipeline']}: " + (" ".join(row["error"]) if "error" in row else
                                                f"{row['steps_per_s']:.3g} steps/s"))

        run_benches(names, mode, repo, steps, warmup, volume, overrides, report["probe"], bench_timeout, deadline,
                    Path(phantoms), on_row, plan, CUDA_PROFILE if device.type == "cuda" else ())
    report["complete"] = True
    report["duration_s"] = time.monotonic() - start
    _write(report, paths)
    return report, paths


def verdict(report: dict) -> int:
    """Exit code: 0 when every test passed (or none ran) and every pipeline was measured, else 1."""
    tests = report.get("tests") or {}
    bad_tests = bool(tests.get("error") or tests.get("failed") or tests.get("errors")
                     or tests.get("exit_code") not in (None, 0, 5))
    return 1 if bad_tests or any("error" in r for r in report["pipelines"]) else 0


if __name__ == "__main__":  # python -m medgen.gpu_check == medgen gpu-check
    from medgen.cli import main

    raise SystemExit(main(["gpu-check", *sys.argv[1:]]))
