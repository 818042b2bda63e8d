"""Per-case metric tables and their summary: ``per_case.csv`` + ``summary.json`` (the eval/ contract).

A row is one case: ``{"id": "case000", "psnr": 31.2, "dice": 0.8, ...}``. Columns are the union of the
rows' keys in first-seen order, id first. A column is summarised when all its values are numbers (None
or missing cells are skipped); non-finite values (NaN, inf: e.g. HD95 with an empty mask) are counted
and left out of the statistics, never silently averaged. ``std`` is the sample standard deviation
(ddof = 1), the usual "mean (std)" of papers over a sample of cases; it is None for fewer than two values.
Both files are written atomically (``medgen.files.atomic_write``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medgen.errors import MedgenError
from medgen.files import atomic_write

__all__ = ["summarise", "write_report", "format_table"]

STATS = ("mean", "ci_low", "ci_high", "std", "median", "min", "max", "n", "n_nonfinite")
STD_DDOF = 1
CI_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000
SMALL_SAMPLE = 10  # fewer cases than this: every summary says so


def bootstrap_ci(values, level: float = CI_LEVEL, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile bootstrap confidence interval of the mean over cases (resampled with replacement, seeded,
    so a report is reproducible). (None, None) for fewer than two values: one case has no spread to resample."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return None, None
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def _number(v: Any) -> float | None:
    """A float for numbers (numpy / 0-d torch included), None for anything else. Bools are not numbers."""
    if isinstance(v, bool) or isinstance(v, np.bool_):
        return None
    if isinstance(v, numbers.Real):
        return float(v)
    if hasattr(v, "item") and getattr(v, "ndim", None) == 0:  # 0-d numpy array or torch tensor
        try:
            return _number(v.item())
        except (TypeError, ValueError):
            return None
    return None


def _columns(rows: Sequence[Mapping[str, Any]], id_key: str | None) -> list[str]:
    cols: dict[str, None] = {}
    for row in rows:
        for k in row:
            if k != id_key:
                cols.setdefault(str(k), None)
    return list(cols)


def _check_rows(rows: Any) -> list[Mapping[str, Any]]:
    if isinstance(rows, Mapping) or not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)):
        raise MedgenError(f"rows must be a list of dicts (one per case), got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise MedgenError(f"rows[{i}] is a {type(row).__name__}, expected a dict of metric values")
    return list(rows)


def _stats(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    n = int(finite.size)
    out: dict[str, Any] = {"mean": None, "ci_low": None, "ci_high": None, "std": None, "median": None,
                           "min": None, "max": None}
    if n:
        out.update(
            mean=float(finite.mean()),
            median=float(np.median(finite)),
            min=float(finite.min()),
            max=float(finite.max()),
        )
        if n > STD_DDOF:
            out["std"] = float(finite.std(ddof=STD_DDOF))
        out["ci_low"], out["ci_high"] = bootstrap_ci(finite)
    out["n"] = n
    out["n_nonfinite"] = int(arr.size - n)
    out["small_sample"] = n < SMALL_SAMPLE
    return out


def summarise(rows: Sequence[Mapping[str, Any]], id_key: str = "id") -> dict[str, Any]:
    """Statistics of every numeric column.

    Returns ``{"n_cases": N, "std_ddof": 1, "ci": "...", "metrics": {column: {mean, ci_low, ci_high, std,
    median, min, max, n, n_nonfinite, small_sample}}, "skipped_columns": [...]}``. ``n`` counts the finite
    values used; ``n_nonfinite`` the NaN/inf values left out; ``ci_low``/``ci_high`` bound the mean (95 %
    percentile bootstrap over cases, seeded); ``small_sample`` is true below SMALL_SAMPLE cases. Stats are None
    where no value (or, for std and the interval, fewer than two) is left. Columns holding any non-numeric value
    (strings, bools) are listed in ``skipped_columns``.
    """
    rows = _check_rows(rows)
    metrics: dict[str, Any] = {}
    skipped: list[str] = []
    for col in _columns(rows, id_key):
        present = [row[col] for row in rows if col in row and row[col] is not None]
        nums = [_number(v) for v in present]
        if not present or any(x is None for x in nums):
            skipped.append(col)
            continue
        metrics[col] = _stats([x for x in nums if x is not None])
    return {"n_cases": len(rows), "std_ddof": STD_DDOF,
            "ci": f"{CI_LEVEL:.0%} percentile bootstrap of the mean over cases ({BOOTSTRAP_RESAMPLES} resamples)",
            "metrics": metrics, "skipped_columns": skipped}


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    x = _number(v)
    if x is not None:
        return repr(x)  # full precision; 'nan' / 'inf' are read back by pandas and float()
    return str(v)


def write_report(rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, id_key: str = "id") -> dict:
    """Write ``out_dir/per_case.csv`` (id column first, then metrics) and ``out_dir/summary.json``.

    Every row needs a unique ``id_key``. Missing cells are written empty; floats at full precision
    (``nan``/``inf`` spelled so). Returns the summary dict (see :func:`summarise`), which is also what
    summary.json holds (with JSON null for undefined stats).
    """
    rows = _check_rows(rows)
    seen: set[str] = set()
    for i, row in enumerate(rows):
        if id_key not in row or row[id_key] is None or str(row[id_key]) == "":
            raise MedgenError(f"rows[{i}] has no {id_key!r} value; every case row needs an id")
        cid = str(row[id_key])
        if cid in seen:
            raise MedgenError(f"duplicate case id {cid!r} in rows; each case must appear once")
        seen.add(cid)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MedgenError(f"cannot create report folder {out}: {exc}") from None

    cols = _columns(rows, id_key)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([id_key, *cols])
    for row in rows:
        writer.writerow([str(row[id_key]), *(_cell(row.get(c)) for c in cols)])
    summary = summarise(rows, id_key=id_key)
    atomic_write(out / "per_case.csv", buf.getvalue())
    atomic_write(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary


def _fmt(v: Any, floatfmt: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    x = _number(v)
    if x is None:
        return str(v)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return format(x, floatfmt)


def _markdown(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in body)])


def format_table(data: Sequence[Mapping[str, Any]] | Mapping[str, Any], floatfmt: str = ".4g",
                 id_key: str = "id") -> str:
    """A markdown table (readable as plain text) of per-case rows or of a summary.

    Rows: one line per case, columns id then metrics. Summary (the dict from :func:`summarise` /
    :func:`write_report`): one line per metric with mean, std, median, min, max, n, non-finite.
    Numbers use ``floatfmt`` (default 4 significant digits); undefined values print as ``-``.
    """
    if isinstance(data, Mapping):
        if "metrics" not in data or not isinstance(data["metrics"], Mapping):
            raise MedgenError("format_table expects a list of case rows or a summary dict with a 'metrics' key")
        header = ["metric", "mean", "95% CI low", "95% CI high", "std", "median", "min", "max", "n", "non-finite"]
        body = [
            [name, *(_fmt(st.get(k), floatfmt) for k in STATS)] for name, st in data["metrics"].items()
        ]
        return _markdown(header, body)
    rows = _check_rows(data)
    cols = _columns(rows, id_key)
    header = [id_key, *cols]
    body = [[_fmt(row.get(id_key), floatfmt), *(_fmt(row.get(c), floatfmt) for c in cols)] for row in rows]
    return _markdown(header, body)
