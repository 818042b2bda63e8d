"""`medgen check-data`: inspect a dataset before training and list every problem at once.

Per case and key: the file exists and loads (header and voxels), shape, spacing, orientation code,
dtype, intensity range (min, max, p1, p99) and NaN/Inf count; images within a case share shape and
affine; label maps are integer-valued and non-empty, and masks (mask, brain_mask, lesion, *_mask)
are binary; tabular keys load as numeric matrices without NaN. Unlike `load_datalist`, which stops at
the first error, this collects all problems so a user fixes a dataset in one pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from medgen.errors import DataError

_BINARY_NAMES = ("mask", "brain_mask", "head_mask", "lesion", "lesion_mask")


def is_binary_mask_key(key: str) -> bool:
    k = key.lower()
    return k in _BINARY_NAMES or k.endswith("_mask")


@dataclass
class CheckReport:
    """Rows (one per case x key) and problems (case, key, path, message)."""

    dataset: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[tuple[str, str, str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, case: str, key: str, path: Any, message: str) -> None:
        self.problems.append((str(case), str(key), str(path), message))

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
            for case, key, path, msg in self.problems:
                lines.append(f"  - case {case}, key {key}: {msg} [{path}]")
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, tuple):
        return "x".join(_fmt(x) if isinstance(x, float) else str(x) for x in v)
    return str(v)


def _read_voxels(path: Path) -> np.ndarray:
    from medgen.data.io import NIFTI_SUFFIXES, image_suffix, load_array

    if image_suffix(path) in NIFTI_SUFFIXES:
        import nibabel as nib

        try:
            return np.asanyarray(nib.load(str(path)).dataobj)
        except Exception as err:
            raise DataError(path, f"cannot read the image data, the file may be truncated or corrupt "
                                  f"({type(err).__name__}: {err})") from err
    return load_array(path, allow_nonfinite=True)[0]


def _check_image(report: CheckReport, row: dict, case: str, key: str, kind: str, path: Path, allow_empty: bool,
                 allowed_values, expect_dims: int | None):
    """Fill `row`; return the header (for pair checks) or None when the file is unusable."""
    from medgen.data.io import load_header

    try:
        h = load_header(path)
    except DataError as err:
        report.add(case, key, path, err.problem)
        return None
    row.update(shape=h.shape, spacing=tuple(round(s, 4) for s in h.spacing), orient="".join(h.axcodes), dtype=h.dtype)
    if any(s == 0 for s in h.shape):
        report.add(case, key, path, f"zero-size axis, shape {h.shape}")
        return None
    if expect_dims is not None and h.spatial_dims != expect_dims:
        report.add(case, key, path, f"expected a {expect_dims}D image, got {h.spatial_dims}D shape {h.shape}")
    try:
        a = _read_voxels(path)
    except DataError as err:
        report.add(case, key, path, err.problem)
        return None
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
    return h


def _check_table(report: CheckReport, row: dict, case: str, key: str, path: Path) -> None:
    from medgen.data.tabular import load_matrix

    try:
        df = load_matrix(path)
    except DataError as err:
        report.add(case, key, path, err.problem)
        return
    x = df.to_numpy()
    row.update(shape=tuple(df.shape), dtype=str(x.dtype), min=float(x.min()), max=float(x.max()),
               p1=float(np.percentile(x, 1)), p99=float(np.percentile(x, 99)), nonfinite=0)


def check_dataset(dataset_dir: str | os.PathLike, keys: Iterable[str] | None = None,
                  pairs: str | Sequence[tuple[str, str]] | None = "all", affine_tol: float = 1e-3,
                  expect_dims: int | None = None,
                  splits: Sequence[str] = ("training", "validation", "test")) -> CheckReport:
    """Check every case of a dataset folder (or dataset.json) and collect all problems.

    keys: the keys to check (each must be in every case); None checks every file key.
    pairs: "all" compares each image/label of a case with its first one (shape and affine within
    `affine_tol` mm); a list of (key, key) pairs compares those; None skips. expect_dims defaults to
    the json's "spatial_dims" when present.
    """
    from medgen.data.datalist import _is_path_value, guess_kind, normalise_cases, read_dataset_json, resolve_path

    report = CheckReport(str(dataset_dir))
    try:
        data, root, json_path = read_dataset_json(dataset_dir)
        cases = normalise_cases(data, json_path, splits)
    except DataError as err:
        report.add("-", "-", err.path, err.problem)
        return report
    report.dataset = str(json_path)
    declared = {str(k): str(v) for k, v in data.get("keys", {}).items()}
    # Optional "label_values": {"seg": [0, 1, 2, 4]}: the values a label map may hold.
    label_values = {str(k): [float(x) for x in v] for k, v in (data.get("label_values") or {}).items()}
    if expect_dims is None and isinstance(data.get("spatial_dims"), int):
        expect_dims = int(data["spatial_dims"])
    wanted = list(keys) if keys is not None else None
    if not any(cases.values()) and not data.get("tables"):
        report.add("-", "-", json_path, f"no cases in the splits {', '.join(splits)}")
    for split, items in cases.items():
        for case in items:
            cid = case["id"]
            # A case declared normal ("label": 0, as in anomaly-detection test sets) may have empty masks.
            normal = case.get("label") in (0, "0", "normal")
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
            headers: dict[str, Any] = {}
            for key in check_keys:
                value = case[key]
                kind = declared.get(key, guess_kind(key))
                values = value if isinstance(value, list) else [value]
                for v in values:
                    row: dict[str, Any] = {"split": split, "case": cid, "key": key, "kind": kind, "path": v}
                    report.rows.append(row)
                    n_before = len(report.problems)
                    if not isinstance(v, str):
                        report.add(cid, key, json_path, f"expected a path, got {v!r}")
                    else:
                        path = resolve_path(v, root)
                        if not path.exists():
                            report.add(cid, key, path, "missing file")
                        elif kind == "tabular":
                            _check_table(report, row, cid, key, path)
                        elif kind in ("image", "label"):
                            h = _check_image(report, row, cid, key, kind, path, normal,
                                             label_values.get(key), expect_dims)
                            if h is not None and not isinstance(value, list):
                                headers[key] = (h, path)
                    row["status"] = "ok" if len(report.problems) == n_before else "PROBLEM"
            _check_pairs(report, cid, headers, pairs, affine_tol)
    for name, rel in (data.get("tables") or {}).items():  # tabular datasets list their files under "tables"
        path = resolve_path(rel, root)
        row = {"split": "-", "case": "tables", "key": name, "kind": "tabular", "path": rel}
        report.rows.append(row)
        n_before = len(report.problems)
        if not path.exists():
            report.add("tables", name, path, "missing file")
        elif "label" in name:  # label tables are categorical: they only need to load
            from medgen.data.tabular import read_table

            try:
                read_table(path)
            except DataError as err:
                report.add("tables", name, path, err.problem)
        else:
            _check_table(report, row, "tables", name, path)
        row["status"] = "ok" if len(report.problems) == n_before else "PROBLEM"
    return report


def _check_pairs(report: CheckReport, cid: str, headers: dict, pairs, tol: float) -> None:
    if pairs is None or pairs == "none" or len(headers) < 2:
        return
    if pairs == "all":
        first = next(iter(headers))
        todo = [(first, k) for k in headers if k != first]
    else:
        todo = [(a, b) for a, b in pairs if a in headers and b in headers]
    for a, b in todo:
        (ha, _), (hb, pb) = headers[a], headers[b]
        if tuple(ha.spatial_shape) != tuple(hb.spatial_shape):
            report.add(cid, b, pb, f"shape {tuple(hb.spatial_shape)} differs from '{a}' shape {tuple(ha.spatial_shape)}")
        elif not np.allclose(ha.affine, hb.affine, atol=tol):
            diff = float(np.abs(ha.affine - hb.affine).max())
            report.add(cid, b, pb, f"affine differs from '{a}' (max difference {diff:.4g} > {tol:g}); "
                                   "images of a case must be co-registered on one grid")
        for row in report.rows:
            if row.get("case") == cid and row.get("key") == b and any(p[0] == cid and p[1] == b for p in report.problems):
                row["status"] = "PROBLEM"


def main(dataset: str | os.PathLike, keys: Iterable[str] | str | None = None, **kwargs) -> int:
    """Print the report for `dataset`; return 0 when it has no problems, else 1."""
    if isinstance(keys, str):
        keys = [k.strip() for k in keys.split(",") if k.strip()]
    report = check_dataset(dataset, keys=keys, **kwargs)
    print(report.format())
    return 0 if report.ok else 1
