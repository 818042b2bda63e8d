"""The embedded phantom a config asks for, written once and reused only when it is exactly that phantom.

A config's `data.phantom_*` fields size it: `phantom_cases` (cases; 0 = the generator's default),
`phantom_shape` ([] = default), and where a pipeline's data config has them, `phantom_spacing` (mm) and
`phantom_lesions` (lesions per subject, -1 = the generator's draw). The generator's defaults go to
`<phantom_dir>/<kind>` (what `medgen demo` writes); any other request gets its own folder, e.g.
`<phantom_dir>/head_8cases_24x24x24`, so two configs sharing a phantom_dir never read each other's phantoms.
"""

from __future__ import annotations

import json
from pathlib import Path

from medgen.errors import MedgenError


def phantom_options(data_cfg) -> dict:
    """The generator options a data config asks for (only those set)."""
    options = {}
    if getattr(data_cfg, "phantom_cases", 0):
        options["n_cases"] = int(data_cfg.phantom_cases)
    if getattr(data_cfg, "phantom_shape", None):
        options["shape"] = tuple(int(s) for s in data_cfg.phantom_shape)
    if getattr(data_cfg, "phantom_spacing", None):
        options["spacing"] = tuple(float(s) for s in data_cfg.phantom_spacing)
    lesions = getattr(data_cfg, "phantom_lesions", -1)
    if lesions is not None and lesions >= 0:
        options["lesions"] = int(lesions)
    return options


def _folder_name(kind: str, options: dict) -> str:
    parts = [kind]
    if "n_cases" in options:
        parts.append(f"{options['n_cases']}cases")
    if "shape" in options:
        parts.append("x".join(map(str, options["shape"])))
    if "spacing" in options:
        parts.append("x".join(f"{s:g}" for s in options["spacing"]) + "mm")
    if "lesions" in options:
        parts.append(f"{options['lesions']}lesions")
    return "_".join(parts)


def phantom_dataset(kind: str, data_cfg, seed: int = 0, folder: str | Path | None = None) -> Path:
    """The phantom folder of `kind` for this data config, written on first use under data.phantom_dir.
    Under torchrun rank 0 writes it while the other ranks wait, so they never race on the same files."""
    import torch.distributed as dist

    from medgen.data.phantoms.datasets import write_phantom_dataset
    from medgen.engine.distributed import barrier

    options = phantom_options(data_cfg)
    folder = Path(folder) if folder is not None else Path(data_cfg.phantom_dir) / _folder_name(kind, options)
    is_main = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    if is_main and not (folder / "dataset.json").exists():
        write_phantom_dataset(kind, folder, seed=seed, **options)
    barrier()
    check_phantom_matches(folder, kind, seed, options)
    return folder


def check_phantom_matches(folder: Path, kind: str, seed: int, requested: dict) -> None:
    """A phantom folder written earlier is reused only if it was written with what the config asks for now:
    a run with data.phantom_cases=300 must not silently train on the 60 B-scans of an older run."""
    try:
        written = json.loads((folder / "dataset.json").read_text()).get("phantom")
    except (OSError, ValueError) as err:
        raise MedgenError(f"{folder / 'dataset.json'}: cannot read the phantom dataset ({err})") from err
    if not isinstance(written, dict):
        return  # not written by medgen.data.phantoms: the user's own folder, used as it is
    have = {"kind": written.get("kind"), "seed": written.get("seed"), "n_cases": written.get("n_cases"),
            "shape": written.get("shape"), **(written.get("options") or {})}

    def plain(v):
        return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v

    want = {"kind": kind, "seed": int(seed), **requested}
    differ = [f"{k}={plain(have.get(k))!r} (asked: {plain(v)!r})" for k, v in want.items()
              if plain(have.get(k)) != plain(v)]
    if differ:
        raise MedgenError(f"{folder}: this phantom dataset was written with {', '.join(differ)}; set "
                          "data.phantom_dir to another folder (or delete this one) to write the phantom asked for")
