"""Datalists: the MSD / nnU-Net style `dataset.json` every pipeline reads.

A dataset is a folder with `dataset.json` holding `training` / `validation` / `test` lists of cases
(`{"id": ..., key: path, ...}`) and a `keys` map (key -> kind: image | label | tabular | value).
`load_datalist` validates it up front so a wrong path fails in one clear message before training,
not an hour into it.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterable, Sequence


from medgen.errors import ConfigError, DataError

SPLITS = ("training", "validation", "test")
FILE_KINDS = ("image", "label", "tabular")
_PATH_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".png", ".tif", ".tiff", ".jpg", ".jpeg",
                  ".dcm", ".ima", ".parquet", ".csv", ".tsv", ".npy", ".npz", ".json")
_LABEL_WORDS = ("mask", "lesion", "label", "tissue", "seg")


# A case id becomes part of output file names (`<id>_<output>.nii.gz`, previews): it must be one plain name.
MAX_CASE_ID_LENGTH = 200


def case_id_problem(case_id: Any) -> str | None:
    """What is wrong with a case id as a file-name part, or None when it is a plain name.

    Refused: not a string (or integer), empty, '.' or '..', a path separator ('/' or '\\'), a drive or
    absolute path, control characters (including NUL), more than MAX_CASE_ID_LENGTH characters.
    """
    if isinstance(case_id, bool) or not isinstance(case_id, (str, int)):
        return f"case id must be a string, got {type(case_id).__name__} {case_id!r}"
    cid = str(case_id)
    if not cid.strip():
        return "case id is empty"
    if cid in (".", ".."):
        return f"case id {cid!r} is a folder reference, not a name"
    if "/" in cid or "\\" in cid:
        return f"case id {cid!r} contains a path separator; it becomes a file name, so use a plain name"
    if any(ord(c) < 32 or ord(c) == 127 for c in cid):
        return f"case id {cid!r} contains control characters"
    if PureWindowsPath(cid).drive or PurePosixPath(cid).is_absolute():
        return f"case id {cid!r} is an absolute path; use a plain name"
    if len(cid) > MAX_CASE_ID_LENGTH:
        return f"case id {cid[:40]!r}... is {len(cid)} characters long (at most {MAX_CASE_ID_LENGTH})"
    return None


def check_case_id(case_id: Any, source: str | os.PathLike | None = None) -> str:
    """`case_id` as a string when it is a plain name (see `case_id_problem`), else DataError naming `source`."""
    problem = case_id_problem(case_id)
    if problem:
        raise DataError(source, problem)
    return str(case_id)


def guess_kind(key: str) -> str:
    """'image' unless the key name says it is a label map (mask, lesion, label, tissue, seg)."""
    k = key.lower()
    return "label" if any(w in k for w in _LABEL_WORDS) else "image"


@dataclass
class Datalist:
    """A validated dataset description: split lists of case dicts with absolute paths."""

    root: Path
    keys: dict[str, str]
    training: list[dict] = field(default_factory=list)
    validation: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    def split(self, name: str) -> list[dict]:
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)

    @property
    def all_cases(self) -> list[dict]:
        return self.training + self.validation + self.test

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", self.root.name))

    def kind(self, key: str) -> str:
        return self.keys.get(key, guess_kind(key))

    def __len__(self) -> int:
        return len(self.all_cases)

    def to_dict(self, relative_to: Path | None = None) -> dict:
        """JSON-ready dict; paths made relative to `relative_to` where they lie below it."""
        out = dict(self.metadata)
        out["keys"] = dict(self.keys)
        for split in SPLITS:
            out[split] = [_relativise(case, self.keys, relative_to) for case in getattr(self, split)]
        return out


def _is_path_value(key: str, value: Any, keys: dict[str, str]) -> bool:
    if key == "id":
        return False
    if key in keys:
        return keys[key] in FILE_KINDS
    if isinstance(value, str):
        low = value.lower()
        return any(low.endswith(s) for s in _PATH_SUFFIXES)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return all(_is_path_value(key, v, keys) for v in value)
    return False


def _relativise(case: dict, keys: dict[str, str], root: Path | None) -> dict:
    out = {}
    for k, v in case.items():
        if root is not None and _is_path_value(k, v, keys):
            out[k] = [_rel(p, root) for p in v] if isinstance(v, list) else _rel(v, root)
        else:
            out[k] = v
    return out


def _rel(p: str, root: Path) -> str:
    try:
        return Path(p).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(p)


def read_dataset_json(dataset_dir_or_json: str | os.PathLike) -> tuple[dict, Path, Path]:
    """-> (parsed json, dataset root folder, json path). DataError for a missing / unparsable file."""
    p = Path(dataset_dir_or_json)
    json_path = p / "dataset.json" if p.is_dir() else p
    if not json_path.exists():
        if not p.exists():
            raise DataError(p, "dataset folder or json file does not exist")
        raise DataError(json_path, "no dataset.json in the dataset folder (build one with "
                                   "`medgen make-dataset SRC OUT`, see docs/datasets.md)")
    try:
        data = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(json_path, f"cannot parse the dataset JSON ({err})") from err
    if not isinstance(data, dict):
        raise DataError(json_path, "dataset JSON must be an object with 'training'/'validation'/'test' lists")
    keys = data.get("keys", {})
    if not isinstance(keys, dict):
        raise DataError(json_path, "'keys' must map key names to kinds, e.g. {\"t1\": \"image\", \"mask\": \"label\"}")
    return data, json_path.parent.resolve(), json_path


def _case_id_from_value(case: dict, keys: dict[str, str]) -> str | None:
    from medgen.data.io import strip_image_suffix

    for k, v in case.items():
        if _is_path_value(k, v, keys):
            first = v[0] if isinstance(v, list) else v
            return strip_image_suffix(Path(first).name)
    return None


def normalise_cases(data: dict, json_path: Path, splits: Sequence[str],
                    problems: list[tuple[str, str]] | None = None) -> dict[str, list[dict]]:
    """Split lists as dicts with an `id` each (generated from the first file name when missing).

    Every id must be a plain name (`case_id_problem`). By default the first problem raises a DataError
    naming dataset.json; with a `problems` list, each one is appended as (case id or "split[n]", message)
    instead and the rest is still read (cases that are not objects are left out): check-data's way.
    """
    def fail(where: str, message: str) -> None:
        if problems is None:
            raise DataError(json_path, message)
        problems.append((where, message))

    keys = data.get("keys", {})
    out: dict[str, list[dict]] = {}
    for split in splits:
        raw = data.get(split, [])
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            fail("-", f"'{split}' must be a list of cases, got {type(raw).__name__}")
            raw = []
        cases = []
        for n, case in enumerate(raw):
            if isinstance(case, str):  # MSD test lists hold bare paths
                case = {"image": case}
            if not isinstance(case, dict):
                fail(f"{split}[{n}]", f"{split}[{n}] must be an object of key -> path, got {case!r}")
                continue
            case = dict(case)
            if "id" not in case or case["id"] in (None, ""):
                gid = _case_id_from_value(case, keys)
                if gid is None:
                    fail(f"{split}[{n}]", f"{split}[{n}] has no 'id' and no file to name it after")
                    continue
                case["id"] = gid
                case["_generated_id"] = True
            problem = case_id_problem(case["id"])
            if problem:
                fail(str(case["id"]), f"{split}[{n}]: {problem} (in {json_path.name})")
            case["id"] = str(case["id"])
            cases.append(case)
        out[split] = cases
    # generated ids that collide (e.g. every case has 'caseNN/t1.nii.gz'): use the parent folder too
    every = [c for s in out.values() for c in s]
    counts: dict[str, int] = {}
    for c in every:
        counts[c["id"]] = counts.get(c["id"], 0) + 1
    for c in every:
        if c.pop("_generated_id", False) and counts[c["id"]] > 1:
            first = next(v for k, v in c.items() if k != "id" and _is_path_value(k, v, keys))
            first = first[0] if isinstance(first, list) else first
            c["id"] = f"{Path(first).parent.name}_{c['id']}" if Path(first).parent.name else c["id"]
    seen: dict[str, str] = {}
    for split, cases in out.items():
        for c in cases:
            if c["id"] in seen:
                fail(c["id"], f"case id {c['id']!r} appears twice ({seen[c['id']]} and {split})")
            seen[c["id"]] = split
    return out


def resolve_path(value: str, root: Path) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else (root / p)


def load_datalist(
    dataset_dir_or_json: str | os.PathLike,
    keys: Iterable[str] | None = None,
    splits: Sequence[str] = SPLITS,
    check_files: bool = True,
    required_splits: Sequence[str] = (),
) -> Datalist:
    """Read and validate a dataset folder's `dataset.json` (or a json file) into a `Datalist`.

    keys: keys every case must have (e.g. ("t1", "t2", "mask")); None checks nothing beyond the files.
    Every path value is resolved to an absolute path; with `check_files` a missing file raises a
    DataError naming the case, key and path. Keys not declared in the json's "keys" map get a kind
    from their name (mask/lesion/label/tissue/seg -> label, else image).
    """
    data, root, json_path = read_dataset_json(dataset_dir_or_json)
    for s in splits:
        if s not in SPLITS:
            raise ConfigError(f"unknown split {s!r}; choose from {', '.join(SPLITS)}")
    declared = {str(k): str(v) for k, v in data.get("keys", {}).items()}
    cases = normalise_cases(data, json_path, splits)
    requested = list(keys) if keys is not None else []
    for split in required_splits:
        if not cases.get(split):
            raise DataError(json_path, f"the '{split}' split is empty or missing")
    for split, items in cases.items():
        for case in items:
            for key in requested:
                if key not in case:
                    present = ", ".join(k for k in case if k != "id") or "none"
                    raise DataError(json_path, f"case '{case['id']}' in {json_path.name} has no key '{key}'; "
                                               f"keys present: {present}")
            for key, value in list(case.items()):
                if not _is_path_value(key, value, declared):
                    continue
                values = value if isinstance(value, list) else [value]
                resolved = []
                for v in values:
                    if not isinstance(v, str):
                        raise DataError(json_path, f"case '{case['id']}' key '{key}': expected a path, got {v!r}")
                    rp = resolve_path(v, root)
                    if check_files and not rp.exists():
                        raise DataError(rp, f"missing file for case '{case['id']}' key '{key}' "
                                            f"(listed in {json_path} as {v!r})")
                    resolved.append(str(rp.resolve() if rp.exists() else rp.absolute()))
                case[key] = resolved if isinstance(value, list) else resolved[0]
    all_keys = dict(declared)
    for items in cases.values():
        for case in items:
            for key, value in case.items():
                if key != "id" and key not in all_keys and _is_path_value(key, value, declared):
                    all_keys[key] = guess_kind(key)
    metadata = {k: v for k, v in data.items() if k not in SPLITS and k != "keys"}
    return Datalist(root=root, keys=all_keys, metadata=metadata, source=json_path,
                    **{s: cases.get(s, []) for s in SPLITS})


def save_datalist(datalist: Datalist | dict, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write a dataset.json (paths relative to its folder when they lie below it). `path` may be a folder."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() != ".json":
        path = path / "dataset.json"
    if path.exists() and not overwrite:
        raise DataError(path, "already exists (pass overwrite=True)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(datalist, Datalist):
        payload = datalist.to_dict(relative_to=path.parent)
    else:
        payload = dict(datalist)
    from medgen.files import atomic_write

    return atomic_write(path, json.dumps(payload, indent=2) + "\n")


def _pattern_regex(pattern: str) -> re.Pattern:
    """Glob -> regex where each '*' captures (within one path part); '**/' matches any folders."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += r"(?:.*/)?"
            i += 3
        elif pattern[i] == "*":
            out += r"([^/]*)"
            i += 1
        elif pattern[i] == "?":
            out += r"[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def match_patterns(root: Path, files: Sequence[Path], patterns: dict[str, str | Sequence[str]]):
    """Assign files to (case id, key) by glob patterns, e.g. {"t1": "*_t1.nii.gz", "mask": ["*_mask.nii.gz"]}.

    The case id is what the pattern's '*'s matched, joined by '_' (the part of the name before the
    pattern's suffix; "*/t1.nii.gz" takes the folder name). A pattern without '/' is matched against file
    names, one with '/' against the path below root. Returns ({(case, key): (relative path, pattern,
    captures)}, the set of files used); a case matching one key twice is a DataError naming both files.
    """
    found: dict[tuple[str, str], tuple[str, str, tuple[str, ...]]] = {}
    used: set[Path] = set()
    for key, pats in patterns.items():
        for pattern in ([pats] if isinstance(pats, str) else list(pats)):
            if "*" not in pattern:
                raise ConfigError(f"pattern for {key!r} must contain '*' marking the case id, got {pattern!r}")
            rx = _pattern_regex(pattern)
            for f in files:
                rel = Path(f).relative_to(root).as_posix()
                m = rx.match(rel) if "/" in pattern else rx.match(Path(f).name)
                if not m:
                    continue
                captures = tuple(g for g in m.groups() if g)
                cid = "_".join(captures)
                if (cid, key) in found:
                    raise DataError(f, f"case '{cid}' has two files for key '{key}': {found[(cid, key)][0]} "
                                       f"({found[(cid, key)][1]!r}) and {rel} ({pattern!r}); make the pattern "
                                       "more specific")
                found[(cid, key)] = (rel, pattern, captures)
                used.add(Path(f))
    return found, used


def datalist_from_folder(
    folder: str | os.PathLike,
    patterns: dict[str, str],
    split: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    kinds: dict[str, str] | None = None,
    missing: str = "error",
    name: str | None = None,
) -> Datalist:
    """Build a Datalist by file-name patterns, e.g. {"t1": "*_t1.nii.gz", "mask": "*_mask.nii.gz"}.

    The case id is what the pattern's '*' matched (the part of the name before the pattern's suffix;
    patterns with a folder such as "*/t1.nii.gz" take the folder name). Files are searched
    recursively; a pattern without '/' is matched against file names. Cases missing a key raise a
    DataError (`missing="error"`) or are dropped with a warning (`missing="skip"`). Cases are split
    with `medgen.data.splitting.split_cases` (seeded; a split with a non-zero fraction gets a case
    whenever there are enough), and a split left empty anyway is warned about.
    `medgen make-dataset` (medgen.data.make_dataset) does the same from the command line for more layouts.
    """
    from medgen.data.splitting import parse_fractions, split_cases

    root = Path(folder)
    if not root.is_dir():
        raise DataError(root, "dataset folder does not exist")
    if not patterns:
        raise ConfigError("datalist_from_folder needs at least one key pattern, e.g. {'t1': '*_t1.nii.gz'}")
    fractions = parse_fractions(split)
    if missing not in ("error", "skip"):
        raise ConfigError("missing must be 'error' or 'skip'")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    matched, _ = match_patterns(root, files, patterns)
    found: dict[str, dict[str, str]] = {}
    for (cid, key), (rel, _, _) in matched.items():
        found.setdefault(cid, {})[key] = rel
    if not found:
        raise DataError(root, f"no files match the patterns {patterns}")
    incomplete = {cid: [k for k in patterns if k not in c] for cid, c in found.items() if len(c) < len(patterns)}
    if incomplete:
        listing = "; ".join(f"{cid}: no {', '.join(ks)}" for cid, ks in sorted(incomplete.items())[:10])
        if missing == "error":
            raise DataError(root, f"{len(incomplete)} case(s) lack files: {listing}")
        warnings.warn(f"{root}: dropping {len(incomplete)} incomplete case(s): {listing}", stacklevel=2)
    ids = sorted(cid for cid in found if cid not in incomplete)
    if not ids:
        raise DataError(root, "no case has a file for every key")
    for cid in ids:
        check_case_id(cid, root)
    parts = split_cases(ids, fractions, seed=seed)
    empty = [s for s, f in zip(SPLITS, fractions) if f > 0 and not parts[s]]
    if empty:
        warnings.warn(f"{root}: {len(ids)} case(s) leave the {' and '.join(empty)} split(s) empty "
                      f"({', '.join(f'{s} {len(parts[s])}' for s in SPLITS)})", stacklevel=2)

    def mk(cids):
        return [{"id": cid, **{k: str((root / found[cid][k]).resolve()) for k in patterns}} for cid in sorted(cids)]

    keys = {k: (kinds or {}).get(k, guess_kind(k)) for k in patterns}
    return Datalist(root=root.resolve(), keys=keys, **{s: mk(parts[s]) for s in SPLITS},
                    metadata={"name": name or root.name, "patterns": dict(patterns), "split_seed": seed})
