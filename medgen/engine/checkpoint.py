"""One self-describing checkpoint dict, written atomically, with the previous copy kept as a fallback.

A checkpoint holds networks, optimizers, schedulers, scalers, EMA, step, best metric, RNG states, the
resolved config and library versions - tensors and plain data only (dicts, lists, strings, numbers), so it
is loaded with `torch.load(weights_only=True)`: a file that carries any other Python object (which a full
unpickler would import and could call) is refused, whoever made it. Everything is loaded onto the CPU;
the engine moves weights to the run's device (a GPU run reloads on a CPU-only machine and vice versa).

`save_checkpoint` writes to a temporary file and renames it over `last.pt`, so a kill at any moment leaves a
whole `last.pt` (never a half-written or missing one); the copy it replaces is kept as `last.prev.pt`.
`link_checkpoint` gives a second name to a checkpoint already written (best.pt and last.pt of one step share
their data) and `disk_use` says what a folder of them takes on disk. Two
checks catch damage: the SHA-256 of the whole file in `<name>.sha256` beside it, and a digest of the tensor
data stored inside the checkpoint itself (`tensor_digest`), which still holds when the sidecar is missing.
`load_checkpoint` verifies both and falls back to the previous copy, with a warning, when the newest file
is truncated or corrupt.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import platform
import shutil
import warnings
from pathlib import Path

import torch

from medgen.errors import MedgenError
from medgen.files import atomic_write

FORMAT = "medgen-checkpoint"
FORMAT_VERSION = 2  # 2: weights-only data (RNG states as tensors / lists) and an embedded tensor digest
TENSOR_PARTS = ("networks", "ema")  # the parts whose tensor bytes `tensor_digest` covers


def library_versions() -> dict:
    import monai
    import numpy

    import medgen

    return {
        "medgen": medgen.__version__,
        "torch": str(torch.__version__),  # a str subclass: stored as a plain string
        "monai": monai.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tensor_digest(state: dict) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of every tensor in the weight parts of `state`."""
    h = hashlib.sha256()

    def visit(prefix: str, value) -> None:
        if torch.is_tensor(value):
            t = value.detach().to("cpu").contiguous().reshape(-1)
            h.update(f"{prefix}:{tuple(value.shape)}:{t.dtype}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                visit(f"{prefix}/{key}", value[key])

    for part in TENSOR_PARTS:
        visit(part, state.get(part))
    return h.hexdigest()


def save_checkpoint(state: dict, path, keep_previous: bool = True) -> Path:
    """Atomically write `state` to `path` (through `medgen.files.atomic_write`, so with the umask's mode); with
    `keep_previous`, the replaced file becomes `<stem>.prev.pt`.

    `path` exists at every instant once it has been written: the previous copy is made by a hard link (a copy
    where links are unsupported), never by moving `path` away, so a kill at any point leaves a loadable file.
    """
    path = Path(path)
    state = dict(state, format=FORMAT, format_version=FORMAT_VERSION)
    state["tensor_digest"] = tensor_digest(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    _remove_stale_temporaries(path)
    atomic_write(path, payload, before_replace=lambda: _before_replace(path, keep_previous))
    atomic_write(_digest_path(path), _sha256(payload))
    return path


def link_checkpoint(source, path, keep_previous: bool = False) -> Path:
    """Make `path` the same checkpoint as `source` (a hard link, so no second copy on disk; a copy where links
    are unsupported), with its checksum, atomically; `keep_previous` as in `save_checkpoint`.

    Checkpoint files are only ever replaced by a rename, never rewritten in place, so files that share their
    data stay correct when either name is replaced later.
    """
    source, path = Path(source), Path(path)
    digest = _digest_path(source).read_text().strip() if _digest_path(source).exists() else \
        _sha256(source.read_bytes())
    staged = _stage_link(source, path.with_name(f".{path.name}.link.tmp"))
    _before_replace(path, keep_previous)
    os.replace(staged, path)
    atomic_write(_digest_path(path), digest)
    return path


def remove_checkpoint(path) -> None:
    """Delete a checkpoint and its checksum (a name that shares its data with another keeps that one whole)."""
    path = Path(path)
    _digest_path(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def disk_use(folder) -> dict:
    """What the checkpoints of `folder` take on disk: {"files": names, "copies": distinct files (hard links
    counted once), "bytes": their total size}."""
    files = sorted(p for p in Path(folder).glob("*.pt") if p.is_file())
    inodes = {}
    for p in files:
        st = p.stat()
        inodes[(st.st_dev, st.st_ino)] = st.st_size
    return {"files": [p.name for p in files], "copies": len(inodes), "bytes": int(sum(inodes.values()))}


def _before_replace(path: Path, keep_previous: bool) -> None:
    if keep_previous and path.exists():
        _keep_previous(path)
    # A stale digest would make the fresh file look corrupt, so it goes first (if it did not already go with
    # the previous copy); until the new one is written, `path` is checked by the load check alone.
    _digest_path(path).unlink(missing_ok=True)


def _stage_link(source: Path, staged: Path) -> Path:
    """`staged` as a second name of `source` (a hard link; a copy where links are unsupported), ready to be
    renamed into place."""
    staged.unlink(missing_ok=True)
    try:
        os.link(source, staged)
    except OSError:
        shutil.copy2(source, staged)
    return staged


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files a killed save of `path` left behind (each as large as a checkpoint)."""
    for stale in path.parent.glob(f".{path.name}.*tmp*"):
        stale.unlink(missing_ok=True)


def _keep_previous(path: Path) -> None:
    prev = previous_path(path)
    staged = _stage_link(path, prev.with_name(f".{prev.name}.tmp"))
    _digest_path(prev).unlink(missing_ok=True)  # never pair the old digest with the new previous copy
    os.replace(staged, prev)
    if _digest_path(path).exists():
        os.replace(_digest_path(path), _digest_path(prev))


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def previous_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".prev" + path.suffix)


def _load_verified(path: Path) -> dict:
    payload = path.read_bytes()
    file_digest = _sha256(payload)
    digest_file = _digest_path(path)
    if digest_file.exists() and digest_file.read_text().strip() != file_digest:
        raise MedgenError(f"{path}: checksum mismatch (truncated or modified file)")
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(payload))
        except Exception:  # noqa: BLE001 - only for the message
            names = []
        found = f": {', '.join(names[:5])}" if names else ""
        raise UnsafeCheckpointError(
            f"{path}: refused - it holds Python objects other than tensors and plain data{found}; loading it "
            "could run code, and medgen checkpoints never hold any") from None
    except Exception as exc:  # torch raises several types for truncated zips
        raise MedgenError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise MedgenError(f"{path}: not a medgen checkpoint")
    stored = state.get("tensor_digest")
    if stored is not None and stored != tensor_digest(state):
        raise MedgenError(f"{path}: its weights do not match the digest stored in it (modified or corrupt file)")
    state["file_sha256"] = file_digest  # which file was read (outputs record the model that made them)
    state["file_path"] = str(path)
    return state


def _numpy_array_globals() -> list:
    """The constructors of numpy arrays, dtypes and scalars: data, not code. Checkpoints of format 1 stored
    numpy's RNG state as an array, so they stay loadable under weights_only with these allowed."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    return [np.ndarray, np.dtype, _reconstruct, scalar]


class UnsafeCheckpointError(MedgenError):
    """A file that could run code when loaded. Never falls back: the previous copy may be just as foreign."""


def load_checkpoint(path, fallback: bool = True) -> dict:
    """Load and verify a checkpoint onto the CPU; when it is damaged, warn and use `<stem>.prev.pt` if it exists."""
    path = Path(path)
    if not path.exists():
        raise MedgenError(f"{path}: checkpoint not found")
    try:
        return _load_verified(path)
    except UnsafeCheckpointError:
        raise
    except MedgenError as exc:
        prev = previous_path(path)
        if not (fallback and prev.exists()):
            raise
        warnings.warn(f"{exc}; using the previous checkpoint {prev}", stacklevel=2)
        return _load_verified(prev)
