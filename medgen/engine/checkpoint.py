"""One self-describing checkpoint dict, written atomically, with the previous copy kept as a fallback.

A checkpoint holds networks, optimizers, schedulers, scalers, EMA, step, best metric, RNG states, the
resolved config and library versions. `save_checkpoint` writes to a temporary file and renames it over
`last.pt`, so a kill at any moment leaves a whole `last.pt` (never a half-written or missing one); the copy
it replaces is kept as `last.prev.pt`.
`load_checkpoint` verifies the stored checksum and falls back to the previous copy, with a warning, when
the newest file is truncated or corrupt.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import shutil
import warnings
from pathlib import Path

import torch

from medgen.errors import MedgenError
from medgen.metrics.report import atomic_write_text

FORMAT = "medgen-checkpoint"
FORMAT_VERSION = 1


def library_versions() -> dict:
    import monai
    import numpy

    import medgen

    return {
        "medgen": medgen.__version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(state: dict, path, keep_previous: bool = True) -> Path:
    """Atomically write `state` to `path`; the replaced file becomes `<stem>.prev.pt`.

    `path` exists at every instant once it has been written: the previous copy is made by a hard link (a copy
    where links are unsupported), never by moving `path` away, so a kill at any point leaves a loadable file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = dict(state, format=FORMAT, format_version=FORMAT_VERSION)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    if keep_previous and path.exists():
        _keep_previous(path)
    # A stale digest would make the fresh file look corrupt, so it goes first (if it did not already go with
    # the previous copy); until the new one is written, `path` is checked by the load check alone.
    _digest_path(path).unlink(missing_ok=True)
    os.replace(tmp, path)
    atomic_write_text(_digest_path(path), _sha256(payload))
    return path


def _keep_previous(path: Path) -> None:
    prev = previous_path(path)
    staged = prev.with_name(f".{prev.name}.tmp")
    staged.unlink(missing_ok=True)
    try:
        os.link(path, staged)
    except OSError:
        shutil.copy2(path, staged)
    _digest_path(prev).unlink(missing_ok=True)  # never pair the old digest with the new previous copy
    os.replace(staged, prev)
    if _digest_path(path).exists():
        os.replace(_digest_path(path), _digest_path(prev))


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def previous_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".prev" + path.suffix)


def _load_verified(path: Path, map_location) -> dict:
    payload = path.read_bytes()
    digest_file = _digest_path(path)
    if digest_file.exists() and digest_file.read_text().strip() != _sha256(payload):
        raise MedgenError(f"{path}: checksum mismatch (truncated or modified file)")
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises several types for truncated zips
        raise MedgenError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise MedgenError(f"{path}: not a medgen checkpoint")
    return state


def load_checkpoint(path, map_location="cpu", fallback: bool = True) -> dict:
    """Load and verify a checkpoint; when it is damaged, warn and use `<stem>.prev.pt` if it exists."""
    path = Path(path)
    if not path.exists():
        raise MedgenError(f"{path}: checkpoint not found")
    try:
        return _load_verified(path, map_location)
    except MedgenError as exc:
        prev = previous_path(path)
        if not (fallback and prev.exists()):
            raise
        warnings.warn(f"{exc}; using the previous checkpoint {prev}", stacklevel=2)
        return _load_verified(prev, map_location)
