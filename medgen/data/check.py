"""`medgen check-data`: inspect a dataset before training and list every problem at once.

Per case and key: the file exists and loads (header and voxels), shape, spacing, orientation code,
dtype, intensity range (min, max, p1, p99) and NaN/Inf count; images within a case share shape and
affine; label maps are integer-valued and non-empty, and masks (mask, brain_mask, lesion, *_mask)
are binary; tabular keys load as numeric matrices without NaN. Unlike `load_datalist`, which stops at
the first error, this collects all problems so a user fixes a dataset in one pass, and whatever the
input (a json list, wrong types, unreadable or odd-shaped files) it reports problems rather than raising.

Voxels are read by the pipelines' loader (`medgen.data.io.load_image`), so a file it refuses, or whose
values it gets as Inf, is a problem here too; an image with no voxel above 0 is one (the MR / PET
normalisations need a foreground). Without `keys`, an image key most cases have is expected in all.

Dimensions: a 3D dataset holds one 3D volume per key, so a 1D / 2D file, or a 4D one (time frames or
channels), is a problem. A 2D dataset (OCT B-scans: `"spatial_dims": 2`, or a case holding a 2D file whose
keys name no volume such as t1 or ct) is read the way the oct_anogan pipeline reads it, with
`medgen.data.io.load_bscan`: (H, W), (H, W, C) channel-last and (C, H, W) channel-first with C in 1 / 3 / 4
are all fine, and a case's files are compared by (H, W).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from medgen.errors import DataError

# Keys that name a 3D modality (medgen.data.keynames): never read as 2D B-scans.
VOLUME_KEYS = {"t1", "t1c", "t2", "flair", "pd", "ct", "mr", "pet", "low_dose", "full_dose"}
_BINARY_NAMES = ("mask", "brain_mask", "head_mask", "lesion", "lesion_mask")
SPLITS = ("training", "validation", "test")


def is_binary_mask_key(key: str) -> bool:
    k = key.lower()
    return k in _BINARY_NAMES or k.endswith("_mask")


def parse_keys(keys: Iterable[str] | str | None) -> list[str] | None:
    """'t1,t2' / ['t1', 't2'] / ['t1,t2', 'mask'] -> ['t1', 't2', ...]; None or nothing -> None (all keys)."""
    if keys is None:
        return None
    items = [keys] if isinstance(keys, str) else list(keys)
    out = [k.strip() for item in items for k in str(item).split(",") if k.strip()]
    return out or None


@dataclass
class CheckReport:
    """Rows (one per case x key) and problems (case, key, path, message)."""

    dataset: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[tuple[str, str, str, str]] = field(default_factory=list)
    split_counts: dict[str, int] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, case: str, key: str, path: Any, message: str) -> None:
        self.problems.append((str(case), str(key), str(path), message))

    @property
    def n_cases(self) -> int:
        return sum(self.split_counts.values()) if self.split_counts else len(
            {(r.get("split"), r.get("case")) for r in self.rows})

    def format(self, max_rows: int = 500) -> str:
        cols = ["split", "case", "key", "kind", "shape", "spacing", "orient", "dtype", "min", "max", "p1", "p99",
                "nonfinite", "status"]
        table = [[_fmt(r.get(c, "")) for c in cols] for r in self.rows[:max_rows]]
        widths = [max([len(c)] + [len(row[i]) for row in table]) for i, c in enumerate(cols)]
        lines = [f"dataset: {self.dataset}", "  ".join(c.ljust(w) for c, w in zip(cols, widths)),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in table]
        if len(self.rows) > max_rows:
            lines.append(f"... {len(self.rows) - max_rows} more rows")
        n_cases = len({(r.get("split"), r.get("case")) for r in self.rows})
        if self.ok:
            lines.append(f"OK: {n_cases} case(s), {len(self.rows)} file(s), no problems found")
        else:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [_problem_line(p) for p in self.problems]
        return "\n".join(lines)

    def summary(self, max_problems: int = 10) -> str:
        """One line for the dataset (cases per split, files, keys); problems, if any, listed below it."""
        splits = ", ".join(f"{s} {n}" for s, n in self.split_counts.items())
        line = (f"{'OK' if self.ok else 'PROBLEMS'}  {self.dataset}: {self.n_cases} case(s)"
                f"{f' ({splits})' if splits else ''}, {len(self.rows)} file(s)"
                f"{', keys ' + ', '.join(self.keys) if self.keys else ''}")
        if self.ok:
            return line + ", no problems"
        lines = [f"{line}, {len(self.problems)} problem(s):"]
        lines += [_problem_line(p) for p in self.problems[:max_problems]]
        if len(self.problems) > max_problems:
            lines.append(f"  ... {len(self.problems) - max_problems} more (run check-data without --summary "
                         "for the full report)")
        return "\n".join(lines)


def _problem_line(problem: tuple[str, str, str, str]) -> str:
    case, key, path, msg = problem
    return f"  - case {case}, key {key}: {msg} [{path}]"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, tuple):
        return "x".join(_fmt(x) if isinstance(x, float) else str(x) for x in v)
    return str(v)


def _read_voxels(path: Path) -> np.ndarray:
    """The voxels as the pipelines get them: through `load_image` (float32, NIfTI scaling applied), so a value
    that overflows float32 (scl_slope) is counted as Inf here too, and a file it refuses is a problem here."""
    from medgen.data.io import load_array

    return load_array(path, allow_nonfinite=True)[0]


def _is_bscan(header) -> bool:
    from medgen.data.io import bscan_layout

    try:
        bscan_layout(header.shape)
    except ValueError:
        return False
    return True


def _grid(header, dims: int | None) -> tuple[int, ...]:
    """The spatial grid files of a case are compared on: (H, W) for B-scans, else the header's."""
    from medgen.data.io import bscan_shape

    if dims == 2 and _is_bscan(header):
        return tuple(bscan_shape(header.shape))
    return tuple(header.spatial_shape)


def _check_image(report: CheckReport, row: dict, case: str, key: str, kind: str, path: Path, header,
                 allow_empty: bool, allowed_values, dims: int | None) -> bool:
    """Fill `row` from the voxels and add the problems; `header` is already read. False when unusable."""
    from medgen.data.io import load_bscan

    h = header
    if any(s == 0 for s in h.shape):
        report.add(case, key, path, f"zero-size axis, shape {h.shape}")
        return False
    if dims == 2:
        if not _is_bscan(h):
            report.add(case, key, path, f"expected a 2D image (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4; "
                                        f"got shape {h.shape}")
            return False
    elif h.spatial_dims > 3:
        report.add(case, key, path, f"{h.spatial_dims}D image, shape {h.shape}: medgen reads 2D and 3D images")
        return False
    elif dims == 3 and h.spatial_dims != 3:
        report.add(case, key, path, f"expected a 3D image, got {h.spatial_dims}D shape {h.shape}")
    elif h.spatial_dims == 3 and any(s != 1 for s in h.shape[3:]):
        n = int(np.prod([s for s in h.shape[3:]]))
        report.add(case, key, path, f"4D image, shape {h.shape}: {n} volumes (time frames or channels) in one file, "
                                    "but a key holds one 3D volume; split it into one file per volume")
    a = _read_voxels(path)
    finite = np.isfinite(a) if a.dtype.kind == "f" else None
    n_bad = 0 if finite is None else int(a.size - finite.sum())
    vals = a if finite is None or n_bad == 0 else a[finite]
    row["nonfinite"] = n_bad
    if n_bad:
        report.add(case, key, path, f"{n_bad} NaN/Inf voxels")
    if vals.size:
        flat = np.asarray(vals, dtype=np.float32).reshape(-1)
        p1, p99 = np.percentile(flat, [1, 99])
        row.update(min=float(flat.min()), max=float(flat.max()), p1=float(p1), p99=float(p99))
    if kind == "image" and vals.size and not bool((vals > 0).any()):
        # MR and PET are normalised over their foreground (voxels > 0): a blank export (all zero) or a sign
        # flipped by its header's scl_slope leaves nothing to normalise, and the pipelines refuse the case.
        report.add(case, key, path, f"no voxel above 0 (max {float(np.max(vals)):.4g}): a blank image, nothing "
                                    "to normalise or learn from")
    if dims == 2 and not n_bad:
        try:  # what the pipeline will do with the file: channel layout, colour, ...
            load_bscan(path)
        except DataError as err:
            report.add(case, key, path, err.problem)
    if kind == "label":
        if vals.size and a.dtype.kind == "f" and not np.all(np.mod(vals, 1) == 0):
            report.add(case, key, path, "label map has non-integer values")
        if (not vals.size or not np.any(vals != 0)) and not allow_empty:
            report.add(case, key, path, "empty mask (no non-zero voxel)")
        elif allowed_values is not None:
            extra = sorted(set(np.unique(vals).tolist()) - set(allowed_values))
            if extra:
                shown = ", ".join(f"{v:g}" for v in extra[:10])
                report.add(case, key, path, f"labels outside the expected set {sorted(allowed_values)}: {shown}")
        elif is_binary_mask_key(key):
            uniq = np.unique(vals)
            if not set(uniq.tolist()) <= {0, 1}:
                shown = ", ".join(f"{v:g}" for v in uniq[:10]) + (", ..." if uniq.size > 10 else "")
                report.add(case, key, path, f"non-binary mask, values {{{shown}}}")
    return True


def _check_table(report: CheckReport, row: dict, case: str, key: str, path: Path):
    """The matrix (samples x features) as loaded, or None when it cannot be used."""
    from medgen.data.tabular import load_matrix

    try:
        df = load_matrix(path)
    except DataError as err:
        report.add(case, key, path, err.problem)
        return None
    x = df.to_numpy()
    if x.size == 0:
        report.add(case, key, path, f"empty table, shape {tuple(df.shape)}")
        return None
    row.update(shape=tuple(df.shape), dtype=str(x.dtype), min=float(x.min()), max=float(x.max()),
               p1=float(np.percentile(x, 1)), p99=float(np.percentile(x, 99)), nonfinite=0)
    if x.shape[0] > 1 and not (np.ptp(x, axis=0) > 0).any():
        report.add(case, key, path, f"no feature varies across the {x.shape[0]} samples (a constant matrix, every "
                                    f"value {float(x.flat[0]):.4g}): there is nothing to learn")
    return df


def _resolve(value: str, root: Path) -> Path:
    """The file a json path names; ValueError for a path the OS cannot even look up (NUL, too long)."""
    from medgen.data.datalist import resolve_path

    if "\x00" in value:
        raise ValueError(f"invalid path {value[:80]!r} (it contains a NUL character)")
    path = resolve_path(value, root)
    try:
        path.exists()
    except (OSError, ValueError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)[:200]
        raise ValueError(f"invalid path {value[:80]!r}{'...' if len(value) > 80 else ''} ({why})") from None
    return path


def _json_settings(report: CheckReport, data: dict, json_path: Path, expect_dims: int | None):
    """-> (declared kinds, label_values, expect_dims), each malformed field reported and ignored."""
    declared = {}
    for k, v in data.get("keys", {}).items():
        if isinstance(v, str):
            declared[str(k)] = v
        else:  # ignored: the key gets a kind from its name
            report.add("-", k, json_path, f"the kind of key '{k}' in 'keys' must be a word such as image, label, "
                                          f"tabular or value; got {v!r:.80}")
    label_values: dict[str, list[float]] = {}
    raw = data.get("label_values")
    if raw is not None:
        try:
            if not isinstance(raw, dict):
                raise TypeError
            for k, v in raw.items():
                if isinstance(v, (str, bytes)) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                          for x in v):
                    raise TypeError
                label_values[str(k)] = [float(x) for x in v]
        except TypeError:
            report.add("-", "-", json_path, f"'label_values' must map label keys to lists of numbers, e.g. "
                                            f'{{"seg": [0, 1, 2, 4]}}; got {raw!r:.80}')
            label_values = {}
    if expect_dims is None and "spatial_dims" in data:
        sd = data["spatial_dims"]
        if isinstance(sd, int) and not isinstance(sd, bool) and sd in (2, 3):
            expect_dims = sd
        else:
            report.add("-", "-", json_path, f"'spatial_dims' must be 2 or 3, got {sd!r:.80}")
    return declared, label_values, expect_dims


def check_dataset(dataset_dir: str | os.PathLike, keys: Iterable[str] | str | None = None,
                  pairs: str | Sequence[tuple[str, str]] | None = "all", affine_tol: float = 1e-3,
                  expect_dims: int | None = None, splits: Sequence[str] = SPLITS) -> CheckReport:
    """Check every case of a dataset folder (or dataset.json) and collect all problems.

    keys: the keys to check (each must be in every case), as a list or 't1,t2'; None checks every file key.
    pairs: "all" compares each image/label of a case with its first one (shape and affine within
    `affine_tol` mm; (H, W) only for 2D B-scans); a list of (key, key) pairs compares those; None skips.
    expect_dims (2 or 3) defaults to the json's "spatial_dims"; without either, a case holding a 2D
    file is read as 2D B-scans when all its files have a B-scan layout.
    """
    from medgen.data.datalist import _is_path_value, normalise_cases, read_dataset_json

    report = CheckReport(str(dataset_dir))
    try:
        data, root, json_path = read_dataset_json(dataset_dir)
    except DataError as err:
        report.add("-", "-", err.path, err.problem)
        return report
    report.dataset = str(json_path)
    id_problems: list[tuple[str, str]] = []
    cases = normalise_cases(data, json_path, splits, problems=id_problems)
    for where, message in id_problems:
        report.add(where, "id", json_path, message)
    declared, label_values, expect_dims = _json_settings(report, data, json_path, expect_dims)
    wanted = parse_keys(keys)
    report.split_counts = {s: len(items) for s, items in cases.items()}
    tables = data.get("tables")
    if tables is not None and not isinstance(tables, dict):
        report.add("-", "tables", json_path, f"'tables' must map names to files, got {type(tables).__name__}")
        tables = None
    if not any(cases.values()) and not tables:
        report.add("-", "-", json_path, f"no cases in the splits {', '.join(splits)}")
    _check_declared_kinds(report, cases, declared, json_path)
    if wanted is None:
        optional = data.get("optional_keys")
        optional = {str(k) for k in optional} if isinstance(optional, list) else set()
        _check_missing_image_keys(report, cases, declared, json_path, optional)
    seen_keys: dict[str, None] = {}
    for split, items in cases.items():
        for case in items:
            cid = case["id"]
            # A case declared normal ("label": 0, as in anomaly-detection test sets) may have empty masks.
            normal = _is_normal(case.get("label"))
            if wanted is not None:
                check_keys = []
                for k in wanted:
                    if k in case:
                        check_keys.append(k)
                    else:
                        present = ", ".join(x for x in case if x != "id") or "none"
                        report.add(cid, k, json_path, f"case '{cid}' in {json_path.name} has no key '{k}'; "
                                                      f"keys present: {present}")
            else:
                check_keys = [k for k, v in case.items() if _is_path_value(k, v, declared)]
            seen_keys.update(dict.fromkeys(check_keys))
            _check_case(report, split, case, check_keys, declared, root, json_path, normal, label_values,
                        expect_dims, pairs, affine_tol)
    report.keys = list(seen_keys)
    matrices = {}
    for name, rel in (tables or {}).items():  # tabular datasets list their files under "tables"
        frame = _check_table_entry(report, str(name), rel, root)
        if frame is not None:
            matrices[str(name)] = frame
    _check_sample_ids(report, cases, matrices, json_path)
    return report


def _check_declared_kinds(report: CheckReport, cases: dict, declared: dict, json_path: Path) -> None:
    """A key declared with a non-file kind is passed to the pipelines as a plain value: when its values are
    file names, the kind is a mistake (a typo of image / label) and the pipelines will not find the files."""
    from medgen.data.datalist import FILE_KINDS, _is_path_value

    for key, kind in declared.items():
        if kind in FILE_KINDS or kind == "value":  # "value": a plain value on purpose, even a path (provenance)
            continue
        looks = [c[key] for items in cases.values() for c in items if key in c and _is_path_value(key, c[key], {})]
        if looks:
            report.add("-", key, json_path, f"'keys' declares '{key}' as kind {kind!r}, not a file kind "
                                            f"({', '.join(FILE_KINDS)}), yet {len(looks)} case(s) give it a file "
                                            f"such as {str(looks[0])[:80]!r}: the pipelines would read it as a "
                                            "plain value, not as a file")


def _check_missing_image_keys(report: CheckReport, cases: dict, declared: dict, json_path: Path,
                              optional: set) -> None:
    """An image key that more than half of the cases have is expected in every case: a case without it is
    refused by any pipeline that reads the key (label keys may be partial: unlabelled cases are common).
    Keys the json lists under "optional_keys" (make-dataset --missing keep writes them) may be missing."""
    from medgen.data.datalist import _is_path_value, guess_kind

    every = [c for items in cases.values() for c in items]
    counts: dict[str, int] = {}
    for c in every:
        for k, v in c.items():
            if _is_path_value(k, v, declared) and declared.get(k, guess_kind(k)) == "image":
                counts[k] = counts.get(k, 0) + 1
    for key, n in counts.items():
        if n * 2 <= len(every) or n == len(every) or key in optional:
            continue
        for split, items in cases.items():
            for c in items:
                if key not in c:
                    present = ", ".join(x for x in c if x != "id") or "none"
                    report.add(c["id"], key, json_path, f"case '{c['id']}' ({split}) has no key '{key}', which "
                                                        f"{n} of the {len(every)} cases have; keys present: {present}")


def _check_sample_ids(report: CheckReport, cases: dict, matrices: dict, json_path: Path) -> None:
    """The ids a split lists for a matrix dataset (cases with no file of their own) must be rows of its
    matrix (tables.expression, as expression_vae requires: medgen.data.table_source), or else of at least one
    of its tables."""
    from medgen.data.table_source import DEFAULT_MATRIX_KEY

    if not matrices:
        return
    named = {DEFAULT_MATRIX_KEY: matrices[DEFAULT_MATRIX_KEY]} if DEFAULT_MATRIX_KEY in matrices else matrices
    rows = set().union(*(map(str, frame.index) for frame in named.values()))
    where = " or ".join(f"tables.{name}" for name in named)
    for split, items in cases.items():
        missing = [c["id"] for c in items if set(c) == {"id"} and c["id"] not in rows]
        if missing:
            report.add(missing[0], "id", json_path, f"{len(missing)} '{split}' sample id(s) are not rows of {where}, "
                                                    f"e.g. {', '.join(missing[:3])}")


def _is_normal(label: Any) -> bool:
    try:
        return label in (0, "0", "normal")
    except Exception:  # an odd type whose == raises
        return False


def _check_case(report, split, case, check_keys, declared, root, json_path, normal, label_values, expect_dims,
                pairs, affine_tol) -> None:
    """Every file of one case, then the pair checks on the case's grid (2D or 3D)."""
    from medgen.data.datalist import guess_kind
    from medgen.data.io import load_header
    from medgen.data.keynames import key_for_name

    cid = case["id"]
    entries = []  # (key, kind, path, row, header)
    for key in check_keys:
        value = case[key]
        kind = declared.get(key, guess_kind(key))
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not value:
            report.add(cid, key, json_path, "empty list of paths")
        for v in values:
            row: dict[str, Any] = {"split": split, "case": cid, "key": key, "kind": kind, "path": v}
            report.rows.append(row)
            n_before = len(report.problems)
            if not isinstance(v, str):
                report.add(cid, key, json_path, f"expected a path, got {v!r:.80}")
            elif kind in ("image", "label", "tabular"):
                try:
                    path = _resolve(v, root)
                except ValueError as err:
                    report.add(cid, key, json_path, str(err))
                    path = None
                if path is not None and not path.exists():
                    report.add(cid, key, path, "missing file")
                elif path is not None and kind == "tabular":
                    _guard(report, cid, key, path, lambda: _check_table(report, row, cid, key, path))
                elif path is not None:
                    try:
                        h = load_header(path)
                    except DataError as err:
                        report.add(cid, key, path, err.problem)
                    except Exception as err:  # never a traceback from check-data
                        report.add(cid, key, path, f"cannot read the header ({type(err).__name__}: {err})")
                    else:
                        row.update(shape=h.shape, spacing=tuple(round(s, 4) for s in h.spacing),
                                   orient="".join(h.axcodes), dtype=h.dtype)
                        entries.append((key, kind, path, row, h, isinstance(value, list)))
            row["status"] = "ok" if len(report.problems) == n_before else "PROBLEM"
    dims = expect_dims
    if dims is None:
        # a case holding a 2D file whose other files are B-scan layouts is read as oct_anogan does, unless a key
        # names a volume (t1, ct, pet ...: the 3D pipelines read those); anything else is read as 3D volumes
        bscans = (entries and any(e[4].spatial_dims == 2 for e in entries) and all(_is_bscan(e[4]) for e in entries)
                  and not any(key_for_name(e[0]) in VOLUME_KEYS for e in entries))
        dims = 2 if bscans else 3
    headers: dict[str, Any] = {}
    for key, kind, path, row, h, listed in entries:
        n_before = len(report.problems)
        usable = _guard(report, cid, key, path, lambda: _check_image(
            report, row, cid, key, kind, path, h, normal, label_values.get(key), dims))
        if usable and not listed:
            headers[key] = (h, path)
        if len(report.problems) != n_before:
            row["status"] = "PROBLEM"
    _check_pairs(report, cid, headers, pairs, affine_tol, dims)


def _guard(report: CheckReport, cid: str, key: str, path: Path, check) -> bool:
    """Run one file's check; a DataError or any unexpected error becomes a problem, never a traceback."""
    try:
        return check() is not False
    except DataError as err:
        report.add(cid, key, path, err.problem)
    except MemoryError:
        report.add(cid, key, path, "file too large to check in memory")
    except Exception as err:
        report.add(cid, key, path, f"could not be checked ({type(err).__name__}: {err})")
    return False


def _check_table_entry(report: CheckReport, name: str, rel: Any, root: Path):
    """Check one of the json's "tables"; -> the matrix when it loaded as one (label tables: None)."""
    row = {"split": "-", "case": "tables", "key": name, "kind": "tabular", "path": rel}
    report.rows.append(row)
    n_before = len(report.problems)
    frame = None
    if not isinstance(rel, str):
        report.add("tables", name, "-", f"expected a path, got {rel!r:.80}")
    else:
        try:
            path = _resolve(rel, root)
        except ValueError as err:
            report.add("tables", name, rel, str(err))
            path = None
        if path is not None and not path.exists():
            report.add("tables", name, path, "missing file")
        elif path is not None and "label" in name:  # label tables are categorical: they only need to load
            from medgen.data.tabular import read_table

            _guard(report, "tables", name, path, lambda: read_table(path))
        elif path is not None:
            got = []
            _guard(report, "tables", name, path, lambda: got.append(_check_table(report, row, "tables", name, path)))
            frame = got[0] if got else None
    row["status"] = "ok" if len(report.problems) == n_before else "PROBLEM"
    return frame


def _check_pairs(report: CheckReport, cid: str, headers: dict, pairs, tol: float, dims: int | None) -> None:
    if pairs is None or pairs == "none" or len(headers) < 2:
        return
    if pairs == "all":
        first = next(iter(headers))
        todo = [(first, k) for k in headers if k != first]
    else:
        todo = [(a, b) for a, b in pairs if a in headers and b in headers]
    for a, b in todo:
        (ha, _), (hb, pb) = headers[a], headers[b]
        ga, gb = _grid(ha, dims), _grid(hb, dims)
        if ga != gb:
            report.add(cid, b, pb, f"shape {gb} differs from '{a}' shape {ga}")
        elif dims != 2 and not np.allclose(ha.affine, hb.affine, atol=tol):
            # B-scans are compared by (H, W) only: oct_anogan pairs a scan and its mask by pixel grid
            diff = float(np.abs(ha.affine - hb.affine).max())
            report.add(cid, b, pb, f"affine differs from '{a}' (max difference {diff:.4g} > {tol:g}); "
                                   "images of a case must be co-registered on one grid")
        else:
            continue
        for row in report.rows:
            if row.get("case") == cid and row.get("key") == b:
                row["status"] = "PROBLEM"


def main(dataset: str | os.PathLike | Sequence[str | os.PathLike], keys: Iterable[str] | str | None = None,
         summary: bool = False, **kwargs) -> int:
    """Print the report for each dataset (a table per file, or one summary line per dataset); return 0
    when none has a problem, else 1."""
    datasets = [dataset] if isinstance(dataset, (str, os.PathLike)) else list(dataset)
    rc = 0
    for ds in datasets:
        report = check_dataset(ds, keys=parse_keys(keys), **kwargs)
        print(report.summary() if summary else report.format(), flush=True)
        rc |= 0 if report.ok else 1
    return rc
