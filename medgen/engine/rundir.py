"""The run directory: created once, never silently reused, checked for writability before training."""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from pathlib import Path

from medgen.errors import RunDirError


def make_run_dir(root, pipeline: str, name: str = "", overwrite: bool = False, resume: bool = False) -> Path:
    """`root/<pipeline>/<name>`; an existing non-empty directory needs `resume` or `overwrite`."""
    name = name or time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(root) / pipeline / name
    if run_dir.exists() and any(run_dir.iterdir()) and not (resume or overwrite):
        raise RunDirError(
            f"run directory {run_dir} already exists; pass --resume to continue it, "
            "--overwrite to replace its files, or choose another output.name"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
    check_writable(run_dir)
    return run_dir


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


def write_json_atomic(path, data) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
