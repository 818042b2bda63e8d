"""Red-team benchmark of the `medgen` command line: malformed inputs, fault scenarios and fuzzed NIfTI headers.

Every scenario drives the CLI only (`python -m medgen ...` in a subprocess, with this checkout first on
PYTHONPATH) and judges the outcome from exit codes, messages and the files left behind, so the same script
measures the code before and after a round of safety fixes. Each scenario lands in exactly one class:

- ``ok``            succeeded and the outcome is right (a valid input was used, a fault was recovered from);
- ``clear_error``   non-zero exit with a message and no Python traceback (the details record whether the
                    message names the file / case / key at fault);
- ``traceback``     a Python traceback reached the user, the process died on a signal (segfault ...) or hung;
- ``silent_wrong``  the outcome is wrong without a clear error: code in a checkpoint ran, a stale or non-finite
                    output was marked ok, a file was written outside its folder, a divergence was not stopped,
                    a bad input was accepted or check-data called a bad file OK;
- ``data_loss``     a user's or an earlier run's file was overwritten or removed without --overwrite, or two runs
                    were mixed in one folder.

When several apply, the worst wins: each scenario looks for data loss first, then a wrong result, then a
traceback. Each scenario states the safe behaviour it expects (``expected`` in the JSON), so a reader can see
why it was classified as it was. Outside the five classes, ``skipped`` (the fault cannot be simulated here)
and ``harness_error`` (a bug in this script) are counted apart.

Groups (``--only``): ``inputs`` (malformed data through check-data / train / infer), ``faults`` (crafted
checkpoints, stale outputs, concurrent runs, kills, full / read-only folders, divergence, resume misuse) and
``fuzz`` (seeded random NIfTI header mutations through check-data and infer).

    python benchmarks/red_team.py --out red_team.json            # everything (~30 min on 2 CPU cores)
    python benchmarks/red_team.py --quick --out quick.json       # a small subset (~5 min)
    python benchmarks/red_team.py --only faults --select 'ckpt_*'
    python benchmarks/red_team.py --summarise red_team.json --md summary.md   # markdown from a JSON

Everything is written under one temporary folder (removed at the end unless --keep) and the --out / --md paths.
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
CLASSES = ("ok", "clear_error", "traceback", "silent_wrong", "data_loss")
SEVERITY = {c: i for i, c in enumerate(CLASSES)}
GROUPS = ("inputs", "faults", "fuzz")
TB = "Traceback (most recent call last)"
SHAPE = (24, 24, 24)
SPACING = 4.0

# ----------------------------------------------------------------------------------------------------------
# running the CLI
# ----------------------------------------------------------------------------------------------------------

# Runs `medgen` in-process after installing faults a plain subprocess cannot get: a file-size limit (a full
# disk: writes past it fail with EFBIG, as CPython ignores SIGXFSZ) and "disk full" when a file with a given
# name is opened for writing (it is truncated first, as a real failed rewrite would leave it).
INJECTOR = r'''
import builtins, errno, io, os, resource, runpy, sys
limit = os.environ.get("MEDGEN_RT_FSIZE")
if limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
names = {n for n in os.environ.get("MEDGEN_RT_FAIL_NAMES", "").split(",") if n}
if names:
    _open = io.open
    def _failing_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+"):
            path = os.fsdecode(file)
            if os.path.basename(path) in names:
                _open(file, mode, *args, **kwargs).close()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return _open(file, mode, *args, **kwargs)
    io.open = builtins.open = _failing_open
sys.argv = ["medgen", *sys.argv[1:]]
runpy.run_module("medgen", run_name="__main__", alter_sys=True)
'''


@dataclass
class Result:
    args: list
    rc: int | None
    out: str
    err: str
    seconds: float
    timed_out: bool = False

    @property
    def text(self) -> str:
        return f"{self.out}\n{self.err}"

    @property
    def crashed(self) -> bool:
        """A traceback reached the user, the process died on a signal, or it hung."""
        return (self.timed_out or (self.rc is not None and (self.rc < 0 or self.rc in (134, 139)))
                or TB in self.text or "Fatal Python error" in self.text)

    @property
    def message(self) -> str:
        """The error line a user reads: the last stderr line mentioning an error, else the last stderr line,
        else (check-data prints its problems on stdout) the first reported problem or the last stdout line."""
        lines = [ln.strip() for ln in self.err.splitlines() if ln.strip()]
        errs = [ln for ln in lines if "error" in ln.lower() and "warning" not in ln.lower()]
        if errs:
            return errs[-1]
        if lines:
            return lines[-1]
        out = [ln.strip() for ln in self.out.splitlines() if ln.strip()]
        problems = [ln for ln in out if ln.startswith("- case ")]
        return problems[0] if problems else (out[-1] if out else "")

    def names(self, tokens) -> bool:
        text = self.text
        return any(t and str(t) in text for t in tokens)

    def crash_reason(self) -> str:
        if self.timed_out:
            return f"hung (killed after {self.seconds:.0f} s)"
        if self.rc is not None and self.rc < 0:
            return f"killed by signal {-self.rc} ({signal.Signals(-self.rc).name})"
        if self.rc in (134, 139):
            return f"crashed (exit {self.rc})"
        tail = [ln.strip() for ln in self.text.splitlines() if ln.strip()]
        if TB in self.text:  # the exception line: the last "SomethingError: ..." after the traceback
            after = tail[max(i for i, ln in enumerate(tail) if ln.startswith(TB)):]
            exc = [ln for ln in after if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b", ln)]
            if exc:
                return "traceback: " + exc[-1]
        return "traceback: " + (tail[-1] if tail else "")


class Harness:
    def __init__(self, tmp: Path, quick: bool, fuzz_n: int, seed: int):
        self.tmp, self.quick, self.fuzz_n, self.seed = tmp, quick, fuzz_n, seed
        self.injector = tmp / "inject_faults.py"
        self.injector.write_text(INJECTOR)
        self.env = dict(os.environ)
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            self.env.pop(key, None)
        self.env.update(PYTHONPATH=os.pathsep.join([str(REPO), self.env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", CUDA_VISIBLE_DEVICES="",
                        PYTHONUNBUFFERED="1")
        self._fixtures: dict[str, object] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.readonly_prefix = self._readonly_prefix()

    def _readonly_prefix(self):
        """As root a chmod 555 folder is still writable; drop CAP_DAC_OVERRIDE so permissions apply."""
        if os.geteuid() != 0:
            return []
        if shutil.which("setpriv"):
            return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
        return None

    # ----- processes -----
    def command(self, args, inject: dict | None = None, prefix=()):
        args = [str(a) for a in args]
        if inject:
            return [*prefix, PY, str(self.injector), *args]
        return [*prefix, PY, "-m", "medgen", *args]

    def run(self, args, cwd: Path, timeout: float = 300, inject: dict | None = None, prefix=()) -> Result:
        args = [str(a) for a in args]
        cmd = self.command(args, inject, prefix)
        env = dict(self.env, **{k: str(v) for k, v in (inject or {}).items()})
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, errors="replace", start_new_session=True)
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            timed_out = True
        return Result(args, proc.returncode, out, err, time.perf_counter() - t0, timed_out)

    def start(self, args, cwd: Path, log: Path):
        """A background `medgen` process (for kills and concurrency); its output goes to log.{out,err}."""
        out, err = open(f"{log}.out", "w"), open(f"{log}.err", "w")
        proc = subprocess.Popen(self.command(args), cwd=cwd, env=self.env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        proc._rt = (args, log, out, err, time.perf_counter())
        return proc

    def finish(self, proc, timeout: float = 300) -> Result:
        args, log, out, err, t0 = proc._rt
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            timed_out = True
        out.close()
        err.close()
        return Result([str(a) for a in args], proc.returncode, Path(f"{log}.out").read_text(errors="replace"),
                      Path(f"{log}.err").read_text(errors="replace"), time.perf_counter() - t0, timed_out)

    # ----- fixtures, built once on first use -----
    def fixture(self, name: str, build: Callable):
        with self._lock:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self._fixtures:
                try:
                    self._fixtures[name] = build(self)
                except Exception as exc:  # remembered so every scenario needing it says why
                    self._fixtures[name] = FixtureError(f"fixture {name}: {exc}")
            value = self._fixtures[name]
        if isinstance(value, FixtureError):
            raise value
        return value


class FixtureError(Exception):
    pass


class Skip(Exception):
    pass


@dataclass
class Outcome:
    cls: str
    reason: str
    details: dict = field(default_factory=dict)


class Ctx:
    """One scenario's sandbox folder and the log of the commands it ran."""

    def __init__(self, h: Harness, name: str):
        self.h = h
        self.root = h.tmp / "s" / name
        self.root.mkdir(parents=True)
        self.commands: list[Result] = []

    def medgen(self, *args, timeout: float = 300, inject=None, prefix=(), cwd=None) -> Result:
        res = self.h.run(args, cwd or self.root, timeout, inject, prefix)
        self.commands.append(res)
        return res

    def start(self, *args, tag: str = "bg"):
        return self.h.start(args, self.root, self.root / f"_{tag}")

    def finish(self, proc, timeout: float = 300) -> Result:
        res = self.h.finish(proc, timeout)
        self.commands.append(res)
        return res


# ----------------------------------------------------------------------------------------------------------
# classification helpers
# ----------------------------------------------------------------------------------------------------------

def error_outcome(res: Result, tokens=(), expected_success: bool = False) -> Outcome:
    """A failed command: traceback / crash, or a clear error (recording whether it names what is at fault)."""
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    named = res.names(tokens) if tokens else None
    details = {"message": res.message[:300], "names_the_problem": named}
    if expected_success:
        details["expected_success"] = True
    return Outcome("clear_error", ("valid input rejected: " if expected_success else "") + res.message[:200], details)


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def escaped(root: Path, before: set[str], allowed: list[Path]) -> list[str]:
    """Files that appeared under `root` outside the `allowed` folders (writes that left their folder)."""
    new = files_under(root) - before
    allowed_rel = [str(a.relative_to(root)) for a in allowed]
    return sorted(f for f in new if not any(f == a or f.startswith(a + os.sep) for a in allowed_rel)
                  and not f.startswith("_"))


def sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def read_nifti(path: Path):
    import nibabel as nib

    return np.asanyarray(nib.load(str(path)).dataobj)


def finite_file(path: Path) -> bool | None:
    """True / False for a readable NIfTI (all voxels finite or not); None when it cannot be read."""
    try:
        arr = np.asarray(read_nifti(path), dtype=np.float64)
    except Exception:
        return None
    return bool(np.isfinite(arr).all())


def manifest(out: Path) -> dict | None:
    try:
        data = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("cases"), dict) else None


def case_files(out: Path, case_id: str) -> list[Path]:
    """Prediction files of a case: from the manifest when it lists them, else by the `<id>_` prefix."""
    man = manifest(out)
    if man and case_id in man["cases"]:
        paths = []
        for f in man["cases"][case_id].get("files", []):
            p = Path(f["path"] if isinstance(f, dict) else f)
            paths.append(p if p.is_absolute() else out / p.name)
        return paths
    if "/" in case_id or not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.name.startswith(f"{case_id}_") and ".nii" in p.name)


def case_status(out: Path, case_id: str) -> str | None:
    man = manifest(out)
    if man and case_id in man["cases"]:
        return str(man["cases"][case_id].get("status"))
    return None


def prediction(out: Path, case_id: str) -> dict:
    """What infer left for a case: status, files, whether every file is a readable, finite image."""
    files = [p for p in case_files(out, case_id) if p.exists()]
    nii = [p for p in files if ".nii" in p.name]
    finite = [finite_file(p) for p in nii]
    status = case_status(out, case_id)
    written = bool(nii) and status in (None, "ok")
    return {"status": status, "files": [str(p) for p in files], "written": written,
            "finite": all(f is True for f in finite) if finite else None}


def max_weight(path: Path) -> tuple[float, bool] | None:
    """(largest |weight|, all finite) over the networks of a checkpoint written by a run of this harness."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)  # our own run's file
        except Exception:
            return None
    if isinstance(state, dict):
        for key in ("networks", "model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    biggest, finite = 0.0, True

    def walk(obj):
        nonlocal biggest, finite
        if torch.is_tensor(obj):
            if obj.is_floating_point() and obj.numel():
                t = obj.detach().float()
                finite = finite and bool(torch.isfinite(t).all())
                biggest = max(biggest, float(t[torch.isfinite(t)].abs().max()) if torch.isfinite(t).any() else 0.0)
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)

    walk(state)
    return biggest, finite


# ----------------------------------------------------------------------------------------------------------
# synthetic data (written here, so the harness does not depend on medgen's phantom generators)
# ----------------------------------------------------------------------------------------------------------

def affine(spacing=SPACING, shape=SHAPE, shift=(0.0, 0.0, 0.0)) -> np.ndarray:
    a = np.diag([spacing, spacing, spacing, 1.0])
    a[:3, 3] = [-(s - 1) * spacing / 2 + d for s, d in zip(shape, shift)]
    return a


def save_nifti(path: Path, arr, aff=None, dtype=None, nifti2: bool = False) -> None:
    import nibabel as nib

    arr = np.asarray(arr)
    if dtype is not None:
        arr = arr.astype(dtype)
    cls = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    img = cls(arr, affine() if aff is None else aff)
    img.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def head_case(rng: np.random.Generator, shape=SHAPE) -> dict[str, np.ndarray]:
    """One small synthetic head: ellipsoid head and brain, a skull shell, a bright blob; MR, CT, PET, masks."""
    g = np.indices(shape).astype(np.float32)
    c = [(s - 1) / 2 + rng.uniform(-1, 1) for s in shape]
    radii = [s * f for s, f in zip(shape, rng.uniform(0.36, 0.44, 3))]
    r = np.sqrt(sum(((g[i] - c[i]) / radii[i]) ** 2 for i in range(3)))
    head, brain = r < 1.0, r < 0.78
    skull = head & (r >= 0.82)
    b = [ci + rng.uniform(-3, 3) for ci in c]
    blob = np.exp(-sum((g[i] - b[i]) ** 2 for i in range(3)) / (2 * 2.5**2))
    noise = lambda s: rng.normal(0, s, shape)  # noqa: E731
    t1 = np.where(brain, 700 - 250 * blob, np.where(head, 380, 0)) + noise(15) * head
    t2 = np.where(brain, 450 + 500 * blob, np.where(head, 220, 0)) + noise(15) * head
    ct = np.where(skull, 1100.0, np.where(head, 40 + 20 * blob, -1000.0)) + noise(5)
    full = np.where(brain, 9000 + 12000 * blob, np.where(head, 2500, 0)).astype(np.float32)
    low = np.clip(full * 0.25 + noise(300) * head, 0, None)
    return {"t1": np.clip(t1, 0, None), "t2": np.clip(t2, 0, None), "mr": np.clip(t1, 0, None), "ct": ct,
            "low_dose": low, "full_dose": full, "mask": head.astype(np.uint8), "brain_mask": brain.astype(np.uint8)}


HEAD_KEYS = {"t1": "image", "t2": "image", "mr": "image", "ct": "image", "low_dose": "image",
             "full_dose": "image", "mask": "label", "brain_mask": "label"}
HEAD_SPLITS = {"training": ["case000", "case001", "case002"], "validation": ["case003"],
               "test": ["case004", "case005"]}


def write_head_dataset(folder: Path, seed: int = 0, scale: float = 1.0, flip: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    data = {"name": "red_team_heads", "keys": dict(HEAD_KEYS)}
    for split, ids in HEAD_SPLITS.items():
        data[split] = []
        for cid in ids:
            vols = head_case(rng)
            case = {"id": cid}
            for key, arr in vols.items():
                if flip:
                    arr = arr[::-1].copy()
                if HEAD_KEYS[key] == "image" and key != "ct":
                    arr = arr * scale
                dtype = np.uint8 if HEAD_KEYS[key] == "label" else np.float32
                save_nifti(folder / cid / f"{key}.nii.gz", arr, dtype=dtype)
                case[key] = f"{cid}/{key}.nii.gz"
            data[split].append(case)
    (folder / "dataset.json").write_text(json.dumps(data, indent=1))
    return folder


def write_expression_dataset(folder: Path, n: int = 80, genes: int = 60, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    w = rng.normal(size=(3, genes)) * 1.5
    x = 1 / (1 + np.exp(-(z @ w + rng.normal(0, 0.3, (n, genes)))))
    ids = [f"S{i:03d}" for i in range(n)]
    folder.mkdir(parents=True, exist_ok=True)
    write_matrix(folder / "expression.tsv", ids, [f"GENE{j:03d}" for j in range(genes)], x)
    with open(folder / "labels.tsv", "w") as fh:
        fh.write("sample\tgroup\n")
        for i, s in enumerate(ids):
            fh.write(f"{s}\t{'a' if z[i, 0] > 0 else 'b'}\n")
    data = {"name": "red_team_expression", "tables": {"expression": "expression.tsv", "labels": "labels.tsv"},
            "training": [{"id": s} for s in ids[: n - 20]], "validation": [{"id": s} for s in ids[n - 20: n - 10]],
            "test": [{"id": s} for s in ids[n - 10:]]}
    (folder / "dataset.json").write_text(json.dumps(data, indent=1))
    return folder


def write_matrix(path: Path, ids, genes, x) -> None:
    with open(path, "w") as fh:
        fh.write("sample\t" + "\t".join(genes) + "\n")
        for s, row in zip(ids, x):
            fh.write(s + "\t" + "\t".join(v if isinstance(v, str) else f"{v:.6g}" for v in row) + "\n")


# ----------------------------------------------------------------------------------------------------------
# fixtures: datasets and trained runs, made once and copied by the scenarios that change them
# ----------------------------------------------------------------------------------------------------------

def smoke(pipeline: str) -> str:
    return str(REPO / "configs" / f"{pipeline}_smoke.yaml")


def train_args(pipeline: str, dataset: Path, root: Path, name: str, *extra) -> list:
    return ["train", pipeline, "-c", smoke(pipeline), f"data.dataset={dataset}", f"output.root={root}",
            f"output.name={name}", "train.threads=1", *extra]


def fx_heads(h: Harness) -> Path:
    return write_head_dataset(h.tmp / "fixtures" / "heads")


def fx_heads_other(h: Harness) -> Path:
    """Same case ids and geometry, other images (another seed, flipped, rescaled): predictions must differ."""
    return write_head_dataset(h.tmp / "fixtures" / "heads_other", seed=7, scale=0.6, flip=True)


def fx_expression(h: Harness) -> Path:
    return write_expression_dataset(h.tmp / "fixtures" / "expression")


def _train_fixture(h: Harness, pipeline: str, dataset: Path, name: str, *extra) -> Path:
    root = h.tmp / "fixtures" / "runs"
    res = h.run(train_args(pipeline, dataset, root, name, *extra), h.tmp, timeout=600)
    run = root / pipeline / name
    if res.rc != 0:
        raise FixtureError(f"training {pipeline} failed (exit {res.rc}): {res.err[-400:]}")
    return run


def fx_msyn(h: Harness) -> Path:
    """mr_synthesis smoke run on the synthetic heads (10 steps, validation at 5 and 10)."""
    return _train_fixture(h, "mr_synthesis", h.fixture("heads", fx_heads), "msyn")


def fx_msyn_b(h: Harness) -> Path:
    """The same run with another seed: other weights for the same config."""
    return _train_fixture(h, "mr_synthesis", h.fixture("heads", fx_heads), "msyn_b", "train.seed=1")


def fx_pet(h: Harness) -> Path:
    return _train_fixture(h, "pet_lowdose", h.fixture("heads", fx_heads), "pet", "train.iterations=6",
                          "train.val_every=3")


def fx_ct(h: Harness) -> Path:
    return _train_fixture(h, "mr_to_ct", h.fixture("heads", fx_heads), "ct", "train.iterations=4",
                          "train.val_every=2")


def fx_vae(h: Harness) -> Path:
    return _train_fixture(h, "expression_vae", h.fixture("expression", fx_expression), "vae")


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def copy_dataset(h: Harness, dst: Path, which: str = "heads") -> Path:
    builder = {"heads": fx_heads, "expression": fx_expression, "heads_other": fx_heads_other}[which]
    shutil.copytree(h.fixture(which, builder), dst)
    return dst


def load_json(folder: Path) -> dict:
    return json.loads((folder / "dataset.json").read_text())


def save_json(folder: Path, data) -> None:
    (folder / "dataset.json").write_text(json.dumps(data, indent=1))


def find_case(data: dict, cid: str) -> dict:
    for split in ("training", "validation", "test"):
        for case in data.get(split, []):
            if isinstance(case, dict) and case.get("id") == cid:
                return case
    raise KeyError(cid)


# ----------------------------------------------------------------------------------------------------------
# group "inputs": malformed data through check-data, train and infer
# ----------------------------------------------------------------------------------------------------------

@dataclass
class BadInput:
    """A dataset variant. `expect` maps command -> "reject" | "accept" | "either"; commands not listed are not run.
    `apply(folder, data, root)` changes the copied dataset's files and its parsed dataset.json (saved after)."""

    name: str
    what: str
    apply: Callable
    expect: dict
    kind: str = "heads"  # heads (mr_synthesis) | expression (expression_vae)
    bad_case: str = "case004"  # the test case infer must fail (case005 must still be predicted)
    tokens: tuple = ()  # what a clear message should name (file names, keys, ids)
    quick: bool = False
    own_run: bool = False  # expression: infer the run trained on this variant (else the fixture run)


FILE_TARGETS = ("case000", "case004")  # a training case and the first test case


def per_case_file(key: str, writer: Callable, cases=FILE_TARGETS, suffix: str | None = None):
    """apply(): replace `key` of the target cases by what writer(path, case_id, folder) writes."""

    def apply(folder: Path, data: dict, root: Path):
        for cid in cases:
            case = find_case(data, cid)
            path = folder / case[key]
            if suffix is None:
                writer(path, cid, folder)
            else:  # a file of another type replaces the original (written first: the writer may read it)
                new = path.with_name(f"{key}{suffix}")
                writer(new, cid, folder)
                path.unlink()
                case[key] = str(new.relative_to(folder))

    return apply


def vol(folder: Path, cid: str, key: str) -> np.ndarray:
    return np.asarray(read_nifti(folder / cid / f"{key}.nii.gz"), dtype=np.float32)


def w_bytes(content: bytes):
    return lambda p, cid, f: p.write_bytes(content)


def w_array(fn, dtype=np.float32, aff=None, nifti2=False, key="t1"):
    return lambda p, cid, f: save_nifti(p, fn(vol(f, cid, key)), aff, dtype, nifti2)


def w_truncate(fraction: float):
    def write(p, cid, f):
        raw = p.read_bytes()
        p.write_bytes(raw[: int(len(raw) * fraction)])
    return write


def w_uncompressed_truncated(p, cid, f):
    arr = vol(f, cid, "t1")
    tmp = p.with_suffix(".tmp.nii")
    save_nifti(tmp, arr)
    p.write_bytes(tmp.read_bytes()[:200])
    tmp.unlink()


def w_plain_nii_named_gz(p, cid, f):
    arr = vol(f, cid, "t1")
    tmp = p.with_name("plain.nii")
    save_nifti(tmp, arr)
    p.write_bytes(tmp.read_bytes())
    tmp.unlink()


def set_value(key: str, value_fn, cases=FILE_TARGETS):
    def apply(folder, data, root):
        for cid in cases:
            find_case(data, cid)[key] = value_fn(folder, cid, root)
    return apply


DELETE_JSON = object()


def json_text(text: bytes | None):
    """apply() that writes these raw bytes as dataset.json (None: no dataset.json at all)."""
    def apply(folder, data, root):
        return DELETE_JSON if text is None else text
    return apply


def json_edit(fn):
    def apply(folder, data, root):
        fn(data, folder, root)
    return apply


def set_ids(val_id, test_id):
    def apply(folder, data, root):
        find_case(data, "case003")["id"] = val_id(root) if callable(val_id) else val_id
        find_case(data, "case004")["id"] = test_id(root) if callable(test_id) else test_id
    return apply


def tiny_volumes(folder, data, root):
    for cid in ("case000", "case004"):
        case = find_case(data, cid)
        for key in HEAD_KEYS:
            arr = vol(folder, cid, key)
            small = arr[10:14, 10:14, 10:14]
            if HEAD_KEYS[key] == "label":
                small = np.ones_like(small)
            save_nifti(folder / case[key], small, affine(shape=(4, 4, 4)),
                       np.uint8 if HEAD_KEYS[key] == "label" else np.float32)


def expr_edit(fn):
    """apply() for the expression dataset: fn(matrix as list of rows (strings), header) -> rows, header."""
    def apply(folder, data, root):
        lines = (folder / "expression.tsv").read_text().splitlines()
        header, rows = lines[0].split("\t"), [ln.split("\t") for ln in lines[1:]]
        header, rows = fn(header, rows)
        (folder / "expression.tsv").write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    return apply


def _nan_cell(header, rows):
    rows[3][5] = "nan"
    return header, rows


def _inf_cell(header, rows):
    rows[3][5] = "inf"
    return header, rows


def _text_cell(header, rows):
    rows[3][5] = "n/a (low)"
    return header, rows


def _constant(header, rows):
    return header, [[r[0]] + ["1.0"] * (len(r) - 1) for r in rows]


def _constant_gene(header, rows):
    return header, [r[:1] + ["0.5"] + r[2:] for r in rows]


def _empty(header, rows):
    return header, []


def _dup_ids(header, rows):
    rows[1][0] = rows[0][0]
    return header, rows


def _fewer_genes(header, rows):
    return header[:41], [r[:41] for r in rows]


R, A, E = "reject", "accept", "either"
ALL_R = {"check": R, "train": R, "infer": R}
ALL_A = {"check": A, "train": A, "infer": A}


def bad_inputs() -> list[BadInput]:
    t1 = ("t1.nii", "t1", "case000", "case004")
    t2 = ("t2.nii", "t2", "case000", "case004")
    bm = ("brain_mask", "case000", "case004")
    rnd = np.random.default_rng(1).bytes(4000)
    inputs = [
        # --- broken files ---
        BadInput("empty_file", "t1 is a 0-byte file", per_case_file("t1", w_bytes(b"")), ALL_R, tokens=t1),
        BadInput("truncated_gzip", "t1.nii.gz cut at half its length", per_case_file("t1", w_truncate(0.5)), ALL_R,
                 tokens=t1, quick=True),
        BadInput("truncated_header", "t1 is an uncompressed .nii cut inside its 348-byte header",
                 per_case_file("t1", w_uncompressed_truncated, suffix=".nii"), ALL_R, tokens=t1),
        BadInput("random_bytes", "t1.nii.gz holds 4000 random bytes", per_case_file("t1", w_bytes(rnd)), ALL_R,
                 tokens=t1),
        BadInput("gzip_of_garbage", "t1.nii.gz is a valid gzip stream of random bytes",
                 per_case_file("t1", w_bytes(gzip.compress(rnd))), ALL_R, tokens=t1),
        BadInput("plain_nii_named_gz", "t1.nii.gz is an uncompressed NIfTI (no gzip) with a .gz name",
                 per_case_file("t1", w_plain_nii_named_gz), {"check": E, "train": E, "infer": E}, tokens=t1),
        # --- wrong dimensionality / channels ---
        BadInput("dims_2d", "t1 is a 2D slice (24 x 24)", per_case_file("t1", w_array(lambda a: a[:, :, 12])), ALL_R,
                 tokens=t1),
        BadInput("dims_4d_frames", "t1 is 4D (24^3 x 2 frames)",
                 per_case_file("t1", w_array(lambda a: np.stack([a, a], -1))), ALL_R, tokens=t1, quick=True),
        BadInput("dims_4d_singleton", "t1 is 4D with a trailing axis of 1 (24^3 x 1): the same volume",
                 per_case_file("t1", w_array(lambda a: a[..., None])), {"check": E, "train": E, "infer": E},
                 tokens=t1),
        BadInput("dims_5d", "t1 is 5D (24^3 x 1 x 3)",
                 per_case_file("t1", w_array(lambda a: np.stack([a] * 3, -1)[..., None, :])), ALL_R, tokens=t1),
        BadInput("channels_3", "t1 has 3 channels (24^3 x 3) where one contrast is expected",
                 per_case_file("t1", w_array(lambda a: np.stack([a, a * 0.5, a * 0.2], -1))), ALL_R, tokens=t1),
        # --- values ---
        BadInput("nan_voxels", "t1 has 10 NaN voxels",
                 per_case_file("t1", w_array(lambda a: _put(a, np.nan))), ALL_R, tokens=t1, quick=True),
        BadInput("inf_voxels", "t1 has 10 +Inf voxels", per_case_file("t1", w_array(lambda a: _put(a, np.inf))),
                 ALL_R, tokens=t1),
        BadInput("all_nan", "t1 is NaN everywhere", per_case_file("t1", w_array(lambda a: a * np.nan)), ALL_R,
                 tokens=t1),
        BadInput("zero_size_axis", "t1 has shape 24 x 0 x 24",
                 per_case_file("t1", w_array(lambda a: a[:, :0, :])), ALL_R, tokens=t1),
        BadInput("constant_zero_image", "t1 is zero everywhere (a blank export)",
                 per_case_file("t1", w_array(lambda a: a * 0)), {"check": R, "train": E, "infer": E}, tokens=t1,),
        BadInput("tiny_volume", "every image of two cases is 4^3 voxels (smaller than the 16^3 patch)", tiny_volumes,
                 {"check": E, "train": E, "infer": E}, tokens=t1),
        # --- dtypes and formats that are valid ---
        BadInput("int16_dtype", "t1 stored as int16", per_case_file("t1", w_array(lambda a: a, np.int16)), ALL_A,
                 tokens=t1),
        BadInput("uint8_dtype", "t1 rescaled to 0-255 and stored as uint8",
                 per_case_file("t1", w_array(lambda a: a / a.max() * 255, np.uint8)), ALL_A, tokens=t1),
        BadInput("float64_dtype", "t1 stored as float64", per_case_file("t1", w_array(lambda a: a, np.float64)),
                 ALL_A, tokens=t1),
        BadInput("nifti2_format", "t1 written as NIfTI-2", per_case_file("t1", w_array(lambda a: a, nifti2=True)),
                 ALL_A, tokens=t1),
        BadInput("uncompressed_nii", "t1 as an uncompressed .nii",
                 per_case_file("t1", w_array(lambda a: a), suffix=".nii"), ALL_A, tokens=t1),
        # --- geometry between the keys of a case ---
        BadInput("shape_mismatch_t2", "t2 is 20^3 while t1 is 24^3",
                 per_case_file("t2", w_array(lambda a: a[:20, :20, :20], aff=affine(shape=(20, 20, 20)), key="t2")),
                 {"check": R, "train": R, "infer": E}, tokens=t2),
        BadInput("affine_shift_t2", "t2 is translated by 10 mm (same shape, other grid)",
                 per_case_file("t2", w_array(lambda a: a, aff=affine(shift=(10, 0, 0)), key="t2")),
                 {"check": R, "train": R, "infer": E}, tokens=t2),
        BadInput("spacing_mismatch_t2", "t2 has 2 mm voxels while t1 has 4 mm",
                 per_case_file("t2", w_array(lambda a: a, aff=affine(spacing=2.0), key="t2")),
                 {"check": R, "train": R, "infer": E}, tokens=t2),
        BadInput("mask_shape_mismatch", "brain_mask is 20^3 while t1 is 24^3",
                 per_case_file("brain_mask", w_array(lambda a: a[:20, :20, :20], np.uint8, affine(shape=(20, 20, 20)),
                                                     key="brain_mask")), ALL_R, tokens=bm),
        # --- masks ---
        BadInput("empty_mask", "brain_mask has no foreground voxel",
                 per_case_file("brain_mask", w_array(lambda a: a * 0, np.uint8, key="brain_mask")), ALL_R, tokens=bm,),
        BadInput("nonbinary_mask", "brain_mask holds labels 0..3",
                 per_case_file("brain_mask", w_array(lambda a: a * np.random.default_rng(0).integers(1, 4, a.shape),
                                                     np.uint8, key="brain_mask")),
                 {"check": R, "train": E, "infer": E}, tokens=bm),
        BadInput("fractional_mask", "brain_mask is float with values 0 and 0.5",
                 per_case_file("brain_mask", w_array(lambda a: a * 0.5, np.float32, key="brain_mask")),
                 {"check": R, "train": E, "infer": E}, tokens=bm),
        # --- paths ---
        BadInput("missing_file", "t1 points at a file that does not exist",
                 set_value("t1", lambda f, cid, r: f"{cid}/t1_missing.nii.gz"), ALL_R, tokens=("t1_missing",),),
        BadInput("path_is_directory", "t1 points at the case folder",
                 set_value("t1", lambda f, cid, r: cid), ALL_R, tokens=("case000", "case004", "t1")),
        BadInput("unsupported_extension", "t1 points at a .txt file",
                 per_case_file("t1", w_bytes(b"not an image\n"), suffix=".txt"), ALL_R, tokens=("t1.txt",)),
        BadInput("list_valued_path", "t1 is a list of two files",
                 set_value("t1", lambda f, cid, r: [f"{cid}/t1.nii.gz", f"{cid}/t2.nii.gz"]),
                 {"check": E, "train": R, "infer": R}, tokens=t1, quick=True),
        BadInput("number_as_path", "t1 is the number 42", set_value("t1", lambda f, cid, r: 42), ALL_R,
                 tokens=("42", "t1")),
        BadInput("null_path", "t1 is null", set_value("t1", lambda f, cid, r: None), ALL_R, tokens=("t1", "None")),
        BadInput("absolute_path", "t1 is an absolute path to a valid file",
                 set_value("t1", lambda f, cid, r: str(f / cid / "t1.nii.gz")), ALL_A, tokens=t1),
        BadInput("dotdot_path_valid", "t1 is '../<dataset>/<case>/t1.nii.gz', a valid relative path",
                 set_value("t1", lambda f, cid, r: f"../{f.name}/{cid}/t1.nii.gz"), ALL_A, tokens=t1),
        # --- dataset.json ---
        BadInput("json_syntax_error", "dataset.json has a trailing comma", json_text(b'{"training": [],}'), ALL_R,
                 tokens=("dataset.json",), quick=True),
        BadInput("json_top_level_list", "dataset.json is a list", json_text(b"[]"), ALL_R, tokens=("dataset.json",)),
        BadInput("json_empty_object", "dataset.json is {}", json_text(b"{}"), ALL_R, tokens=("dataset.json",)),
        BadInput("json_binary_garbage", "dataset.json holds random bytes", json_text(rnd[:300]), ALL_R,
                 tokens=("dataset.json",)),
        BadInput("json_missing", "the folder has no dataset.json", json_text(None), ALL_R, tokens=("dataset.json",)),
        BadInput("json_split_not_list", "'training' is an object",
                 json_edit(lambda d, f, r: d.update(training={"case000": d["training"][0]})), ALL_R,
                 tokens=("training",)),
        BadInput("json_case_not_object", "a training case is the number 42",
                 json_edit(lambda d, f, r: d["training"].append(42)), ALL_R, tokens=("training", "42")),
        BadInput("json_duplicate_ids", "case001 has the id of case000",
                 json_edit(lambda d, f, r: find_case(d, "case001").update(id="case000")), ALL_R, tokens=("case000",)),
        BadInput("json_missing_key", "case000 and case004 have no t1",
                 json_edit(lambda d, f, r: [find_case(d, c).pop("t1") for c in FILE_TARGETS]), ALL_R,
                 tokens=("t1",)),
        BadInput("json_keys_not_mapping", "'keys' is a list", json_edit(lambda d, f, r: d.update(keys=list(d["keys"]))),
                 ALL_R, tokens=("keys",)),
        BadInput("json_unknown_kind", "'keys' declares t1 as kind 'picture' (a typo)",
                 json_edit(lambda d, f, r: d["keys"].update(t1="picture")), ALL_R, tokens=("picture", "t1")),
        BadInput("json_empty_training", "the training split is empty",
                 json_edit(lambda d, f, r: d.update(training=[])), {"check": E, "train": R, "infer": A},
                 tokens=("training",)),
        BadInput("json_extra_fields", "unknown top-level and per-case fields (age, site, notes)",
                 json_edit(lambda d, f, r: [d.update(study="x", version=3)] +
                           [c.update(age=42, site="A", notes="ok") for s in HEAD_SPLITS for c in d[s]]),
                 ALL_A, tokens=()),
        BadInput("json_unused_missing_file", "an extra key 'dwi' (not used by the pipeline) points at a missing file",
                 json_edit(lambda d, f, r: find_case(d, "case000").update(dwi="case000/dwi.nii.gz")),
                 {"check": R, "train": E, "infer": E}, tokens=("dwi",)),
        BadInput("json_utf8_bom", "dataset.json starts with a UTF-8 byte-order mark",
                 lambda f, d, r: b"\xef\xbb\xbf" + json.dumps(d).encode(), {"check": E, "train": E, "infer": E},
                 tokens=("dataset.json",)),
        BadInput("json_no_ids", "no case has an 'id' (ids come from the file names)",
                 json_edit(lambda d, f, r: [c.pop("id") for s in HEAD_SPLITS for c in d[s]]),
                 {"check": A, "train": A, "infer": E}, tokens=()),
        # --- case ids ---
        BadInput("id_parent_traversal", "case ids '../../../../escape_val' (validation) and '../escape_test' (test)",
                 set_ids("../../../../escape_val", "../escape_test"), ALL_R, bad_case="../escape_test",
                 tokens=("escape_val", "escape_test"), quick=True),
        BadInput("id_absolute", "case ids are absolute paths inside the sandbox",
                 set_ids(lambda r: str(r / "abs_val"), lambda r: str(r / "abs_test")),
                 {"check": R, "train": E, "infer": R}, bad_case="<abs_test>",
                 tokens=("abs_val", "abs_test")),
        BadInput("id_with_slash", "case ids 'sub/val' and 'sub/test'", set_ids("sub/val", "sub/test"),
                 {"check": E, "train": E, "infer": E}, bad_case="sub/test", tokens=("sub/val", "sub/test")),
        BadInput("id_integer", "case ids are the integers 7 and 8", set_ids(7, 8),
                 {"check": A, "train": A, "infer": A}, bad_case="8", tokens=()),
        BadInput("id_too_long", "case ids of 300 characters", set_ids("v" * 300, "t" * 300),
                 {"check": E, "train": E, "infer": E}, bad_case="t" * 300, tokens=("vvvvvvvvvv", "tttttttttt")),
        BadInput("id_with_nul", "case ids holding a NUL character", set_ids("val\x00x", "test\x00x"),
                 {"check": E, "train": E, "infer": E}, bad_case="test\x00x", tokens=("val", "test")),
        BadInput("id_with_newline", "case ids holding a newline", set_ids("val\nx", "test\nx"),
                 {"check": E, "train": E, "infer": E}, bad_case="test\nx", tokens=("val", "test")),
        # --- expression matrices (expression_vae) ---
        BadInput("expr_constant_matrix", "every value of the expression matrix is 1.0", expr_edit(_constant),
                 {"check": R, "train": E, "infer": E}, kind="expression", tokens=("expression.tsv",), quick=True,
                 own_run=True),
        BadInput("expr_nan_cell", "one NaN in the expression matrix", expr_edit(_nan_cell), ALL_R, kind="expression",
                 tokens=("expression.tsv",)),
        BadInput("expr_inf_cell", "one inf in the expression matrix", expr_edit(_inf_cell), ALL_R, kind="expression",
                 tokens=("expression.tsv",)),
        BadInput("expr_text_cell", "one cell is text ('n/a (low)')", expr_edit(_text_cell), ALL_R, kind="expression",
                 tokens=("expression.tsv",)),
        BadInput("expr_empty_matrix", "the matrix has a header and no rows", expr_edit(_empty), ALL_R,
                 kind="expression", tokens=("expression.tsv",)),
        BadInput("expr_duplicate_samples", "two rows share a sample id", expr_edit(_dup_ids), ALL_R,
                 kind="expression", tokens=("expression.tsv", "S000")),
        BadInput("expr_missing_table", "tables.expression points at a missing file",
                 json_edit(lambda d, f, r: d["tables"].update(expression="missing.tsv")), ALL_R, kind="expression",
                 tokens=("missing.tsv",)),
        BadInput("expr_unknown_split_id", "a test id is not a row of the matrix",
                 json_edit(lambda d, f, r: d["test"].append({"id": "NOT_A_SAMPLE"})), ALL_R, kind="expression",
                 tokens=("NOT_A_SAMPLE",)),
        BadInput("expr_fewer_genes", "40 genes where the trained model has 60 (infer with the fixture run)",
                 expr_edit(_fewer_genes), {"check": A, "infer": R}, kind="expression",
                 tokens=("expression.tsv", "GENE", "feature", "gene")),
        BadInput("expr_constant_gene", "one gene is constant (valid data)", expr_edit(_constant_gene), ALL_A,
                 kind="expression", tokens=()),
    ]
    return inputs


def _put(a: np.ndarray, value) -> np.ndarray:
    a = a.copy()
    idx = np.random.default_rng(3).integers(0, a.size, 10)
    a.reshape(-1)[idx] = value
    return a


def make_variant(ctx: Ctx, bad: BadInput) -> Path:
    folder = copy_dataset(ctx.h, ctx.root / "data", bad.kind)
    data = load_json(folder)
    text = bad.apply(folder, data, ctx.root)
    if text is DELETE_JSON:
        (folder / "dataset.json").unlink()
    elif isinstance(text, bytes):
        (folder / "dataset.json").write_bytes(text)
    else:
        save_json(folder, data)
    return folder


def expected_text(bad: BadInput, command: str) -> str:
    want = bad.expect[command]
    what = {"check": "check-data", "train": "train", "infer": "infer"}[command]
    if want == R:
        tail = {"check": "exits non-zero and names the file / case / key",
                "train": "stops before training with a one-line error naming the file / case",
                "infer": "fails that case with a message naming it, still predicts the other test case, writes "
                         "nothing outside --out"}[command]
    elif want == A:
        tail = {"check": "reports no problem", "train": "trains (exit 0)",
                "infer": "predicts both test cases with finite outputs"}[command]
    else:
        tail = "either handles it correctly or refuses with a clear error (no traceback, nothing written outside " \
               "its folder, no non-finite output marked ok)"
    return f"{bad.what}: {what} {tail}."


def run_input_scenario(ctx: Ctx, bad: BadInput, command: str) -> Outcome:
    h = ctx.h
    folder = make_variant(ctx, bad)
    want = bad.expect[command]
    tokens = bad.tokens
    if command == "check":
        before = files_under(ctx.root)
        res = ctx.medgen("check-data", folder, timeout=120)
        leaks = escaped(ctx.root, before, [])
        if leaks:
            return Outcome("silent_wrong", f"check-data wrote {leaks[:3]}")
        if res.crashed:
            return Outcome("traceback", res.crash_reason())
        if res.rc == 0:
            if want == R:
                return Outcome("silent_wrong", "check-data reported no problem for a bad input")
            return Outcome("ok", "check-data reported no problem")
        if want == A:
            return Outcome("silent_wrong", "check-data reported problems in valid data: " + _problem_line(res),
                           {"expected_success": True})
        out = error_outcome(res, tokens)
        out.reason = _problem_line(res) or out.reason
        return out

    if command == "train":
        pipeline = "expression_vae" if bad.kind == "expression" else "mr_synthesis"
        extra = [] if bad.kind == "expression" else ["train.iterations=2", "train.val_every=2"]
        run_dir = ctx.root / "runs" / pipeline / "r"
        before = files_under(ctx.root)
        res = ctx.medgen(*train_args(pipeline, folder, ctx.root / "runs", "r", *extra), timeout=400)
        leaks = escaped(ctx.root, before, [run_dir])
        if leaks:
            return Outcome("silent_wrong", f"train wrote outside its run folder: {leaks[:3]}")
        if res.crashed:
            return Outcome("traceback", res.crash_reason())
        if res.rc == 0:
            if want == R:
                return Outcome("silent_wrong", "trained on a bad input without an error")
            return Outcome("ok", "trained")
        return error_outcome(res, tokens, expected_success=want == A)

    # infer
    out = ctx.root / "out" / "preds"
    if bad.kind == "expression":
        run = h.fixture("vae", fx_vae)
        if bad.own_run:
            tr = ctx.medgen(*train_args("expression_vae", folder, ctx.root / "runs", "own"), timeout=400)
            if tr.rc != 0:
                o = tr.crashed and Outcome("traceback", "train on this input: " + tr.crash_reason())
                return o or Outcome("clear_error", "train refused this input, so there is no run to infer with: "
                                    + tr.message[:200], {"names_the_problem": tr.names(tokens)})
            run = ctx.root / "runs" / "expression_vae" / "own"
        before = files_under(ctx.root)
        res = ctx.medgen("infer", run, folder, "--out", out, timeout=400)
        leaks = escaped(ctx.root, before, [out, ctx.root / "runs"])
        if leaks:
            return Outcome("silent_wrong", f"infer wrote outside --out: {leaks[:3]}")
        if res.crashed:
            return Outcome("traceback", res.crash_reason())
        nonfinite = _nonfinite_tables(out)
        if res.rc == 0:
            if nonfinite:
                return Outcome("silent_wrong", f"non-finite values in {nonfinite[:2]} with exit 0")
            if want == R:
                return Outcome("silent_wrong", "infer exited 0 on a bad input, without a message")
            return Outcome("ok", "predicted")
        return error_outcome(res, tokens, expected_success=want == A)

    run = h.fixture("msyn", fx_msyn)
    bad_id = str(ctx.root / "abs_test") if bad.bad_case == "<abs_test>" else bad.bad_case
    before = files_under(ctx.root)
    res = ctx.medgen("infer", run, folder, "--split", "test", "--out", out, timeout=400)
    leaks = escaped(ctx.root, before, [out])
    good = prediction(out, "case005")
    badp = prediction(out, bad_id) if "\x00" not in bad_id else {"written": False, "status": None, "finite": None}
    details = {"good_case_written": good["written"], "bad_case_status": badp["status"]}
    if leaks:
        return Outcome("silent_wrong", f"infer wrote outside --out: {leaks[:3]}", details)
    if res.crashed:
        return Outcome("traceback", res.crash_reason() + ("" if good["written"] else "; the good case got no output"),
                       details)
    for p in (good, badp):
        if p["written"] and p["finite"] is False:
            return Outcome("silent_wrong", "a prediction with non-finite voxels was written and marked ok", details)
    if want == R:
        if badp["written"]:
            return Outcome("silent_wrong", "the bad case was predicted and marked ok", details)
        man = manifest(out)
        failed_seen = res.rc != 0 or any(int(n) > 0 for n in re.findall(r"failed (\d+)", res.out)) or (
            man is not None and any(c.get("status") != "ok" for c in man["cases"].values()))
        if not failed_seen:
            return Outcome("silent_wrong", "exit 0, and the bad case was neither predicted nor reported as failed",
                           details)
        o = error_outcome(res, tokens) if res.rc != 0 else Outcome("clear_error", "case failed and reported", {})
        o.details.update(details)
        return _with_manifest_error(o, res, out, bad_id, tokens, details)
    if good["written"] and res.rc == 0 and badp["written"]:
        return Outcome("ok", "both test cases predicted", details)
    if good["written"] and not badp["written"]:  # the changed case was refused, the other one predicted
        o = error_outcome(res, tokens, expected_success=want == A) if res.rc != 0 else \
            Outcome("clear_error", "the case was refused (exit 0)", {"expected_success": want == A})
        return _with_manifest_error(o, res, out, bad_id, tokens, details)
    if res.rc == 0:
        return Outcome("silent_wrong", "exit 0 but the good test case has no output", details)
    o = error_outcome(res, tokens, expected_success=want == A)
    return _with_manifest_error(o, res, out, bad_id, tokens, details)


def _with_manifest_error(o: Outcome, res: Result, out: Path, case_id: str, tokens, details: dict) -> Outcome:
    """infer reports a failed case in its manifest (and its exit code), not on stderr: when stderr says
    nothing, the manifest's error is the message."""
    o.details.update(details)
    recorded = _manifest_error(out, case_id)
    if recorded:
        o.details["manifest_error"] = recorded[:300]
        o.details["names_the_problem"] = any(t in recorded for t in tokens) or bool(o.details.get("names_the_problem"))
    if not any("error" in ln.lower() for ln in res.err.splitlines()):
        prefix = "valid input rejected: " if o.details.get("expected_success") else ""
        o.reason = prefix + ("case failed in the manifest: " + recorded[:200] if recorded
                             else "case failed: " + " ".join(res.out.split())[-160:])
    if not o.details.get("good_case_written", True):
        o.reason += " (the good test case got no output)"
    return o


def _problem_line(res: Result) -> str:
    lines = [ln.strip() for ln in res.out.splitlines() if ln.strip().startswith("- case ")]
    return (lines[0] if lines else res.message)[:240]


def _manifest_error(out: Path, case_id: str) -> str:
    man = manifest(out)
    if man and case_id in man["cases"]:
        return str(man["cases"][case_id].get("error") or "")
    return ""


def _nonfinite_tables(out: Path) -> list[str]:
    bad = []
    for p in sorted(out.glob("*.tsv")) if out.is_dir() else []:
        text = p.read_text(errors="replace").lower()
        if any(tok in text.replace("\t", " ").split() for tok in ("nan", "inf", "-inf")):
            bad.append(p.name)
    return bad


# ----------------------------------------------------------------------------------------------------------
# group "faults"
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Scenario:
    group: str
    name: str
    expected: str
    fn: Callable
    finding: str = ""
    quick: bool = False


FAULTS: list[Scenario] = []


def fault(name: str, finding: str = "", quick: bool = False):
    def deco(fn):
        FAULTS.append(Scenario("faults", name, " ".join((fn.__doc__ or "").split()), fn, finding, quick))
        return fn
    return deco


class _RunsCode:
    """Unpickling this object calls open(marker, "w"): the marker file proves that loading ran code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def craft_checkpoint(path: Path, marker: Path, digest: bool) -> None:
    """Replace `path` by a checkpoint holding the real state plus an object that runs code when unpickled."""
    import torch

    state = None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)  # the fixture's own file
    except Exception:
        pass
    state = dict(state) if isinstance(state, dict) else {"format": "medgen-checkpoint", "format_version": 1}
    state["provenance"] = _RunsCode(str(marker))
    torch.save(state, path)
    digest_file = path.with_name(path.name + ".sha256")
    digest_file.unlink(missing_ok=True)
    if digest:  # a digest that matches the crafted bytes: integrity is not safety
        digest_file.write_text(sha(path) + "\n")


def code_ran_outcome(res: Result, marker: Path, what: str) -> Outcome:
    if marker.exists():
        return Outcome("silent_wrong", f"code in the crafted checkpoint ran during {what} (exit {res.rc})")
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0:
        return Outcome("ok", f"{what} finished without running the checkpoint's code")
    return error_outcome(res, ("best.pt", "last.pt", "checkpoint", ".pt"))


def msyn_copy(ctx: Ctx, name: str = "r") -> Path:
    return copy_run(ctx.h.fixture("msyn", fx_msyn), ctx.root / "runs" / "mr_synthesis" / name)


def heads(ctx: Ctx) -> Path:
    return ctx.h.fixture("heads", fx_heads)


def _ckpt_infer(ctx: Ctx, digest: bool, target: str = "rundir") -> Outcome:
    run = msyn_copy(ctx)
    marker = ctx.root / "CODE_RAN"
    craft_checkpoint(run / "checkpoints" / "best.pt", marker, digest)
    arg = run if target == "rundir" else run / "checkpoints" / "best.pt"
    res = ctx.medgen("infer", arg, heads(ctx), "--out", ctx.root / "out")
    return code_ran_outcome(res, marker, "infer")


@fault("ckpt_exec_infer_rundir", "checkpoint runs code", quick=True)
def _(ctx):
    """best.pt of a run holds a pickled object whose unpickling touches a marker file (no .sha256 beside it).
    `medgen infer RUN_DIR` must refuse to unpickle arbitrary objects (clear error) and never run the code."""
    return _ckpt_infer(ctx, digest=False)


@fault("ckpt_exec_infer_rundir_sha", "checkpoint runs code")
def _(ctx):
    """As ckpt_exec_infer_rundir, with a matching .sha256 beside the crafted file: a digest proves integrity,
    not safety; infer must still not run the code."""
    return _ckpt_infer(ctx, digest=True)


@fault("ckpt_exec_infer_file", "checkpoint runs code")
def _(ctx):
    """`medgen infer CKPT_FILE` on a crafted checkpoint file: must not run the code inside."""
    return _ckpt_infer(ctx, digest=True, target="file")


@fault("ckpt_exec_export", "checkpoint runs code")
def _(ctx):
    """`medgen export RUN_DIR` with a crafted best.pt: must not run the code inside."""
    run = msyn_copy(ctx)
    marker = ctx.root / "CODE_RAN"
    craft_checkpoint(run / "checkpoints" / "best.pt", marker, True)
    res = ctx.medgen("export", run, "--out", ctx.root / "export")
    return code_ran_outcome(res, marker, "export")


@fault("ckpt_exec_resume", "checkpoint runs code")
def _(ctx):
    """`medgen train --resume` with a crafted last.pt (and matching digest): must not run the code inside."""
    run = msyn_copy(ctx)
    marker = ctx.root / "CODE_RAN"
    craft_checkpoint(run / "checkpoints" / "last.pt", marker, True)
    res = ctx.medgen(*train_args("mr_synthesis", heads(ctx), ctx.root / "runs", "r", "train.iterations=12"),
                     "--resume")
    return code_ran_outcome(res, marker, "train --resume")


def _ckpt_cascade(ctx: Ctx, fixture: str, builder, pipeline: str) -> Outcome:
    run = copy_run(ctx.h.fixture(fixture, builder), ctx.root / "runs" / pipeline / "r")
    marker = ctx.root / "CODE_RAN"
    target = run / "stage2" / "checkpoints" / "best.pt"
    if not target.exists():
        target = run / "stage2" / "checkpoints" / "last.pt"
    craft_checkpoint(target, marker, True)
    res = ctx.medgen("infer", run, heads(ctx), "--out", ctx.root / "out")
    return code_ran_outcome(res, marker, "infer (cascade stage 2)")


@fault("ckpt_exec_cascade_pet", "checkpoint runs code")
def _(ctx):
    """pet_lowdose is a two-stage cascade; infer loads each stage's checkpoint. A crafted stage-2 best.pt must
    not run code."""
    return _ckpt_cascade(ctx, "pet", fx_pet, "pet_lowdose")


@fault("ckpt_exec_cascade_mr_to_ct", "checkpoint runs code")
def _(ctx):
    """mr_to_ct (auto-context, two stages): a crafted stage-2 checkpoint must not run code at infer."""
    return _ckpt_cascade(ctx, "ct", fx_ct, "mr_to_ct")


@fault("ckpt_exec_prev_fallback", "checkpoint runs code")
def _(ctx):
    """best.pt is truncated, so the loader falls back to best.prev.pt, which is crafted: the fallback must not
    run code either."""
    run = msyn_copy(ctx)
    marker = ctx.root / "CODE_RAN"
    ck = run / "checkpoints"
    if (ck / "best.pt").exists():
        shutil.copy(ck / "best.pt", ck / "best.prev.pt")
        craft_checkpoint(ck / "best.prev.pt", marker, True)
        (ck / "best.pt").write_bytes((ck / "best.pt").read_bytes()[:4000])
    res = ctx.medgen("infer", run, heads(ctx), "--out", ctx.root / "out")
    return code_ran_outcome(res, marker, "infer (fallback to the previous checkpoint)")


def poison_checkpoint(path: Path) -> bool:
    """Overwrite the first 64 bytes of every stored tensor with float32 NaN; False if the layout is unknown."""
    data = bytearray(path.read_bytes())
    nan = struct.pack("<f", float("nan")) * 16
    try:
        with zipfile.ZipFile(path) as z:
            infos = [i for i in z.infolist() if "/data/" in i.filename and i.compress_type == zipfile.ZIP_STORED
                     and i.file_size >= 64]
    except zipfile.BadZipFile:
        infos = []
    for info in infos:
        off = info.header_offset
        n, m = struct.unpack("<HH", data[off + 26: off + 30])
        start = off + 30 + n + m
        data[start: start + 64] = nan
    if not infos:
        return False
    path.write_bytes(data)
    return True


def _altered(ctx: Ctx, keep_digest: bool) -> Outcome:
    run = msyn_copy(ctx)
    ck = run / "checkpoints" / "best.pt"
    if not poison_checkpoint(ck):
        raise Skip("the checkpoint is not a torch zip archive: cannot alter tensor bytes in place")
    if not keep_digest:
        for p in ck.parent.glob("best*.sha256"):
            p.unlink()
    out = ctx.root / "out"
    res = ctx.medgen("infer", run, heads(ctx), "--out", out)
    preds = [prediction(out, c) for c in ("case004", "case005")]
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if any(p["written"] and p["finite"] is False for p in preds):
        return Outcome("silent_wrong", "predictions with NaN voxels written and marked ok from an altered checkpoint")
    if res.rc == 0 and all(p["written"] for p in preds):
        warned = any(w in res.err.lower() for w in ("previous", "checksum", "digest", "corrupt", "modified"))
        if warned:
            return Outcome("ok", "the altered file was detected and a good copy used, with a warning")
        return Outcome("silent_wrong", "predictions from an altered checkpoint, without any warning")
    return error_outcome(res, ("best.pt", "checkpoint"))


@fault("ckpt_altered_no_digest", "checkpoint integrity", quick=True)
def _(ctx):
    """Tensor bytes inside best.pt are overwritten with NaN and its .sha256 removed. infer must detect the
    damage (checkpoints carry their own integrity check) or at least never write NaN predictions marked ok."""
    return _altered(ctx, keep_digest=False)


@fault("ckpt_altered_with_digest", "checkpoint integrity")
def _(ctx):
    """Tensor bytes inside best.pt are altered and its .sha256 kept (now a mismatch): infer must refuse it or
    fall back to a good copy with a warning; never NaN predictions marked ok."""
    return _altered(ctx, keep_digest=True)


@fault("ckpt_truncated_no_fallback")
def _(ctx):
    """best.pt and every other checkpoint file cut to 4 kB: infer must stop with a clear error naming the file."""
    run = msyn_copy(ctx)
    for p in (run / "checkpoints").iterdir():
        if p.suffix == ".pt":
            p.write_bytes(p.read_bytes()[:4096])
    res = ctx.medgen("infer", run, heads(ctx), "--out", ctx.root / "out")
    if res.rc == 0:
        return Outcome("silent_wrong", "infer succeeded on truncated checkpoints")
    return error_outcome(res, (".pt", "checkpoint"))


@fault("ckpt_random_bytes_file")
def _(ctx):
    """`medgen infer junk.pt` where junk.pt is random bytes: a clear error naming the file."""
    junk = ctx.root / "runs" / "x" / "checkpoints" / "best.pt"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    res = ctx.medgen("infer", junk, heads(ctx), "--out", ctx.root / "out")
    if res.rc == 0:
        return Outcome("silent_wrong", "infer accepted random bytes as a checkpoint")
    return error_outcome(res, ("best.pt",))


@fault("infer_checkpoint_typo")
def _(ctx):
    """`--checkpoint bset` (a typo of best): must be refused, not silently replaced by last.pt."""
    run = msyn_copy(ctx)
    res = ctx.medgen("infer", run, heads(ctx), "--out", ctx.root / "out", "--checkpoint", "bset")
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0:
        return Outcome("silent_wrong", "an unknown --checkpoint name was accepted (another checkpoint was used)")
    return error_outcome(res, ("bset",))


# ----- stale predictions -----

def _same_predictions(a: Path, b: Path, ids=("case004", "case005")) -> bool | None:
    """True when every prediction of `ids` in folder b equals (voxel for voxel) the one in folder a."""
    same = []
    for cid in ids:
        fa, fb = case_files(a, cid), case_files(b, cid)
        fa = [p for p in fa if p.exists() and ".nii" in p.name]
        fb = [p for p in fb if p.exists() and ".nii" in p.name]
        if not fa or not fb:
            return None
        same.append(all(np.array_equal(read_nifti(x), read_nifti(y)) for x, y in zip(sorted(fa), sorted(fb))))
    return all(same)


def _snapshot_preds(out: Path, dst: Path) -> Path:
    shutil.copytree(out, dst)
    man = manifest(dst)
    if man:  # point the copy's manifest at the copied files
        for entry in man["cases"].values():
            for f in entry.get("files", []):
                if isinstance(f, dict) and "path" in f:
                    f["path"] = str(dst / Path(f["path"]).name)
        (dst / "manifest.json").write_text(json.dumps(man))
    return dst


def _stale_outcome(res: Result, first: Path, out: Path) -> Outcome:
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc != 0:
        return error_outcome(res, ("--overwrite", "predictions", str(out)))
    same = _same_predictions(first, out)
    if same is None:
        return Outcome("silent_wrong", "exit 0 but predictions are missing")
    if same:
        said = [ln.strip() for ln in res.out.splitlines() if ln.strip()]
        said = re.sub(r" to \S+;", " to OUT;", said[-1]) if said else ""
        return Outcome("silent_wrong", f"exit 0 and the first call's predictions were kept, served as new ('{said}')")
    return Outcome("ok", "the predictions were recomputed")


@fault("stale_after_overwrite_retrain", "stale predictions", quick=True)
def _(ctx):
    """infer into OUT, retrain the run with --overwrite (another seed), infer into OUT again: the second infer
    must recompute (or refuse with a clear error), never keep the first model's files and exit 0."""
    run = msyn_copy(ctx)
    out = ctx.root / "out"
    ctx.medgen("infer", run, heads(ctx), "--out", out)
    first = _snapshot_preds(out, ctx.root / "first")
    tr = ctx.medgen(*train_args("mr_synthesis", heads(ctx), ctx.root / "runs", "r", "train.seed=3"), "--overwrite")
    if tr.rc != 0:
        return error_outcome(tr) if tr.crashed else Outcome("clear_error", "retrain refused: " + tr.message[:200])
    res = ctx.medgen("infer", run, heads(ctx), "--out", out)
    return _stale_outcome(res, first, out)


@fault("stale_other_dataset", "stale predictions")
def _(ctx):
    """infer into OUT with dataset A, then with dataset B (same case ids, other images): the second call must
    predict B (or refuse), never keep A's predictions and exit 0."""
    run = ctx.h.fixture("msyn", fx_msyn)
    out = ctx.root / "out"
    ctx.medgen("infer", run, heads(ctx), "--out", out)
    first = _snapshot_preds(out, ctx.root / "first")
    res = ctx.medgen("infer", run, ctx.h.fixture("heads_other", fx_heads_other), "--out", out)
    return _stale_outcome(res, first, out)


@fault("stale_checkpoint_last", "stale predictions")
def _(ctx):
    """infer --checkpoint best into OUT, then --checkpoint last (other weights) into OUT: the second call must
    use last's weights (or refuse), never keep best's predictions and exit 0."""
    run = msyn_copy(ctx)
    other = ctx.h.fixture("msyn_b", fx_msyn_b)
    for p in (other / "checkpoints").iterdir():
        if p.name.startswith("last"):
            shutil.copy(p, run / "checkpoints" / p.name)
    out = ctx.root / "out"
    ctx.medgen("infer", run, heads(ctx), "--out", out, "--checkpoint", "best")
    first = _snapshot_preds(out, ctx.root / "first")
    res = ctx.medgen("infer", run, heads(ctx), "--out", out, "--checkpoint", "last")
    return _stale_outcome(res, first, out)


@fault("overwrite_keeps_old_best", "stale predictions")
def _(ctx):
    """Retrain a run with --overwrite on a dataset without a validation split (so the new run writes no best.pt):
    infer must then use the new run's weights, not the previous run's best.pt left in the folder."""
    run = msyn_copy(ctx)
    ds = copy_dataset(ctx.h, ctx.root / "noval")
    data = load_json(ds)
    data["validation"] = []
    save_json(ds, data)
    ctx.medgen("infer", run, heads(ctx), "--out", ctx.root / "old")
    tr = ctx.medgen(*train_args("mr_synthesis", ds, ctx.root / "runs", "r", "train.seed=5", "train.iterations=4"),
                    "--overwrite")
    if tr.crashed:
        return Outcome("traceback", "retrain: " + tr.crash_reason())
    if tr.rc != 0:
        return Outcome("clear_error", "retrain refused: " + tr.message[:200])
    res = ctx.medgen("infer", run, heads(ctx), "--out", ctx.root / "new")
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc != 0:
        return error_outcome(res, ("best", "checkpoint"))
    same = _same_predictions(ctx.root / "old", ctx.root / "new")
    if same:
        return Outcome("silent_wrong", "after --overwrite, infer used the previous run's best.pt "
                       "(predictions identical to the old run's)")
    return Outcome("ok", "infer used the retrained weights")


@fault("infer_rerun_unchanged")
def _(ctx):
    """Control: infer twice into OUT with nothing changed. Skipping finished cases (or recomputing them) is fine."""
    run = ctx.h.fixture("msyn", fx_msyn)
    out = ctx.root / "out"
    ctx.medgen("infer", run, heads(ctx), "--out", out)
    res = ctx.medgen("infer", run, heads(ctx), "--out", out)
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0 and all(prediction(out, c)["written"] for c in ("case004", "case005")):
        return Outcome("ok", "rerun finished")
    return error_outcome(res, expected_success=True)


# ----- data loss -----

@fault("concurrent_same_run_name", "data loss", quick=True)
def _(ctx):
    """Two trainings started at once into the same run name: one must refuse (clear error) or wait. If neither
    refuses, both train in one folder and mix their checkpoints and logs (data loss), whatever their exit codes."""
    ds = heads(ctx)
    args = train_args("mr_synthesis", ds, ctx.root / "runs", "same", "train.iterations=6", "train.val_every=3")
    a, b = ctx.start(*args, tag="a"), ctx.start(*args, tag="b")
    ra, rb = ctx.finish(a), ctx.finish(b)
    refused = [r for r in (ra, rb) if r.rc != 0 and not r.crashed]
    if not refused:  # neither stopped at the run-directory check: both trained in the one folder
        crashed = [r for r in (ra, rb) if r.crashed]
        return Outcome("data_loss", "both runs trained in one folder (checkpoints and logs mixed); exits "
                       f"{ra.rc} and {rb.rc}" + (f", {crashed[0].crash_reason()}" if crashed else ""))
    other = rb if refused[0] is ra else ra
    if other.crashed:
        return Outcome("traceback", other.crash_reason())
    return error_outcome(refused[0], ("same", "run directory", "already", "lock"))


@fault("infer_overwrites_user_file", "data loss", quick=True)
def _(ctx):
    """The --out folder already holds the user's own case005_output.nii.gz (not written by medgen). Without
    --overwrite, infer must leave it untouched (refuse or skip that case with a message)."""
    out = ctx.root / "out"
    user = out / "case005_output.nii.gz"
    save_nifti(user, np.full(SHAPE, 7.0, np.float32))
    (out / "notes.txt").write_text("my notes\n")
    digest = sha(user)
    res = ctx.medgen("infer", ctx.h.fixture("msyn", fx_msyn), heads(ctx), "--out", out)
    if sha(user) != digest or not (out / "notes.txt").exists():
        return Outcome("data_loss", f"the user's file was overwritten without --overwrite (exit {res.rc})")
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0:
        return Outcome("ok", "the user's file was kept")
    return error_outcome(res, ("case005", "exists", "--overwrite"))


def _infer_all(ctx: Ctx, out: Path) -> Result:
    return ctx.medgen("infer", ctx.h.fixture("msyn", fx_msyn), heads(ctx), "--split", "all", "--out", out)


def _rows(csv: Path) -> int:
    try:
        return max(0, len([ln for ln in csv.read_text().splitlines() if ln.strip()]) - 1)
    except OSError:
        return -1


@fault("second_evaluate_replaces_eval", "data loss", quick=True)
def _(ctx):
    """Evaluate a predictions folder on --split all (6 rows), then again on the test split: the first
    eval/per_case.csv must survive (refuse without --overwrite, or write elsewhere)."""
    preds = ctx.root / "run" / "predictions"
    _infer_all(ctx, preds)
    first = ctx.medgen("evaluate", preds, heads(ctx), "--split", "all")
    csv = preds.parent / "eval" / "per_case.csv"
    if first.rc != 0 or not csv.exists():
        return error_outcome(first, expected_success=True) if first.rc != 0 else \
            Outcome("silent_wrong", "evaluate exited 0 but wrote no eval/per_case.csv")
    digest, n_first = sha(csv), _rows(csv)
    res = ctx.medgen("evaluate", preds, heads(ctx))
    if sha(csv) != digest:
        return Outcome("data_loss", f"the first evaluation was replaced ({n_first} rows became {_rows(csv)})")
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0:
        return Outcome("ok", "the second evaluation went elsewhere; the first was kept")
    return error_outcome(res, ("eval", "--overwrite", "exists"))


@fault("report_rewrite_disk_full", "report not atomic")
def _(ctx):
    """Evaluate into E, then evaluate into E again while the disk is full at the moment report.md is rewritten:
    the first report.md must survive intact (reports are written to a temporary file and renamed)."""
    preds = ctx.root / "preds"
    _infer_all(ctx, preds)
    ev = ctx.root / "eval"
    first = ctx.medgen("evaluate", preds, heads(ctx), "--split", "all", "--out", ev)
    report = ev / "report.md"
    if first.rc != 0 or not report.exists():
        return error_outcome(first, expected_success=True)
    digest = sha(report)
    res = ctx.medgen("evaluate", preds, heads(ctx), "--split", "all", "--out", ev,
                     inject={"MEDGEN_RT_FAIL_NAMES": "report.md"})
    text = report.read_text(errors="replace") if report.exists() else ""
    if not text.strip() or "# " not in text:
        return Outcome("data_loss", f"report.md was emptied by the failed rewrite (exit {res.rc})")
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0:
        return Outcome("ok", "report.md complete" + ("" if sha(report) == digest else " (rewritten atomically)"))
    return error_outcome(res, ("report", "eval"))


@fault("infer_full_disk", "one bad case stops infer")
def _(ctx):
    """infer with a full output disk (every file write past 8 kB fails): a clear error naming the folder, no
    traceback, and no file marked ok that is missing or broken."""
    out = ctx.root / "out"
    res = ctx.medgen("infer", ctx.h.fixture("msyn", fx_msyn), heads(ctx), "--out", out,
                     inject={"MEDGEN_RT_FSIZE": 2048})
    preds = {c: prediction(out, c) for c in ("case004", "case005")}
    broken = [c for c, p in preds.items() if p["status"] == "ok" and not p["finite"]]
    if broken:
        return Outcome("silent_wrong", f"cases {broken} marked ok with missing or unreadable files")
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0:
        if all(p["written"] and p["finite"] for p in preds.values()):
            return Outcome("ok", "every prediction fitted under the limit (nothing was tested)")
        return Outcome("silent_wrong", "exit 0 although the predictions could not be written")
    return error_outcome(res, (str(out), "space", "write", "File too large"))


@fault("infer_readonly_out", "one bad case stops infer")
def _(ctx):
    """infer into an existing read-only folder: a clear error naming it, no traceback."""
    if ctx.h.readonly_prefix is None:
        raise Skip("running as root without setpriv: a read-only folder cannot be simulated")
    out = ctx.root / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        res = ctx.medgen("infer", ctx.h.fixture("msyn", fx_msyn), heads(ctx), "--out", out,
                         prefix=ctx.h.readonly_prefix)
    finally:
        out.chmod(0o755)
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0:
        return Outcome("silent_wrong", "exit 0 although nothing could be written")
    return error_outcome(res, (str(out), "writable", "Permission", "read-only"))


@fault("infer_out_missing_parents")
def _(ctx):
    """--out is a folder whose parents do not exist yet: create them and predict (or a clear error)."""
    out = ctx.root / "a" / "b" / "c"
    res = ctx.medgen("infer", ctx.h.fixture("msyn", fx_msyn), heads(ctx), "--out", out)
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0 and prediction(out, "case005")["written"]:
        return Outcome("ok", "created and predicted")
    return error_outcome(res, (str(out),))


@fault("infer_out_is_a_file")
def _(ctx):
    """--out names an existing regular file: a clear error, and the file untouched."""
    out = ctx.root / "out.txt"
    out.write_text("keep me\n")
    res = ctx.medgen("infer", ctx.h.fixture("msyn", fx_msyn), heads(ctx), "--out", out)
    if out.read_text() != "keep me\n":
        return Outcome("data_loss", "the file given as --out was replaced")
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0:
        return Outcome("silent_wrong", "exit 0 with a file as the output folder")
    return error_outcome(res, ("out.txt",))


@fault("train_readonly_root")
def _(ctx):
    """train with output.root in a read-only folder: a clear error before training."""
    if ctx.h.readonly_prefix is None:
        raise Skip("running as root without setpriv: a read-only folder cannot be simulated")
    root = ctx.root / "runs"
    root.mkdir()
    root.chmod(0o555)
    try:
        res = ctx.medgen(*train_args("mr_synthesis", heads(ctx), root, "r"), prefix=ctx.h.readonly_prefix)
    finally:
        root.chmod(0o755)
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0:
        return Outcome("silent_wrong", "trained into a read-only folder with exit 0")
    return error_outcome(res, (str(root), "writable"))


@fault("train_full_disk")
def _(ctx):
    """train with a full disk (writes past 64 kB fail, so checkpoints cannot be saved): a clear error, no
    traceback."""
    res = ctx.medgen(*train_args("mr_synthesis", heads(ctx), ctx.root / "runs", "r"),
                     inject={"MEDGEN_RT_FSIZE": 65536})
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0:
        return Outcome("silent_wrong", "exit 0 although no checkpoint could be written")
    return error_outcome(res, ("checkpoint", "space", "File too large", "runs"))


@fault("resume_full_disk_keeps_last")
def _(ctx):
    """--resume with a full disk: saving the new last.pt fails. The previous last.pt must stay loadable (a clear
    error, then a later --resume works)."""
    run = msyn_copy(ctx)
    last = run / "checkpoints" / "last.pt"
    digest = sha(last)
    res = ctx.medgen(*train_args("mr_synthesis", heads(ctx), ctx.root / "runs", "r", "train.iterations=14"),
                     "--resume", inject={"MEDGEN_RT_FSIZE": 65536})
    if not last.exists() or (sha(last) != digest and max_weight(last) is None):
        return Outcome("data_loss", "the previous last.pt was lost or broken by the failed save")
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0:
        return Outcome("silent_wrong", "exit 0 although the checkpoint could not be written")
    return error_outcome(res, ("checkpoint", "space", "File too large", "last.pt"))


@fault("train_root_is_a_file")
def _(ctx):
    """output.root names a regular file: a clear error, the file untouched."""
    root = ctx.root / "runs"
    root.write_text("keep me\n")
    res = ctx.medgen(*train_args("mr_synthesis", heads(ctx), root, "r"))
    if root.read_text() != "keep me\n":
        return Outcome("data_loss", "the file given as output.root was replaced")
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0:
        return Outcome("silent_wrong", "exit 0 with a file as output.root")
    return error_outcome(res, (str(root),))


@fault("train_existing_name")
def _(ctx):
    """Control: a second training into an existing run name (no --resume / --overwrite) is refused clearly."""
    msyn_copy(ctx)
    res = ctx.medgen(*train_args("mr_synthesis", heads(ctx), ctx.root / "runs", "r"))
    if res.rc == 0:
        return Outcome("data_loss", "the existing run was trained over without --overwrite")
    return error_outcome(res, ("runs/mr_synthesis/r", "already exists"))


# ----- divergence -----

@fault("diverge_lambda_l1_1e38", "divergence guard", quick=True)
def _(ctx):
    """mr_synthesis with model.lambda_l1=1e38: the generator loss is infinite at every step, so every generator
    update is skipped. The run must stop with a clear divergence error, not exit 0 with a 'best' PSNR."""
    res = ctx.medgen(*train_args("mr_synthesis", heads(ctx), ctx.root / "runs", "r", "model.lambda_l1=1e38"))
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0:
        last = [ln for ln in res.out.splitlines() if ln.strip()]
        return Outcome("silent_wrong", "exit 0 although every generator update was skipped; it reports "
                       + (last[-1].strip() if last else "nothing"))
    return error_outcome(res, ("non-finite", "diverg", "loss"))


def _kept_checkpoints(run: Path) -> dict:
    out = {}
    for p in sorted(run.rglob("*.pt")):
        mw = max_weight(p)
        if mw is not None:
            out[str(p.relative_to(run))] = mw
    return out


@fault("diverge_lr_1e6_checkpoints", "divergence guard")
def _(ctx):
    """mr_synthesis with model.lr=1e6 and a validation every step: the run must stop, and no checkpoint it keeps
    (last.pt, best.pt, their previous copies) may hold exploded (|w| > 1e6) or non-finite weights."""
    res = ctx.medgen(*train_args("mr_synthesis", heads(ctx), ctx.root / "runs", "r", "model.lr=1e6",
                                 "train.val_every=1"))
    run = ctx.root / "runs" / "mr_synthesis" / "r"
    kept = _kept_checkpoints(run)
    bad = {k: v for k, v in kept.items() if v[0] > 1e6 or not v[1]}
    if bad:
        listing = ", ".join(f"{Path(k).name} {v[0]:.2g}" + ("" if v[1] else " (non-finite)") for k, v in bad.items())
        return Outcome("silent_wrong", f"the run stopped (exit {res.rc}) but kept checkpoints with exploded weights: "
                       f"{listing}", {"checkpoints": {k: v[0] for k, v in kept.items()}})
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0:
        return Outcome("silent_wrong", "exit 0 after an exploding run")
    return error_outcome(res, ("non-finite", "diverg"))


@fault("diverge_lr_1e6_message")
def _(ctx):
    """model.lr=1e6 with the default validation interval: the run stops before any checkpoint; the error must not
    point the user at a checkpoint that does not exist."""
    res = ctx.medgen(*train_args("mr_synthesis", heads(ctx), ctx.root / "runs", "r", "model.lr=1e6"))
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0:
        return Outcome("silent_wrong", "exit 0 after an exploding run")
    words = [w.strip(".,;:'\"()") for w in res.err.split()]
    missing = [w for w in words
               if w.endswith(".pt") and not (Path(w) if Path(w).is_absolute() else ctx.root / w).exists()]
    if missing:
        return Outcome("silent_wrong", f"the error names a checkpoint that does not exist: {missing[0]}")
    return error_outcome(res, ("non-finite", "diverg"))


@fault("config_lr_nan")
def _(ctx):
    """model.lr=.nan: refused as a config error (or stopped as a divergence), never exit 0."""
    res = ctx.medgen(*train_args("mr_synthesis", heads(ctx), ctx.root / "runs", "r", "model.lr=.nan"))
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0:
        return Outcome("silent_wrong", "trained with a NaN learning rate, exit 0")
    return error_outcome(res, ("lr", "nan"))


# ----- kills and resume -----

def _wait_for(path_glob: tuple[Path, str], proc, timeout: float = 180) -> bool:
    folder, pattern = path_glob
    t0 = time.time()
    while time.time() - t0 < timeout:
        if folder.exists() and any(folder.glob(pattern)):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


LONG = ("train.iterations=400", "train.val_every=4", "train.log_every=4")


def _kill_then_resume(ctx: Ctx, sig: int) -> Outcome:
    args = train_args("mr_synthesis", heads(ctx), ctx.root / "runs", "r", *LONG)
    run = ctx.root / "runs" / "mr_synthesis" / "r"
    proc = ctx.start(*args, tag="first")
    if not _wait_for((run / "checkpoints", "last.pt"), proc):
        first = ctx.finish(proc)
        return error_outcome(first) if first.rc else Outcome("ok", "finished before the kill (nothing to test)")
    time.sleep(1.5)
    os.killpg(proc.pid, sig)
    first = ctx.finish(proc)
    if sig == signal.SIGTERM and first.crashed and first.rc not in (-signal.SIGTERM,):
        return Outcome("traceback", "on SIGTERM: " + first.crash_reason())
    res = ctx.medgen(*args[:-3], "train.iterations=16", "train.val_every=4", "train.log_every=4", "--resume")
    if res.crashed:
        return Outcome("traceback", "resume: " + res.crash_reason())
    if res.rc == 0:
        return Outcome("ok", f"killed (exit {first.rc}), resumed to the end")
    return error_outcome(res, expected_success=True)


@fault("sigkill_train_then_resume", quick=True)
def _(ctx):
    """SIGKILL a training after its first checkpoint, then --resume: the run continues to the end (exit 0)."""
    return _kill_then_resume(ctx, signal.SIGKILL)


@fault("sigterm_train_then_resume")
def _(ctx):
    """SIGTERM a training: it writes a checkpoint and exits without a traceback; --resume then finishes it."""
    return _kill_then_resume(ctx, signal.SIGTERM)


@fault("sigkill_during_resume")
def _(ctx):
    """Kill a resumed run in turn, then resume again: it finishes (exit 0)."""
    run = msyn_copy(ctx)
    args = train_args("mr_synthesis", heads(ctx), ctx.root / "runs", "r", *LONG)
    last = run / "checkpoints" / "last.pt"
    stamp = last.stat().st_mtime_ns if last.exists() else 0
    proc = ctx.start(*args, "--resume", tag="resume1")
    t0 = time.time()
    while time.time() - t0 < 120 and proc.poll() is None:  # until the resumed run writes a checkpoint
        if last.exists() and last.stat().st_mtime_ns != stamp:
            break
        time.sleep(0.1)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    ctx.finish(proc)
    res = ctx.medgen(*args[:-3], "train.iterations=24", "train.val_every=4", "train.log_every=4", "--resume")
    if res.crashed:
        return Outcome("traceback", "second resume: " + res.crash_reason())
    if res.rc == 0:
        return Outcome("ok", "resumed to the end")
    return error_outcome(res, expected_success=True)


@fault("sigkill_infer_then_rerun")
def _(ctx):
    """SIGKILL infer after its first prediction, then rerun it: every case ends ok with a readable, finite file."""
    out = ctx.root / "out"
    args = ("infer", ctx.h.fixture("msyn", fx_msyn), heads(ctx), "--split", "all", "--out", out)
    proc = ctx.start(*args, tag="first")
    _wait_for((out, "*.nii.gz"), proc, timeout=120)
    os.killpg(proc.pid, signal.SIGKILL)
    ctx.finish(proc)
    res = ctx.medgen(*args)
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    ids = [c for s in HEAD_SPLITS.values() for c in s]
    preds = {c: prediction(out, c) for c in ids}
    if any(p["written"] and p["finite"] is not True for p in preds.values()):
        return Outcome("silent_wrong", "a broken prediction is marked ok after the kill")
    if res.rc == 0 and all(p["written"] for p in preds.values()):
        return Outcome("ok", "every case predicted after the rerun")
    return error_outcome(res, expected_success=True)


@fault("resume_mistyped_name", "resume typo", quick=True)
def _(ctx):
    """--resume with a run name that does not exist (a typo): a clear error, not a fresh run from step 0."""
    msyn_copy(ctx, "myrun")
    res = ctx.medgen(*train_args("mr_synthesis", heads(ctx), ctx.root / "runs", "myrnu"), "--resume")
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0:
        return Outcome("silent_wrong", "--resume of a missing run silently started a new run from scratch")
    return error_outcome(res, ("myrnu",))


@fault("resume_changed_network")
def _(ctx):
    """--resume with model.ngf changed (the checkpoint's networks no longer fit): a clear error naming the
    mismatch, no traceback."""
    msyn_copy(ctx)
    res = ctx.medgen(*train_args("mr_synthesis", heads(ctx), ctx.root / "runs", "r", "model.ngf=16",
                                 "train.iterations=12"), "--resume")
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0:
        return Outcome("silent_wrong", "resumed with networks that do not match the checkpoint")
    return error_outcome(res, ("ngf", "checkpoint", "config", "size"))


@fault("resume_more_iterations")
def _(ctx):
    """Control: --resume with train.iterations raised from 10 to 14 continues the run (exit 0)."""
    msyn_copy(ctx)
    res = ctx.medgen(*train_args("mr_synthesis", heads(ctx), ctx.root / "runs", "r", "train.iterations=14"),
                     "--resume")
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    return Outcome("ok", "continued") if res.rc == 0 else error_outcome(res, expected_success=True)


@fault("resume_finished_run")
def _(ctx):
    """Control: --resume of a finished run with the same settings does nothing (exit 0) or says so clearly."""
    msyn_copy(ctx)
    res = ctx.medgen(*train_args("mr_synthesis", heads(ctx), ctx.root / "runs", "r"), "--resume")
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    return Outcome("ok", "nothing to do") if res.rc == 0 else error_outcome(res)


# ----- controls and usage errors -----

@fault("cli_unknown_config_key")
def _(ctx):
    """Control: an unknown override (model.nfg=16) is a clear error naming the key."""
    res = ctx.medgen(*train_args("mr_synthesis", heads(ctx), ctx.root / "runs", "r", "model.nfg=16"))
    return Outcome("silent_wrong", "unknown key accepted") if res.rc == 0 else error_outcome(res, ("nfg",))


@fault("cli_bad_yaml")
def _(ctx):
    """Control: a config file that is not valid YAML is a clear error naming it."""
    cfg = ctx.root / "bad.yaml"
    cfg.write_text("model: [unclosed\n  ngf: 8\n")
    res = ctx.medgen("train", "mr_synthesis", "-c", cfg, f"output.root={ctx.root / 'runs'}")
    return Outcome("silent_wrong", "bad YAML accepted") if res.rc == 0 else error_outcome(res, ("bad.yaml",))


@fault("cli_missing_config")
def _(ctx):
    """Control: a config path that does not exist is a clear error naming it."""
    res = ctx.medgen("train", "mr_synthesis", "-c", ctx.root / "nope.yaml", f"output.root={ctx.root / 'runs'}")
    return Outcome("silent_wrong", "missing config accepted") if res.rc == 0 else error_outcome(res, ("nope.yaml",))


@fault("cli_unknown_pipeline")
def _(ctx):
    """Control: `medgen train no_such_pipeline` is a clear error naming it."""
    res = ctx.medgen("train", "no_such_pipeline", f"output.root={ctx.root / 'runs'}")
    return Outcome("silent_wrong", "unknown pipeline accepted") if res.rc == 0 else \
        error_outcome(res, ("no_such_pipeline",))


@fault("infer_missing_dataset")
def _(ctx):
    """infer with a dataset folder that does not exist: a clear error naming it."""
    res = ctx.medgen("infer", ctx.h.fixture("msyn", fx_msyn), ctx.root / "nodata", "--out", ctx.root / "out")
    return Outcome("silent_wrong", "exit 0 without a dataset") if res.rc == 0 else error_outcome(res, ("nodata",))


@fault("infer_unknown_split")
def _(ctx):
    """infer --split tset (a typo): a clear error naming the split."""
    res = ctx.medgen("infer", ctx.h.fixture("msyn", fx_msyn), heads(ctx), "--split", "tset", "--out",
                     ctx.root / "out")
    return Outcome("silent_wrong", "unknown split accepted") if res.rc == 0 else error_outcome(res, ("tset",))


@fault("infer_empty_run_dir")
def _(ctx):
    """infer on an empty folder: a clear error (no checkpoint)."""
    (ctx.root / "empty").mkdir()
    res = ctx.medgen("infer", ctx.root / "empty", heads(ctx), "--out", ctx.root / "out")
    return Outcome("silent_wrong", "exit 0 with no checkpoint") if res.rc == 0 else error_outcome(res, ("empty",))


@fault("evaluate_without_manifest")
def _(ctx):
    """evaluate a folder with no manifest.json: a clear error naming it."""
    (ctx.root / "preds").mkdir()
    res = ctx.medgen("evaluate", ctx.root / "preds", heads(ctx))
    return Outcome("silent_wrong", "exit 0 without predictions") if res.rc == 0 else \
        error_outcome(res, ("manifest", "preds"))


@fault("export_good_run")
def _(ctx):
    """Control: exporting a good run to TorchScript works (exit 0, a file written)."""
    run = msyn_copy(ctx)
    res = ctx.medgen("export", run, "--out", ctx.root / "export")
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0 and any((ctx.root / "export").glob("*")):
        return Outcome("ok", "exported")
    return error_outcome(res, expected_success=True)


@fault("evaluate_good_predictions")
def _(ctx):
    """Control: evaluate predictions of the test split (exit 0, per_case.csv with 2 rows)."""
    preds = ctx.root / "preds"
    ctx.medgen("infer", ctx.h.fixture("msyn", fx_msyn), heads(ctx), "--out", preds)
    res = ctx.medgen("evaluate", preds, heads(ctx), "--out", ctx.root / "eval")
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0 and _rows(ctx.root / "eval" / "per_case.csv") == 2:
        return Outcome("ok", "2 rows")
    return error_outcome(res, expected_success=True)


@fault("check_data_keys_comma_form", "check-data --keys", quick=True)
def _(ctx):
    """The documented `check-data DATASET --keys t1,t2,brain_mask` form on a clean dataset: no problem reported."""
    res = ctx.medgen("check-data", heads(ctx), "--keys", "t1,t2,brain_mask")
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc == 0:
        return Outcome("ok", "no problem reported")
    return Outcome("silent_wrong", "false problems on a clean dataset: " + _problem_line(res),
                   {"expected_success": True})


@fault("check_data_keys_space_form")
def _(ctx):
    """Control: `check-data DATASET --keys t1 t2 brain_mask` on a clean dataset reports no problem."""
    res = ctx.medgen("check-data", heads(ctx), "--keys", "t1", "t2", "brain_mask")
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    return Outcome("ok", "no problem") if res.rc == 0 else Outcome(
        "silent_wrong", "false problems on a clean dataset: " + _problem_line(res), {"expected_success": True})


@fault("check_data_unknown_key")
def _(ctx):
    """check-data --keys dwi on a dataset without a dwi key: reported as a problem naming the key."""
    res = ctx.medgen("check-data", heads(ctx), "--keys", "dwi")
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    return Outcome("silent_wrong", "an absent key reported as fine") if res.rc == 0 else error_outcome(res, ("dwi",))


@fault("demo_seed_ignored", "demo seed")
def _(ctx):
    """`medgen demo --only --seed 1` after a seed-0 demo in the same folder: the seed-1 phantoms must be written
    (elsewhere, or the command refuses), not the seed-0 files reused silently."""
    if ctx.h.quick:
        raise Skip("demo phantoms take ~40 s: full run only")
    demo = ctx.root / "demo"
    first = ctx.medgen("demo", "--only", "--out", demo, "--runs", ctx.root / "druns", "--seed", "0", timeout=600)
    if first.rc != 0:
        return error_outcome(first, expected_success=True)
    ref = sorted(demo.rglob("*.nii.gz"))[0]
    digest, before = sha(ref), files_under(demo)
    res = ctx.medgen("demo", "--only", "--out", demo, "--runs", ctx.root / "druns", "--seed", "1", timeout=600)
    if res.crashed:
        return Outcome("traceback", res.crash_reason())
    if res.rc != 0:
        return error_outcome(res, ("seed",))
    new_json = [f for f in files_under(demo) - before if f.endswith("dataset.json")]
    if sha(ref) == digest and not new_json:
        return Outcome("silent_wrong", "--seed 1 reused the seed-0 phantoms (exit 0)")
    return Outcome("ok", "seed-1 phantoms written")


# ----------------------------------------------------------------------------------------------------------
# group "fuzz": seeded NIfTI header mutations through check-data and infer
# ----------------------------------------------------------------------------------------------------------

# NIfTI-1 header fields: name -> (byte offset, struct format)
NIFTI_FIELDS = {
    "sizeof_hdr": (0, "<i"), "dim_info": (39, "<B"), "dim": (40, "<8h"), "intent_p1": (56, "<f"),
    "intent_code": (68, "<h"), "datatype": (70, "<h"), "bitpix": (72, "<h"), "slice_start": (74, "<h"),
    "pixdim": (76, "<8f"), "vox_offset": (108, "<f"), "scl_slope": (112, "<f"), "scl_inter": (116, "<f"),
    "slice_end": (120, "<h"), "slice_code": (122, "<B"), "xyzt_units": (123, "<B"), "cal_max": (124, "<f"),
    "cal_min": (128, "<f"), "qform_code": (252, "<h"), "sform_code": (254, "<h"), "quatern_b": (256, "<f"),
    "quatern_c": (260, "<f"), "quatern_d": (264, "<f"), "qoffset_x": (268, "<f"), "srow_x": (280, "<4f"),
    "srow_y": (296, "<4f"), "srow_z": (312, "<4f"), "magic": (344, "<4s"),
}
ODD_FLOATS = (0.0, -1.0, 1.0, 1e-30, 1e30, -1e30, float("nan"), float("inf"), float("-inf"), 3.4e38, 0.5, 7.0)
ODD_INTS = (0, 1, -1, 2, 3, 4, 5, 7, 8, 9, 16, 23, 25, 48, 255, 1000, 32767, -32768)
DATATYPES = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 7, 9999, -16)
MAX_CLAIMED_BYTES = 2e8  # keep fuzzed headers from asking for more than ~200 MB


def _set(buf: bytearray, name: str, value, index: int | None = None) -> None:
    off, fmt = NIFTI_FIELDS[name]
    if index is None:
        struct.pack_into(fmt, buf, off, *(value if isinstance(value, tuple) else (value,)))
    else:
        item = fmt[-1]
        struct.pack_into("<" + item, buf, off + index * struct.calcsize("<" + item), value)


def _get(buf: bytearray, name: str):
    off, fmt = NIFTI_FIELDS[name]
    return struct.unpack_from(fmt, buf, off)


def _claimed_bytes(buf: bytearray) -> float:
    dims = _get(buf, "dim")
    n = max(0, min(7, dims[0]))
    size = 1.0
    for d in dims[1: n + 1]:
        size *= max(1, d)
    bitpix = _get(buf, "bitpix")[0]
    return size * max(8, abs(bitpix)) / 8


def mutate_header(base: bytes, rng: random.Random) -> tuple[bytes, list[str], str]:
    """One fuzzed file: 1-3 mutations of the header (or a truncation / byte flips); returns bytes, what was
    done and the file suffix (.nii, or .nii.gz for a quarter of them)."""
    buf = bytearray(base)
    done = []
    kinds = ["dim0", "dimk", "reshape", "datatype", "bitpix", "pixdim", "vox_offset", "scl", "qform", "sform",
             "magic", "sizeof_hdr", "flip_bytes", "truncate", "extension", "misc"]
    weights = [4, 6, 4, 5, 3, 5, 4, 5, 5, 5, 2, 2, 4, 3, 2, 3]
    for _ in range(rng.choice((1, 1, 2, 3))):
        kind = rng.choices(kinds, weights)[0]
        snapshot = bytes(buf)
        if kind == "dim0":
            v = rng.choice((-1, 0, 1, 2, 3, 4, 5, 7, 8, 9))
            _set(buf, "dim", v, 0)
            done.append(f"dim[0]={v}")
        elif kind == "dimk":
            k, v = rng.randint(1, 7), rng.choice(ODD_INTS)
            _set(buf, "dim", v, k)
            done.append(f"dim[{k}]={v}")
        elif kind == "reshape":  # same voxel count, other shape (readable; must come out in that shape)
            shape = rng.choice(((12, 48, 24), (24, 24, 24, 1), (48, 12, 24), (24, 576), (13824,), (24, 24, 12, 2),
                                (6, 8, 12, 24)))
            dims = (len(shape),) + shape + (1,) * (7 - len(shape))
            _set(buf, "dim", dims)
            done.append(f"shape={shape}")
        elif kind == "datatype":
            v = rng.choice(DATATYPES)
            _set(buf, "datatype", v)
            if rng.random() < 0.5:
                bits = {2: 8, 4: 16, 8: 32, 16: 32, 32: 64, 64: 64, 128: 24, 256: 8, 512: 16, 768: 32, 1024: 64,
                        1280: 64, 1536: 128, 1792: 128, 2048: 256, 2304: 32}.get(v, 8)
                _set(buf, "bitpix", bits)
            done.append(f"datatype={v}")
        elif kind == "bitpix":
            v = rng.choice((0, 1, 8, 16, 24, 64, 128, -32, 7))
            _set(buf, "bitpix", v)
            done.append(f"bitpix={v}")
        elif kind == "pixdim":
            k, v = rng.randint(0, 7), rng.choice(ODD_FLOATS)
            _set(buf, "pixdim", v, k)
            done.append(f"pixdim[{k}]={v}")
        elif kind == "vox_offset":
            v = rng.choice((0.0, 1.0, 351.0, 353.0, 356.0, 360.0, 1e6, -352.0, float("nan"), 1e30, 348.0))
            _set(buf, "vox_offset", v)
            done.append(f"vox_offset={v}")
        elif kind == "scl":
            name, v = rng.choice(("scl_slope", "scl_inter")), rng.choice(ODD_FLOATS)
            _set(buf, name, v)
            done.append(f"{name}={v}")
        elif kind == "qform":
            if rng.random() < 0.4:
                v = rng.choice((0, 1, 2, 3, 4, 5, -1, 100))
                _set(buf, "qform_code", v)
                done.append(f"qform_code={v}")
            else:
                name, v = rng.choice(("quatern_b", "quatern_c", "quatern_d", "qoffset_x")), rng.choice(ODD_FLOATS)
                _set(buf, name, v)
                done.append(f"{name}={v}")
        elif kind == "sform":
            if rng.random() < 0.4:
                v = rng.choice((0, 1, 2, 3, 4, 5, -1, 100))
                _set(buf, "sform_code", v)
                done.append(f"sform_code={v}")
            else:
                name = rng.choice(("srow_x", "srow_y", "srow_z"))
                if rng.random() < 0.3:
                    _set(buf, name, (0.0, 0.0, 0.0, 0.0))
                    done.append(f"{name}=0")
                else:
                    k, v = rng.randint(0, 3), rng.choice(ODD_FLOATS)
                    _set(buf, name, v, k)
                    done.append(f"{name}[{k}]={v}")
        elif kind == "magic":
            v = rng.choice((b"ni1\0", b"n+2\0", b"\0\0\0\0", b"xxxx", b"n+1x"))
            _set(buf, "magic", v)
            done.append(f"magic={v!r}")
        elif kind == "sizeof_hdr":
            v = rng.choice((0, -1, 1, 540, 349, 0x5C010000))
            _set(buf, "sizeof_hdr", v)
            done.append(f"sizeof_hdr={v}")
        elif kind == "flip_bytes":
            n = rng.randint(1, 8)
            for _ in range(n):
                i = rng.randrange(0, 352)
                buf[i] ^= 1 << rng.randrange(8)
            done.append(f"flip {n} header bits")
        elif kind == "truncate":
            cut = rng.choice((rng.randrange(0, 352), rng.randrange(352, len(buf))))
            buf = buf[:cut]
            done.append(f"truncate at {cut}")
            break
        elif kind == "extension":
            buf[348] = 1
            size = rng.choice((8, 16, 24, 100000, -16, 0))
            buf[352:360] = struct.pack("<ii", size, rng.choice((0, 4, 6, 44)))
            done.append(f"extension esize={size}")
        else:
            name = rng.choice(("intent_code", "intent_p1", "slice_code", "xyzt_units", "cal_max", "cal_min",
                               "dim_info", "slice_start", "slice_end"))
            fmt = NIFTI_FIELDS[name][1]
            v = rng.choice(ODD_FLOATS) if fmt.endswith("f") else rng.choice((0, 1, 2, 3, 7, 255) if fmt.endswith("B")
                                                                              else ODD_INTS)
            _set(buf, name, v)
            done.append(f"{name}={v}")
        if len(buf) >= 348 and _claimed_bytes(buf) > MAX_CLAIMED_BYTES:
            buf = bytearray(snapshot)  # would ask for gigabytes: undo
            done.pop()
    suffix = ".nii.gz" if rng.random() < 0.25 else ".nii"
    data = gzip.compress(bytes(buf), mtime=0) if suffix == ".nii.gz" else bytes(buf)
    return data, done or ["none"], suffix


def expected_shape(path: Path):
    """The image shape nibabel reads from the fuzzed header (trailing 1s dropped), or None."""
    import logging
    import warnings

    import nibabel as nib

    logging.getLogger("nibabel").setLevel(logging.CRITICAL)  # it logs every header fix it makes
    warnings.filterwarnings("ignore", module="nibabel")

    try:
        shape = tuple(int(s) for s in nib.load(str(path)).shape)
    except Exception:
        return None
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


class Fuzz:
    """Writes the fuzzed files, runs check-data on each, infers them all in batches (re-running after a case that
    kills the batch), and classifies each file."""

    def __init__(self, h: Harness):
        self.h = h
        self.dir = h.tmp / "fuzz"
        self.files: dict[str, dict] = {}

    def prepare(self) -> list[str]:
        base_dir = self.dir / "base"
        arr = np.asarray(read_nifti(h_fixture_t1(self.h)), dtype=np.float32)
        save_nifti(base_dir / "t1.nii", arr)
        base = (base_dir / "t1.nii").read_bytes()
        for i in range(self.h.fuzz_n):
            rng = random.Random(self.h.seed * 1_000_003 + i)
            data, done, suffix = mutate_header(base, rng)
            fid = f"fz{i:04d}"
            path = self.dir / "files" / f"{fid}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            ds = self.dir / "check" / fid
            ds.mkdir(parents=True)
            (ds / "dataset.json").write_text(json.dumps({"keys": {"t1": "image"},
                                                         "test": [{"id": fid, "t1": str(path)}]}))
            self.files[fid] = {"path": path, "mutations": done, "expected_shape": expected_shape(path)}
        return list(self.files)

    def check(self, fid: str) -> dict:
        res = self.h.run(["check-data", self.dir / "check" / fid], self.dir, timeout=120)
        state = "crash" if res.crashed else ("ok" if res.rc == 0 else "problem")
        return {"state": state, "rc": res.rc, "line": (res.crash_reason() if res.crashed else _problem_line(res))[:200],
                "seconds": round(res.seconds, 2)}

    def infer_all(self, ids: list[str]) -> dict[str, dict]:
        """Infer every fuzzed file as a test case of one dataset; after a crash, go on after the culprit."""
        run = self.h.fixture("msyn", fx_msyn)
        results: dict[str, dict] = {}
        todo = list(ids)
        while todo:
            results.update(self._batch(run, todo))
            todo = [f for f in todo if f not in results]
        return results

    def _infer(self, run: Path, ids: list[str]) -> tuple[Result, dict[str, dict]]:
        """One `medgen infer` over `ids`; returns the result and the per-case records of its manifest."""
        self._n = getattr(self, "_n", 0) + 1
        ds = self.dir / "infer" / f"b{self._n:04d}"
        out = ds / "out"
        ds.mkdir(parents=True)
        cases = [{"id": f, "t1": str(self.files[f]["path"])} for f in ids]
        (ds / "dataset.json").write_text(json.dumps({"keys": {"t1": "image"}, "test": cases}))
        res = self.h.run(["infer", run, ds, "--out", out], ds, timeout=900)
        man = manifest(out) or {"cases": {}}
        done = {}
        for f in ids:
            entry = man["cases"].get(f)
            if entry is None:
                continue
            info = {"state": "ok" if entry.get("status") == "ok" else "failed",
                    "error": str(entry.get("error") or "")[:200]}
            if info["state"] == "ok":
                files = [Path(x["path"] if isinstance(x, dict) else x) for x in entry.get("files", [])]
                nii = [p if p.is_absolute() else out / p.name for p in files if ".nii" in str(p)]
                info["finite"], info["shape"] = False, None
                if nii and nii[0].exists():
                    try:
                        arr = np.asarray(read_nifti(nii[0]), dtype=np.float64)
                        info["finite"], info["shape"] = bool(np.isfinite(arr).all()), list(arr.shape)
                    except Exception:
                        pass
            done[f] = info
        return res, done

    def _batch(self, run: Path, ids: list[str]) -> dict[str, dict]:
        res, done = self._infer(run, ids)
        missing = [f for f in ids if f not in done]
        if not missing:
            return done
        aborted = not res.crashed and res.rc != 0 and any("error" in ln.lower() for ln in res.err.splitlines())
        if aborted and (done or len(ids) == 1):
            # a clear error stopped the whole run at the first case missing from the manifest: that case is
            # refused (with the message); the others go to the next batch
            done[missing[0]] = {"state": "failed", "error": res.message[:200], "aborted_batch": True}
            return done
        if not res.crashed and not aborted:  # the run ended normally without recording these cases
            done.update({f: {"state": "missing", "error": f"not in the manifest (exit {res.rc})"} for f in missing})
            return done
        if done or len(ids) == 1:
            # cases run in dataset order with the manifest written after each: the first one missing is the
            # case that was running when the process died
            done[missing[0]] = {"state": "crash", "error": res.crash_reason()[:200]}
            return done
        # no per-case record at all: the first case alone, then halves, until the culprit is found
        res1, one = self._infer(run, ids[:1])
        if res1.crashed and not one:
            return {ids[0]: {"state": "crash", "error": res1.crash_reason()[:200]}}
        if not res1.crashed and res1.rc != 0 and not one:
            return {ids[0]: {"state": "failed", "error": res1.message[:200], "aborted_batch": True}}
        done.update(one)
        rest = ids[1:]
        half = max(1, len(rest) // 2)
        for part in (rest[:half], rest[half:]):
            if part:
                done.update(self._batch(run, part))
        return done

    def classify(self, fid: str, check: dict, inf: dict) -> Outcome:
        exp = self.files[fid]["expected_shape"]
        details = {"mutations": self.files[fid]["mutations"], "check": check["state"], "infer": inf["state"],
                   "check_line": check["line"], "infer_error": inf.get("error", ""),
                   "expected_shape": list(exp) if exp else None}
        if inf.get("aborted_batch"):  # this file's error stopped every case after it (the others were rerun)
            details["stopped_the_whole_infer"] = True
        if check["state"] == "crash":
            return Outcome("traceback", "check-data: " + check["line"], details)
        if inf["state"] == "crash":
            return Outcome("traceback", "infer: " + inf.get("error", ""), details)
        if inf["state"] == "missing":
            return Outcome("silent_wrong", "infer dropped the case without recording it", details)
        if inf["state"] == "ok":
            shape = tuple(inf.get("shape") or ())
            while len(shape) > 3 and shape[-1] == 1:
                shape = shape[:-1]
            if inf.get("finite") is not True:
                return Outcome("silent_wrong", "infer marked a non-finite or unreadable prediction ok", details)
            if exp is not None and shape != exp:
                return Outcome("silent_wrong", f"infer accepted a {exp} image and wrote a {shape} prediction", details)
            if check["state"] == "problem":
                return Outcome("silent_wrong", "infer used a file check-data calls bad: " + check["line"], details)
            return Outcome("ok", "readable: checked OK and predicted", details)
        if check["state"] == "ok":
            return Outcome("silent_wrong", "check-data called OK a file infer rejects: " + inf.get("error", ""),
                           details)
        return Outcome("clear_error", "check-data and infer both reject it: " + check["line"], details)


FUZZ_EXPECTED = ("A fuzzed t1 header: check-data and infer agree. A readable file is checked OK and predicted in its "
                 "own shape with finite voxels; an unreadable one is reported by check-data and failed by infer with a "
                 "message. Never a traceback, a non-finite output marked ok, an output in another shape, or a file "
                 "check-data passes but infer rejects (or the reverse).")


def h_fixture_t1(h: Harness) -> Path:
    return h.fixture("heads", fx_heads) / "case000" / "t1.nii.gz"


# ----------------------------------------------------------------------------------------------------------
# driver, tables, JSON, markdown
# ----------------------------------------------------------------------------------------------------------

def relative(text: str, h: Harness) -> str:
    return text.replace(str(h.tmp), "$TMP").replace(str(REPO), "$REPO")


def record(h: Harness, sc: Scenario, outcome: Outcome, seconds: float, commands: list[Result]) -> dict:
    return {
        "group": sc.group, "name": sc.name, "finding": sc.finding, "expected": sc.expected,
        "class": outcome.cls, "reason": relative(outcome.reason, h),
        "details": json.loads(relative(json.dumps(outcome.details, default=str), h)),
        "seconds": round(seconds, 2),
        "commands": [{"args": relative(" ".join(c.args), h), "rc": c.rc, "seconds": round(c.seconds, 2),
                      "timed_out": c.timed_out, "stderr_tail": relative(c.err[-300:], h)} for c in commands],
    }


def run_scenario(h: Harness, sc: Scenario) -> dict:
    ctx = Ctx(h, sc.name)
    t0 = time.perf_counter()
    try:
        outcome = sc.fn(ctx)
    except Skip as exc:
        outcome = Outcome("skipped", str(exc))
    except FixtureError as exc:
        outcome = Outcome("harness_error", str(exc))
    except Exception as exc:  # a bug in this harness, not a finding: reported apart from the five classes
        outcome = Outcome("harness_error", f"{type(exc).__name__}: {exc}", {"trace": traceback.format_exc()[-1500:]})
    rec = record(h, sc, outcome, time.perf_counter() - t0, ctx.commands)
    print(f"  [{sc.group}] {sc.name:42s} {outcome.cls:13s} {rec['seconds']:6.1f} s  {rec['reason'][:90]}", flush=True)
    return rec


def input_scenarios(quick: bool) -> list[Scenario]:
    out = []
    finding_of = {"id_parent_traversal": "path traversal", "id_absolute": "path traversal",
                  "dims_4d_frames": "dims unchecked; one bad case stops infer", "dims_2d": "one bad case stops infer",
                  "list_valued_path": "one bad case stops infer", "dims_5d": "dims unchecked",
                  "channels_3": "dims unchecked", "expr_constant_matrix": "segfault"}
    for bad in bad_inputs():
        if quick and not bad.quick:
            continue
        for command in ("check", "train", "infer"):
            if command not in bad.expect:
                continue
            out.append(Scenario("inputs", f"{bad.name}.{command}", expected_text(bad, command),
                                lambda ctx, b=bad, c=command: run_input_scenario(ctx, b, c),
                                finding_of.get(bad.name, ""), bad.quick))
    return out


def run_fuzz(h: Harness, pool: ThreadPoolExecutor) -> list[dict]:
    t0 = time.perf_counter()
    fz = Fuzz(h)
    ids = fz.prepare()
    infer_future = pool.submit(fz.infer_all, ids)
    checks = dict(zip(ids, pool.map(fz.check, ids)))
    try:
        infers = infer_future.result()
    except Exception as exc:
        infers = {f: {"state": "harness_error", "error": f"{type(exc).__name__}: {exc}"} for f in ids}
    records = []
    per = (time.perf_counter() - t0) / max(1, len(ids))
    for fid in ids:
        sc = Scenario("fuzz", fid, "see meta.fuzz_expected", lambda c: None)
        if infers[fid]["state"] == "harness_error":
            outcome = Outcome("harness_error", infers[fid]["error"])
        else:
            outcome = fz.classify(fid, checks[fid], infers[fid])
        rec = record(h, sc, outcome, per, [])
        records.append(rec)
    counts = {c: sum(r["class"] == c for r in records) for c in CLASSES}
    print(f"  [fuzz] {len(ids)} files: " + ", ".join(f"{k} {v}" for k, v in counts.items()), flush=True)
    return records


def table(records: list[dict], groups) -> str:
    cols = list(CLASSES) + ["skipped", "harness_error"]
    lines = [f"{'group':8s} " + " ".join(f"{c:>13s}" for c in cols) + f" {'total':>6s}"]
    for g in list(groups) + ["all"]:
        rows = [r for r in records if g == "all" or r["group"] == g]
        if not rows:
            continue
        lines.append(f"{g:8s} " + " ".join(f"{sum(r['class'] == c for r in rows):13d}" for c in cols)
                     + f" {len(rows):6d}")
    return "\n".join(lines)


def counts(records: list[dict]) -> dict:
    out = {}
    for g in list(GROUPS) + ["all"]:
        rows = [r for r in records if g == "all" or r["group"] == g]
        if rows:
            out[g] = {c: sum(r["class"] == c for r in rows) for c in list(CLASSES) + ["skipped", "harness_error"]}
            out[g]["total"] = len(rows)
    return out


def markdown(report: dict, title: str) -> str:
    meta, recs = report["meta"], report["scenarios"]
    lines = [f"# {title}", "",
             f"Commit `{meta.get('commit')}`, {meta.get('mode')} run, {meta.get('scenarios')} scenarios in "
             f"{meta.get('seconds', 0) / 60:.1f} min ({meta.get('jobs')} parallel jobs, {meta.get('fuzz_n')} fuzzed "
             f"headers, seed {meta.get('seed')}); `python benchmarks/red_team.py` "
             f"{' '.join(meta.get('argv', []))}.", "",
             "## Counts", "", "| group | " + " | ".join(CLASSES) + " | skipped | harness error | total |",
             "|---|" + "---|" * (len(CLASSES) + 3)]
    for g, c in report["counts"].items():
        lines.append(f"| {g} | " + " | ".join(str(c[k]) for k in CLASSES) +
                     f" | {c['skipped']} | {c['harness_error']} | {c['total']} |")
    bad = [r for r in recs if r["class"] not in ("ok", "clear_error") and r["group"] != "fuzz"]
    lines += ["", f"## Scenarios neither ok nor a clear error ({len(bad)}, fuzz listed below)", "",
              "`finding` names the reported problem a scenario covers; blank: a problem found here that was not "
              "among those reported.", "",
              "| group | scenario | finding | class | what happened |", "|---|---|---|---|---|"]
    for r in sorted(bad, key=lambda r: (r["group"], SEVERITY.get(r["class"], 9) * -1, r["name"])):
        lines.append(f"| {r['group']} | `{r['name']}` | {r['finding']} | {r['class']} | "
                     f"{_md(r['reason'])} |")
    fz = [r for r in recs if r["group"] == "fuzz" and r["class"] not in ("ok", "clear_error")]
    stopped = [r for r in recs if r["group"] == "fuzz" and r["details"].get("stopped_the_whole_infer")]
    if fz:
        groups: dict[tuple, list] = {}
        for r in fz:
            groups.setdefault((r["class"], _fuzz_key(r["reason"])), []).append(r)
        lines += ["", f"## Fuzzed headers neither ok nor a clear error ({len(fz)}), grouped by outcome", "",
                  "| class | outcome | files | example (mutations) |", "|---|---|---|---|"]
        for (cls, key), rows in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            ex = rows[0]
            lines.append(f"| {cls} | {_md(key)} | {len(rows)} | `{ex['name']}`: "
                         f"{_md(', '.join(ex['details'].get('mutations', [])))} |")
    if stopped:
        lines += ["", f"{len(stopped)} fuzzed file(s) stopped the whole `medgen infer` run with their error (the "
                  "harness reran the cases after them): " + ", ".join(f"`{r['name']}`" for r in stopped[:12])]
    rejected = [r for r in recs if r["class"] == "clear_error" and r["details"].get("expected_success")]
    if rejected:
        lines += ["", "## Valid inputs refused with a clear error", ""]
        lines += [f"- `{r['name']}`: {_md(r['reason'])}" for r in rejected]
    unnamed = [r for r in recs if r["class"] == "clear_error" and r["details"].get("names_the_problem") is False
               and r["group"] != "fuzz"]
    if unnamed:
        lines += ["", "## Clear errors whose message does not name the file / key / case at fault", ""]
        lines += [f"- `{r['name']}`: {_md(r['reason'])}" for r in unnamed]
    lines.append("")
    return "\n".join(lines)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")[:220]


def _fuzz_key(reason: str) -> str:
    """A fuzz reason without its file-specific parts (paths, ids, numbers in parentheses), to group outcomes."""
    text = re.sub(r"\$TMP/\S+", "", reason)
    text = re.sub(r"- case fz\d{4}, key t1: ", "", text)
    text = re.sub(r"fz\d{4}", "fzNNNN", text)
    text = re.sub(r"\([^()]*\)", "", text)
    text = re.sub(r"\s+", " ", text).replace(" :", ":").strip()
    return text[:110]


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        # only the measured code counts: medgen/ and the configs the scenarios use
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "medgen", "configs"],
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="red_team_results.json", help="JSON results path")
    ap.add_argument("--md", default=None, help="also write a markdown summary here")
    ap.add_argument("--quick", action="store_true", help="a small subset (~5 min)")
    ap.add_argument("--only", nargs="*", choices=GROUPS, default=None, help="only these groups")
    ap.add_argument("--select", default=None, help="only scenarios whose name matches this glob")
    ap.add_argument("--fuzz", type=int, default=None, help="fuzzed headers (default 400, 40 with --quick)")
    ap.add_argument("--seed", type=int, default=0, help="fuzz seed")
    ap.add_argument("--jobs", type=int, default=2, help="scenarios run in parallel (each command uses 1 thread)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--summarise", default=None, metavar="JSON", help="only write --md from an existing JSON")
    args = ap.parse_args(argv)
    if args.summarise:
        report = json.loads(Path(args.summarise).read_text())
        text = markdown(report, f"Red team of the medgen CLI at {report['meta'].get('commit')}")
        Path(args.md or "red_team_summary.md").write_text(text)
        print(text)
        return 0

    groups = args.only or list(GROUPS)
    fuzz_n = args.fuzz if args.fuzz is not None else (40 if args.quick else 400)
    tmp = Path(tempfile.mkdtemp(prefix="medgen_redteam_"))
    h = Harness(tmp, args.quick, fuzz_n, args.seed)
    print(f"medgen red team: {REPO} at {git_commit()}; temporary folder {tmp}", flush=True)
    t0 = time.perf_counter()
    scenarios = []
    if "inputs" in groups:
        scenarios += input_scenarios(args.quick)
    if "faults" in groups:
        scenarios += [s for s in FAULTS if s.quick or not args.quick]
    if args.select:
        scenarios = [s for s in scenarios if fnmatch.fnmatch(s.name, args.select)]
    records: list[dict] = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            # the fixtures first (in parallel), so scenario timings do not include them
            needed = [("heads", fx_heads), ("msyn", fx_msyn)]  # the rest are built when first needed
            if not args.quick and not args.select:
                if "faults" in groups:
                    needed += [("msyn_b", fx_msyn_b), ("pet", fx_pet), ("ct", fx_ct), ("heads_other", fx_heads_other)]
                if "inputs" in groups:
                    needed += [("expression", fx_expression), ("vae", fx_vae)]
            list(pool.map(lambda nb: _try_fixture(h, *nb), needed))
            print(f"fixtures ready in {time.perf_counter() - t0:.0f} s", flush=True)
            for group in ("inputs", "faults"):
                mine = [s for s in scenarios if s.group == group]
                if mine:
                    print(f"== {group} ({len(mine)})", flush=True)
                    records += list(pool.map(lambda s: run_scenario(h, s), mine))
            if "fuzz" in groups and not args.select:
                print(f"== fuzz ({fuzz_n} headers)", flush=True)
                records += run_fuzz(h, pool)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - t0
    report = {
        "meta": {"commit": git_commit(), "mode": "quick" if args.quick else "full", "groups": groups,
                 "fuzz_n": fuzz_n if "fuzz" in groups else 0, "seed": args.seed, "jobs": args.jobs,
                 "fuzz_expected": FUZZ_EXPECTED,
                 "seconds": round(seconds, 1), "scenarios": len(records), "python": sys.version.split()[0],
                 "argv": sys.argv[1:] if argv is None else list(argv),
                 "date": time.strftime("%Y-%m-%d %H:%M:%S")},
        "counts": counts(records),
        "scenarios": records,
    }
    Path(args.out).write_text(json.dumps(report, indent=1))
    print()
    for g in GROUPS:
        rows = [r for r in records if r["group"] == g and g != "fuzz"]
        if rows:
            print(f"-- {g}")
            for r in rows:
                print(f"  {r['name']:44s} {r['class']:13s} {r['reason'][:100]}")
    print()
    print(table(records, GROUPS))
    print(f"\n{len(records)} scenarios in {seconds / 60:.1f} min; results: {args.out}")
    if args.md:
        Path(args.md).write_text(markdown(report, f"Red team of the medgen CLI at {report['meta']['commit']}"))
        print(f"summary: {args.md}")
    return 0


def _try_fixture(h: Harness, name: str, builder) -> None:
    try:
        h.fixture(name, builder)
    except FixtureError as exc:
        print(f"  fixture {name} failed: {exc}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
