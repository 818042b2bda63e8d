"""The run directory: created once, never silently reused, owned by one training at a time, checked for
writability before training."""

from __future__ import annotations

import difflib
import json
import os
import platform
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from medgen.errors import RunDirError
from medgen.files import write_json_atomic

LOCK_NAME = ".lock"
# What marks a folder as a medgen run (so --overwrite may clear it): files only the trainer writes.
RUN_MARKERS = ("config.yaml", "env.json", "checkpoints", "stage1")


def _entries(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.iterdir() if p.name != LOCK_NAME] if run_dir.is_dir() else []


def make_run_dir(root, pipeline: str, name: str = "", overwrite: bool = False, resume: bool = False) -> Path:
    """`root/<pipeline>/<name>`, ready for a training.

    - new (or empty): created;
    - `resume`: must exist (a mistyped name is an error naming the runs that do exist);
    - `overwrite`: an earlier run's files are removed first, so nothing of it (an old best.pt) is used again;
      a folder that is not a medgen run is never cleared;
    - otherwise an existing non-empty folder is an error.
    """
    if resume and overwrite:
        raise RunDirError("--resume continues a run and --overwrite replaces it: pass one of them")
    name = name or time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(root) / pipeline / name
    existing = _entries(run_dir)
    if resume and not existing:
        others = sorted(p.name for p in run_dir.parent.iterdir() if p.is_dir() and p.name != name) \
            if run_dir.parent.is_dir() else []
        close = difflib.get_close_matches(name, others, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else (f"; runs there: {', '.join(others[:10])}" if others else "")
        raise RunDirError(f"nothing to resume: {run_dir} does not exist or is empty{hint}")
    if existing and not (resume or overwrite):
        raise RunDirError(
            f"run directory {run_dir} already exists; pass --resume to continue it, "
            "--overwrite to replace its files, or choose another output.name"
        )
    if existing and overwrite:
        if not any((run_dir / m).exists() for m in RUN_MARKERS):
            raise RunDirError(f"{run_dir} is not empty and is not a medgen run folder; refusing to clear it "
                              "(choose another output.name)")
        for entry in existing:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
    check_writable(run_dir)
    return run_dir


@contextmanager
def claimed_run_dir(root, pipeline: str, name: str, overwrite: bool = False, resume: bool = False):
    """`make_run_dir` under the run's lock, held until the block ends: a second training started into the same
    run fails at once, before it reads, clears or writes anything there. The lock is an advisory `flock` on
    `<run>/.lock`, released by the operating system when the process ends, even by SIGKILL."""
    run_dir = Path(root) / pipeline / name
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
    with _locked(run_dir / LOCK_NAME):
        yield make_run_dir(root, pipeline, name, overwrite=overwrite, resume=resume)


@contextmanager
def _locked(path: Path):
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock (documented in docs/reliability.md)
        yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunDirError(f"cannot create the run's lock file {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                owner = json.loads(path.read_text() or "{}")
            except (OSError, ValueError):
                owner = {}
            who = (f"process {owner.get('pid')} on {owner.get('host')} since {owner.get('since')}"
                   if owner else "another process")
            raise RunDirError(f"run {path.parent} is in use by {who}; wait for it to finish or choose another "
                              "output.name") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock


def check_writable(directory, reserve_mb: float = 50.0) -> None:
    """Fail before training starts when outputs could not be written (read-only or full disk)."""
    directory = Path(directory)
    probe = directory / ".medgen-write-test"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"\0" * 1024)
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"output directory {directory} is not writable: {exc.strerror}") from None
    stats = os.statvfs(directory)
    free_mb = stats.f_bavail * stats.f_frsize / 2**20
    if free_mb < reserve_mb:
        raise RunDirError(f"output directory {directory} has only {free_mb:.0f} MB free (need {reserve_mb:.0f} MB)")


def write_env_json(run_dir, seed: int, device, world_size: int = 1, extra: dict | None = None) -> dict:
    import torch

    from medgen.engine.checkpoint import library_versions

    info = {
        "versions": library_versions(),
        "seed": seed,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if str(device).startswith("cuda") else platform.processor(),
        "cuda": torch.version.cuda,
        "world_size": world_size,
        "threads": torch.get_num_threads(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    info.update(extra or {})
    write_json_atomic(Path(run_dir) / "env.json", info)
    return info
