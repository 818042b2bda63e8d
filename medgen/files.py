"""Writing files the way every medgen output is written: atomically, with ordinary permissions, and only
inside the folder it belongs to.

- `atomic_write(path, content)`: the content (bytes, text, or a function that writes a given path, for
  libraries such as nibabel or matplotlib that want a file name) goes to a temporary file in the same folder,
  is flushed to disk and renamed over `path`. A reader never sees a half-written file, and a crash leaves the
  old file or the new one. The file gets the mode a plain `open()` would give (0666 minus the umask, so 0644
  under the usual 022): `tempfile.mkstemp` creates 0600 files, which collaborators on a shared server could
  not read.
- `write_json_atomic(path, data)`: JSON through `atomic_write`.
- `contained_path(folder, name)`: `folder / name`, refused when it would lie outside `folder` (a name taken
  from a dataset, such as a case id, must never become `../../somewhere`).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Callable

from medgen.errors import MedgenError

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (reading it means setting it, so briefly, under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for double in (".nii.gz", ".tar.gz"):
        if name.endswith(double):
            return path.name[-len(double):]
    return path.suffix


def atomic_write(path, content: bytes | str | Callable[[Path], object], overwrite: bool = True,
                 fsync: bool = True, before_replace: Callable[[], object] | None = None) -> Path:
    """Write `content` to `path` atomically (see the module docstring); returns `path`.

    content: bytes, str (UTF-8), or a function called with a temporary path of the same suffix that writes the
    file there. overwrite=False refuses an existing `path` (checked before and again just before the rename).
    before_replace: called once the new content is safely on disk, just before the rename (the checkpoint
    writer keeps the file it is about to replace as a previous copy there).
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise MedgenError(f"{path} already exists; refusing to overwrite it (pass --overwrite)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{_suffix(path)}", dir=path.parent)
    except OSError as exc:
        raise MedgenError(f"cannot write {path}: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        if callable(content):
            os.close(fd)
            content(tmp)
            if fsync:
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
        else:
            data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                if fsync:
                    os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        if not overwrite and path.exists():  # appeared while we were writing
            raise MedgenError(f"{path} already exists; refusing to overwrite it (pass --overwrite)")
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except OSError as exc:
        raise MedgenError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_json_atomic(path, data, overwrite: bool = True) -> Path:
    """`data` as indented JSON (numbers, strings, lists, dicts; other objects as their str)."""
    return atomic_write(path, json.dumps(data, indent=2, default=str) + "\n", overwrite=overwrite)


def contained_path(folder, *parts: str) -> Path:
    """`folder / parts...`, proven to stay inside `folder` (symbolic links and `..` resolved)."""
    base = Path(folder).resolve()
    candidate = base.joinpath(*[str(p) for p in parts])
    try:
        candidate.resolve().relative_to(base)
    except ValueError:
        raise MedgenError(f"refusing to write {candidate}: it lies outside {base} "
                          f"(a case id or name with '..' or a path separator?)") from None
    if any(not str(p) or str(p) in (".", "..") for p in parts):
        raise MedgenError(f"refusing to write into {base}: empty or dot name in {list(parts)}")
    return candidate
