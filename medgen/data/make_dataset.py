"""`medgen make-dataset SRC OUT`: build OUT/dataset.json from the folder layouts researchers have.

The layout (nnU-Net raw, BIDS-like, subject folders, flat with name patterns, DICOM series, OCT
normal / abnormal) is detected or given; `medgen.data.layouts` turns it into found images, and this
module does the rest the same way for all of them, printing what it did at each step:

1. keys: which files matched which key and by what rule (`--key`, `--rename`, `--keys` adjust it);
   what was left over and why;
2. cases: a case lacking a key is an error naming it (`--missing skip` drops it, `--missing keep` keeps
   it without that key); a case with two files for one key is an error naming both;
3. split: seeded, grouped by subject, stratified by label (OCT normal / abnormal, or `--stratify COLUMN`
   from a participants table) with `medgen.data.splitting.split_cases`; an empty validation or test
   split is refused (or, with `--allow-empty-splits`, warned about loudly);
4. OUT/dataset.json, written atomically, never over an existing one without `--overwrite`, with paths
   relative to OUT where the images lie below it (absolute otherwise);
5. check-data on the result (one summary line, then any problem).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

from medgen.data.datalist import SPLITS, Datalist, case_id_problem, save_datalist
from medgen.data.layouts import LAYOUTS, SCANNERS, Found, Scan, detect_layout
from medgen.data.splitting import parse_fractions, split_cases
from medgen.errors import ConfigError, DataError

_KEY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_LISTED = 10


def parse_assignments(items: Sequence[str] | None, what: str) -> list[tuple[str, str]]:
    """['t1=*_t1.nii.gz', ...] -> [('t1', '*_t1.nii.gz'), ...]; ConfigError for a malformed item."""
    out = []
    for item in items or []:
        name, sep, value = str(item).partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ConfigError(f"{what} must be NAME=VALUE (e.g. t1='*_t1.nii.gz'), got {item!r}")
        out.append((name, value))
    return out


def _check_key_name(key: str, where: str) -> str:
    if not _KEY_NAME.match(key) or key == "id":
        raise ConfigError(f"{where}: {key!r} is not a usable key name (letters, digits and '_', not 'id')")
    return key


def _listing(items: Sequence[str], limit: int = _MAX_LISTED) -> str:
    items = list(items)
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def make_dataset(
    src: str | os.PathLike,
    out: str | os.PathLike,
    layout: str = "auto",
    patterns: dict[str, Sequence[str]] | None = None,
    keys: Sequence[str] | None = None,
    rename: dict[str, str] | None = None,
    split: Sequence[float] | str = (0.8, 0.1, 0.1),
    seed: int = 0,
    group: str | None = None,
    stratify: str | None = None,
    table: str | os.PathLike | None = None,
    missing: str = "error",
    allow_empty_splits: bool = False,
    overwrite: bool = False,
    name: str | None = None,
    check: bool = True,
    echo: Callable[[str], None] = print,
) -> dict:
    """Build OUT/dataset.json from the folder SRC (see the module docstring); returns
    {"path", "layout", "splits": {split: [case ids]}, "check": CheckReport or None}."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DataError(src, "source folder does not exist")
    if missing not in ("error", "skip", "keep"):
        raise ConfigError(f"--missing must be error, skip or keep, got {missing!r}")
    fractions = parse_fractions(split)
    patterns = {_check_key_name(k, "--key"): list(v) for k, v in (patterns or {}).items()}
    rename = {k: _check_key_name(v, "--rename") for k, v in (rename or {}).items()}
    json_path = out / "dataset.json"
    if layout == "auto":
        layout = detect_layout(src, patterns)
        how = "detected"
    elif layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; choose auto or one of {', '.join(LAYOUTS)}")
    else:
        how = "given"
    if layout == "nnunet" and json_path.resolve() == (src / "dataset.json").resolve():
        raise DataError(json_path, "is nnU-Net's own dataset.json, which make-dataset reads: choose another OUT")
    if json_path.exists() and not overwrite:
        raise DataError(json_path, "already exists; pass --overwrite to replace it")

    echo(f"make-dataset: {src} -> {json_path}")
    echo(f"layout: {layout} ({how})")
    scan = SCANNERS[layout](src, patterns or None)
    _apply_renames(scan, rename)
    _select_keys(scan, keys)
    kinds = {k: scan.kinds.get(k) or _kind_of(k) for k in _ordered_keys(f.key for f in scan.found)}
    if not kinds:
        raise DataError(src, f"no image was assigned to a key ({len(scan.leftovers)} left over: "
                             f"{_listing([p for p, _ in scan.leftovers], 3)})")
    _echo_keys(scan, kinds, echo)
    _echo_leftovers(scan, echo)
    for note in scan.notes:
        echo(f"note: {note}")

    cases, subjects, values, fixed = _assemble(scan, src)
    kept_without = _echo_and_resolve_missing(scan, cases, kinds, missing, echo)
    for cid in subjects:
        if group:
            subjects[cid] = _group_of(cid, group)
    strata, strat_desc = _strata(scan, cases, subjects, values, stratify, table, src)
    parts = _split(cases, subjects, strata, scan, fractions, seed, fixed)
    _echo_split(parts, subjects, strata, fractions, seed, strat_desc, fixed, echo, scan.metadata.get("labels", {}))
    _refuse_or_warn_empty(parts, fractions, len(set(subjects[c] for c in cases)), allow_empty_splits, echo)

    dims = scan.spatial_dims if layout == "oct" else _spatial_dims(scan)
    declared = dict(kinds)
    for cid in cases:
        for k in values.get(cid, {}):
            declared.setdefault(k, "value")
    metadata = {
        "name": name or src.resolve().name,
        "description": f"built by medgen make-dataset from {src.resolve()} ({layout} layout)",
        "source": str(src.resolve()),
        "layout": layout,
        **({"spatial_dims": dims} if dims else {}),
        **{k: v for k, v in scan.metadata.items() if k in ("label_values", "labels")},
        **({"optional_keys": kept_without} if kept_without else {}),  # check-data: these may be missing
        "split": {"fractions": list(fractions), "seed": seed, "grouped_by": "subject",
                  **({"stratified_by": strat_desc} if strat_desc else {})},
    }

    def entry(cid: str) -> dict:
        return {"id": cid, **values.get(cid, {}), **{k: str(p.resolve()) for k, p in cases[cid].items()}}

    dl = Datalist(root=out.resolve(), keys=declared, metadata=metadata,
                  **{s: [entry(c) for c in parts[s]] for s in SPLITS})
    if out.exists() and not out.is_dir():
        raise DataError(out, "is a file; OUT must be a folder (it is created when missing)")
    try:
        written = save_datalist(dl, json_path, overwrite=overwrite)
    except OSError as err:
        raise DataError(json_path, f"cannot write it ({err.strerror or err})") from err
    below = [_below(p, out) for c in cases.values() for p in c.values()]
    paths = ("relative to OUT" if all(below) else "absolute (the images lie outside OUT)" if not any(below)
             else "relative to OUT where the images lie below it, else absolute")
    echo(f"wrote {written} ({sum(len(v) for v in parts.values())} cases; paths {paths})")
    report = None
    if check:
        from medgen.data.check import check_dataset

        report = check_dataset(written)
        echo("check-data: " + report.summary())
        if not report.ok:
            echo(f"dataset.json is written, but fix these before training (full report: medgen check-data {out})")
    return {"path": written, "layout": layout, "splits": parts, "check": report}


# ----- steps ---------------------------------------------------------------------------------------------


def _ordered_keys(keys) -> list[str]:
    """Known keys in medgen's order (t1, t1c, t2, flair, ... mask, lesion), then the others by name."""
    from medgen.data.keynames import SYNONYMS

    order = {k: i for i, k in enumerate(["image", *SYNONYMS])}
    return sorted(set(keys), key=lambda k: (order.get(k, len(order)), k))


def _kind_of(key: str) -> str:
    from medgen.data.datalist import guess_kind

    return guess_kind(key)


def _apply_renames(scan: Scan, rename: dict[str, str]) -> None:
    if not rename:
        return
    present = {f.key for f in scan.found}
    unknown = sorted(set(rename) - present)
    if unknown:
        raise ConfigError(f"--rename names key(s) {', '.join(unknown)} that the layout did not produce; "
                          f"keys found: {', '.join(sorted(present))}")
    for f in scan.found:
        f.key = rename.get(f.key, f.key)
    scan.kinds = {rename.get(k, k): v for k, v in scan.kinds.items()}
    scan.optional = {rename.get(k, k) for k in scan.optional}
    lv = scan.metadata.get("label_values")
    if lv:
        scan.metadata["label_values"] = {rename.get(k, k): v for k, v in lv.items()}


def _select_keys(scan: Scan, keys: Sequence[str] | None) -> None:
    if not keys:
        return
    from medgen.data.check import parse_keys

    wanted = parse_keys(keys) or []
    present = {f.key for f in scan.found}
    absent = [k for k in wanted if k not in present]
    if absent:
        raise DataError(None, f"--keys asks for {', '.join(absent)}, but no image matched "
                              f"{'it' if len(absent) == 1 else 'them'}; keys found: {', '.join(sorted(present))}")
    kept = []
    for f in scan.found:
        if f.key in wanted:
            kept.append(f)
        else:
            scan.leftovers.append((str(f.path), f"key '{f.key}' not chosen by --keys"))
    scan.found = kept


def _echo_keys(scan: Scan, kinds: dict[str, str], echo) -> None:
    echo("keys (images matched per key, and the rule that matched them):")
    width = max(len(k) for k in kinds)
    for key, kind in kinds.items():
        items = [f for f in scan.found if f.key == key]
        rules = sorted({f.rule for f in items})
        echo(f"  {key.ljust(width)}  {kind:5s}  {len(items):4d}  {_listing(rules, 4)}")


def _echo_leftovers(scan: Scan, echo) -> None:
    if not scan.leftovers:
        echo("left over: none (every image found was used)")
        return
    echo(f"left over: {len(scan.leftovers)} image(s) not used:")
    groups: dict[tuple[str, str], list[str]] = {}  # many files of one folder for one reason: one line
    for path, why in scan.leftovers:
        groups.setdefault((path.rsplit("/", 1)[0] + "/" if "/" in path else "", why), []).append(path)
    lines = []
    for (folder, why), paths in groups.items():
        if len(paths) > 3 and folder:
            lines.append(f"  {folder} ({len(paths)} images: {_listing([p.rsplit('/', 1)[1] for p in paths], 2)})  ({why})")
        else:
            lines += [f"  {p}  ({why})" for p in paths]
    for line in lines[:_MAX_LISTED]:
        echo(line)
    if len(lines) > _MAX_LISTED:
        echo(f"  ... {len(lines) - _MAX_LISTED} more")


def _assemble(scan: Scan, src: Path):
    """-> (case -> {key: path}, case -> subject, case -> values, case -> fixed split)."""
    cases: dict[str, dict[str, Path]] = {}
    subjects: dict[str, str] = {}
    values: dict[str, dict] = {}
    fixed: dict[str, str] = {}
    doubles: dict[tuple[str, str], list[Found]] = {}
    bad_ids = []
    for f in scan.found:
        problem = case_id_problem(f.case)
        if problem:
            bad_ids.append(f"{f.path}: {problem}")
            continue
        case = cases.setdefault(f.case, {})
        if f.key in case:
            doubles.setdefault((f.case, f.key), [Found(f.case, f.key, case[f.key], "")]).append(f)
            continue
        case[f.key] = f.path
        subjects.setdefault(f.case, f.subject or f.case)
        values.setdefault(f.case, {}).update(f.values)
        if f.split:
            fixed[f.case] = f.split
    if bad_ids:
        raise DataError(src, f"{len(bad_ids)} image(s) would get an unusable case id: {_listing(bad_ids, 5)}")
    if doubles:
        (c0, k0), fs0 = sorted(doubles.items())[0]
        lines = [f"{c} / {k}: {', '.join(_short(x.path, src) for x in fs)}" for (c, k), fs in sorted(doubles.items())]
        more = f"; ... ({len(lines) - 3} more)" if len(lines) > 3 else ""
        example = re.sub(r"^(sub-[^_]+_)?(ses-[^_]+_)?", "", fs0[-1].path.name)  # the name without subject / session
        raise DataError(src, f"{len(doubles)} case(s) have several images for one key: {'; '.join(lines[:3])}{more}. "
                             f"Choose one per key with --key (e.g. --key {k0}='*{example}') or move the others away")
    return cases, subjects, values, fixed


def _short(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _echo_and_resolve_missing(scan: Scan, cases: dict, kinds: dict, missing: str, echo) -> list[str]:
    """Report the cases lacking a key and apply --missing; -> the keys some kept case lacks (--missing keep)."""
    required = [k for k in kinds if k not in scan.optional]
    lacking = {cid: [k for k in required if k not in c] for cid, c in sorted(cases.items())}
    lacking = {cid: ks for cid, ks in lacking.items() if ks}
    subjects_word = f"{len(cases)} case(s)"
    if not lacking:
        echo(f"cases: {subjects_word}, every one has {', '.join(required)}"
             + (f" ({', '.join(sorted(scan.optional & set(kinds)))} where present)" if scan.optional & set(kinds) else ""))
        return []
    lines = [f"{cid}: no {', '.join(ks)}" for cid, ks in lacking.items()]
    if missing == "error":
        raise DataError(None, f"{len(lacking)} of {len(cases)} case(s) lack a key: {_listing(lines, 10)}. "
                              "Pass --missing skip to leave them out, --missing keep to keep them without it, "
                              "or --keys to use only keys every case has")
    echo(f"cases: {subjects_word}; {len(lacking)} lack a key "
         f"({'left out' if missing == 'skip' else 'kept without it'}, --missing {missing}):")
    for line in lines[:_MAX_LISTED]:
        echo(f"  {line}")
    if len(lines) > _MAX_LISTED:
        echo(f"  ... {len(lines) - _MAX_LISTED} more")
    if missing == "skip":
        for cid in lacking:
            del cases[cid]
        if not cases:
            raise DataError(None, "no case has every key")
        return []
    return sorted({k for ks in lacking.values() for k in ks})


def _group_of(case: str, regex: str) -> str:
    try:
        m = re.search(regex, case)
    except re.error as err:
        raise ConfigError(f"--group {regex!r} is not a regular expression ({err})") from None
    if not m:
        return case
    return m.group(1) if m.groups() and m.group(1) else m.group(0)


def _strata(scan: Scan, cases, subjects, values, stratify, table, src: Path):
    """-> (case -> label, description) for a stratified split, or ({}, "")."""
    if not stratify:
        if scan.strata:
            return {c: s for c, s in scan.strata.items() if c in cases}, "label (normal / abnormal)"
        return {}, ""
    if all(stratify in values.get(c, {}) for c in cases):
        return {c: str(values[c][stratify]) for c in cases}, stratify
    table_path = Path(table) if table else src / "participants.tsv"
    if not table_path.is_file():
        raise DataError(table_path, f"--stratify {stratify}: no table to read it from (give --table FILE, "
                                    "a CSV / TSV with one row per subject)")
    column = _read_column(table_path, stratify)
    strata, absent = {}, []
    for cid in cases:
        value = _lookup(column, cid, subjects.get(cid, cid))
        if value is None:
            absent.append(cid)
        else:
            strata[cid] = value
            values.setdefault(cid, {})[stratify] = _typed(value)
    if absent:
        raise DataError(table_path, f"column '{stratify}' has no value for {len(absent)} case(s): {_listing(absent)}")
    return strata, f"{stratify} (from {table_path.name})"


def _read_column(path: Path, column: str) -> dict[str, str]:
    import pandas as pd

    try:
        df = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str, keep_default_na=False)
    except Exception as err:
        raise DataError(path, f"cannot read the table ({type(err).__name__}: {err})") from err
    if column not in df.columns:
        raise DataError(path, f"has no column '{column}'; columns: {', '.join(map(str, df.columns))}")
    id_col = next((c for c in ("participant_id", "subject", "subject_id", "id", "case", "case_id") if c in df.columns),
                  df.columns[0])
    return {str(i).strip(): str(v).strip() for i, v in zip(df[id_col], df[column]) if str(v).strip() not in ("", "n/a")}


def _lookup(column: dict[str, str], cid: str, subject: str) -> str | None:
    for name in (cid, subject, f"sub-{subject}", subject.removeprefix("sub-")):
        if name in column:
            return column[name]
    return None


def _typed(value: str):
    try:
        return int(value)
    except ValueError:
        return value


def _split(cases, subjects, strata, scan: Scan, fractions, seed, fixed) -> dict[str, list[str]]:
    free = [c for c in cases if c not in fixed]
    fr = fractions
    if any(s == "test" for s in fixed.values()):  # e.g. nnU-Net imagesTs: the rest is training / validation
        fr = (fractions[0], fractions[1], 0.0) if fractions[0] + fractions[1] > 0 else (1.0, 0.0, 0.0)
    parts = split_cases(free, fr, seed=seed, groups={c: subjects[c] for c in free},
                        strata={c: strata[c] for c in free if c in strata} or None,
                        stratum_fractions=scan.stratum_fractions or None) if free else {s: [] for s in SPLITS}
    for cid, s in fixed.items():
        if cid in cases:
            parts[s] = sorted(parts[s] + [cid])
    return parts


def _echo_split(parts, subjects, strata, fractions, seed, strat_desc, fixed, echo, names=None) -> None:
    n_subjects = len({subjects[c] for p in parts.values() for c in p})
    n_cases = sum(len(p) for p in parts.values())
    how = [f"seed {seed}", "fractions " + "/".join(f"{f:.2g}" for f in fractions),
           f"grouped by subject ({n_subjects} subject(s) for {n_cases} case(s))"]
    if strat_desc:
        how.append(f"stratified by {strat_desc}")
    if fixed:
        how.append(f"{len(fixed)} case(s) fixed by the layout (e.g. nnU-Net imagesTs -> test)")
    echo(f"split ({', '.join(how)}):")
    for s in SPLITS:
        ids = parts[s]
        per = ""
        if strata:
            counts: dict[str, int] = {}
            for c in ids:
                counts[strata.get(c, "?")] = counts.get(strata.get(c, "?"), 0) + 1
            per = " (" + ", ".join(f"{(names or {}).get(k, k)}: {v}" for k, v in sorted(counts.items())) + ")" if counts else ""
        echo(f"  {s:10s} {len(ids):4d}{per}  {_listing(ids)}")


def _refuse_or_warn_empty(parts, fractions, n_subjects: int, allow: bool, echo) -> None:
    empty = [s for s in SPLITS if not parts[s]]
    if not empty:
        return
    zero = [s for s in empty if fractions[SPLITS.index(s)] == 0]
    why = ([f"--split gives {' and '.join(zero)} 0"] if zero else []) + (
        [f"{n_subjects} subject(s) cannot fill every split"] if len(zero) < len(empty) else [])
    text = f"the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty ({'; '.join(why)})"
    if not allow:
        raise DataError(None, f"{text}. Training needs cases, validation picks the best checkpoint, test is what "
                              "you evaluate: add subjects or change --split, or pass --allow-empty-splits to write "
                              "it anyway")
    uses = {"training": "nothing to train on", "validation": "no validation (no best checkpoint, no threshold)",
            "test": "nothing to evaluate"}
    banner = f"WARNING: {text} (--allow-empty-splits): {'; '.join(uses[s] for s in empty)}"
    echo(banner)
    print(banner, file=sys.stderr, flush=True)  # loud: also on stderr, which survives `> log`


def _spatial_dims(scan: Scan) -> int | None:
    """2 or 3 from the first image's header (None when it cannot be read: check-data will say why)."""
    from medgen.data.io import load_header

    for f in scan.found:
        if scan.kinds.get(f.key, "image") in ("image", "label"):
            try:
                return 2 if load_header(f.path).spatial_dims == 2 else 3
            except DataError:
                return None
    return None


def _below(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False
