"""Scoring predictions: one path for validation, `medgen evaluate`, the demo and the benchmarks.

A case's outputs (`Pipeline.outputs`: results in the source's units and geometry) are scored by the
pipeline's own `evaluate_case(values, case)`, where `case` comes from the same loader training uses (so the
region is the mask the pipeline trains with, and the data range is the one the model saved). `medgen evaluate`
reads the values back from the files `medgen infer` wrote, so it gives the numbers validation gives.

Beside every score stand the pipeline's floors (`Pipeline.floors`: trivial predictions on the same cases and
region) and its baselines (`Pipeline.baselines`, fitted on the training split: `medgen.baselines.registry`);
a model that does not beat a floor on a metric is flagged, and each baseline gets a one-line verdict on the key
metric. Every mean carries its n and a bootstrap interval, and fewer than SMALL_SAMPLE cases is said out loud.

`evaluate_predictions` writes, per output (a cascade has one per stage): per_case.csv, summary.json (with
the floors' summaries, the set-level metrics of `evaluate_set`, the region, data range, units, checkpoint,
dataset and split), and one report.md with the comparison tables (and report.html, the same as one page with
the pictures in it: medgen.engine.report_html).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from medgen.errors import MedgenError
from medgen.files import atomic_write

MODEL = "model"


def score_case(pipeline, values: dict, case) -> dict[str, float]:
    """The pipeline's metrics of one case's output values (the one function every caller uses)."""
    return {k: float(v) for k, v in pipeline.evaluate_case(values, case).items()}


def floor_rows(pipeline, case) -> dict[str, dict]:
    """{floor name: metrics} of the pipeline's trivial predictions on this case."""
    return {name: score_case(pipeline, values, case) for name, values in pipeline.floors(case).items()}


def compare_to_floors(pipeline, model: dict, floors: dict[str, dict]) -> list[str]:
    """Warnings for every metric on which the model does not beat a floor. `model` / `floors`: summaries
    ({"metrics": {name: {"mean": ...}}, "set_metrics": {name: value}}). When the pipeline has set-level metrics
    (an AUC), those are compared, else the per-case means. Lower is better for losses and errors, and for the
    metrics the pipeline names in `lower_is_better`."""
    if model.get("set_metrics"):
        mine = {k: v for k, v in model["set_metrics"].items() if _comparable(k)}
        theirs = {name: f.get("set_metrics", {}) for name, f in floors.items()}
    else:
        mine = {k: (v or {}).get("mean") for k, v in model.get("metrics", {}).items()}
        theirs = {name: {k: (v or {}).get("mean") for k, v in f.get("metrics", {}).items()} for name, f in floors.items()}
    warnings = []
    declared = tuple(getattr(pipeline, "lower_is_better", ()))
    for metric, mean in mine.items():
        if mean is None or not math.isfinite(mean):
            continue
        better_low = metric in declared or _lower_is_better(metric)
        for floor, values in theirs.items():
            f = values.get(metric)
            if f is None or not math.isfinite(f):
                continue
            if (mean >= f) if better_low else (mean <= f):
                warnings.append(f"{metric}: the model ({mean:.4g}) does not beat the floor '{floor}' ({f:.4g})")
    return warnings


def _comparable(metric: str) -> bool:
    """Set-level numbers that rank methods (not counts, interval bounds or threshold-dependent rates)."""
    return not (metric.startswith("n_") or metric.endswith(("_ci_low", "_ci_high"))
                or metric in ("sensitivity", "specificity"))


def _lower_is_better(metric: str) -> bool:
    name = metric.lower()
    return any(w in name for w in ("mae", "mse", "nmse", "loss", "error", "hd95", "edge_l1", "bce", "kl", "bias"))


def baseline_verdicts(model: dict, baselines: dict[str, dict], key_metric: str, mode: str) -> dict[str, str]:
    """{baseline: one line} saying whether the model beats it on the key metric (set metric when there is one,
    else the mean over cases), with both numbers and whether their intervals overlap."""
    out = {}
    mine, m_lo, m_hi = _key_value(model, key_metric)
    for name, b in baselines.items():
        theirs, b_lo, b_hi = _key_value(b, key_metric)
        if mine is None or theirs is None:
            out[name] = f"{key_metric}: not comparable (missing on the model or the baseline)"
            continue
        better = mine > theirs if mode == "max" else mine < theirs
        overlap = None not in (m_lo, m_hi, b_lo, b_hi) and m_lo <= b_hi and b_lo <= m_hi
        out[name] = (f"{key_metric} {mine:.4g} vs {theirs:.4g}: the model "
                     f"{'beats' if better else 'does not beat'} {name}"
                     + (" (the 95 % intervals overlap)" if overlap else ""))
    return out


def _key_value(summary: dict, metric: str):
    if metric in (summary.get("set_metrics") or {}):
        v = summary["set_metrics"][metric]
        return v, summary["set_metrics"].get(f"{metric}_ci_low"), summary["set_metrics"].get(f"{metric}_ci_high")
    st = (summary.get("metrics") or {}).get(metric) or {}
    v = st.get("mean")
    return (v if v is not None and math.isfinite(v) else None), st.get("ci_low"), st.get("ci_high")


def evaluate_predictions(predictions: Path, references=None, out: Path | None = None, split: str | None = None,
                         device: str = "cpu", baselines=None, where: dict | None = None,
                         progress: bool | None = None) -> dict:
    """Score the predictions `medgen infer` wrote in `predictions` against their dataset (the one the
    manifest records, unless `references` names another) for the split the manifest records (or `split`).
    `baselines`: names of the pipeline's baselines to fit and score beside it (None: all it declares).
    `where`: {field: value} keeps only the cases whose dataset.json fields match (e.g. {"domain": "B"})."""
    from medgen.baselines.registry import fit_baselines
    from medgen.data.cases import CaseError
    from medgen.engine.commands import load_stages
    from medgen.engine.logging import progress_bar
    from medgen.engine.outputs import read_case_outputs
    from medgen.engine.previews import save_montage

    predictions = Path(predictions)
    manifest_path = predictions / "manifest.json"
    if not manifest_path.exists():
        raise MedgenError(f"{predictions}: no manifest.json (write predictions with `medgen infer` first)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("units", "physical") != "physical":
        raise MedgenError(f"{predictions}: the predictions are in {manifest['units']} units (medgen infer --units "
                          f"{manifest['units']}); references are in physical units: predict again without --units")
    checkpoints = [c.get("path") for c in manifest.get("checkpoints", [])]
    if not checkpoints or not all(checkpoints):
        raise MedgenError(f"{manifest_path}: it does not record the checkpoints that made the predictions "
                          "(written by an older medgen): predict again with `medgen infer`")
    cls, cfg, stages = load_stages(checkpoints, device, dataset=references or manifest.get("dataset"))
    wanted = {e.get("split") for e in manifest["cases"].values() if e.get("status") == "ok"}
    splits = sorted(wanted) if split in (None, "all") else [split]
    out = Path(out) if out else predictions.parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[str, dict] = {}  # output label -> {"stage", "rows", "floors": {name: rows}}
    pictures, failed = [], []
    source = stages[0].data
    # baselines predict from the inputs alone, so the first stage (no earlier estimate to compute) fits them
    fitted = fit_baselines(stages[0], baselines)
    baseline_rows: dict[str, list] = {name: [] for name in fitted}
    for split_name in splits:
        ids = [cid for cid, e in manifest["cases"].items() if e.get("status") == "ok" and e.get("split") == split_name
               and all(str((e.get("fields") or {}).get(k)) == str(v) for k, v in (where or {}).items())]
        bar = progress_bar(len(ids), f"evaluate {split_name}", progress)
        for case in source.iter(split_name, skip=set(source.ids(split_name)) - set(ids)):
            bar.update(1)
            if isinstance(case, CaseError):
                failed.append(f"{case.id}: {case.error}")
                continue
            entries = manifest["cases"][case.id]["files"]
            for k, stage in enumerate(stages, start=1):
                mine = [e for e in entries if e.get("stage", 1) == k]
                values = read_case_outputs(mine)
                metrics = score_case(stage, values, case)
                if not metrics:
                    continue
                label = next((e["output"] for e in mine if e.get("name") == stage.output_name), f"stage{k}")
                group = groups.setdefault(label, {"stage": stage, "rows": [], "floors": {}, "units": next(
                    (e.get("units") for e in mine if e.get("output") == label), "")})
                group["rows"].append({"id": case.id, **metrics})
                for name, row in floor_rows(stage, case).items():
                    group["floors"].setdefault(name, []).append({"id": case.id, **row})
                if len(pictures) < 3 and stage.output_name in values:
                    pictures.append(_picture(save_montage, stage, values, case, out, label))
            for name, baseline in fitted.items():
                baseline_rows[name].append({"id": case.id, **score_case(stages[0], baseline.values(case), case)})
        bar.close()
    if not groups:
        splits_said = f"{splits}" + (f" with {where}" if where else "")
        raise MedgenError(f"{predictions}: no predictions of split(s) {splits_said} with references to evaluate "
                          f"({len(failed)} case(s) could not be read)" if failed else
                          f"{predictions}: no predictions of split(s) {splits_said} with references to evaluate")
    final = groups[list(groups)[-1]]
    final["baselines"] = {name: {"rows": rows, "description": fitted[name].describe()}
                          for name, rows in baseline_rows.items()}
    result = _write(groups, out, provenance={
        "predictions": str(predictions), "pipeline": cls.name, "splits": splits, "where": dict(where or {}),
        "dataset": str(source.ref.path), "dataset_sha256": source.ref.sha256,
        "checkpoints": manifest.get("checkpoints", []), "unreadable_cases": failed}, pictures=pictures)
    return result


def _picture(save_montage, stage, values, case, out: Path, label: str) -> Path | None:
    ref = stage.reference(case) if hasattr(stage, "reference") else None
    if ref is None:
        return None
    pred = np.asarray(values[stage.output_name], dtype=np.float32)[0]
    path = out / f"{case.id}_{label}.png"
    save_montage({"prediction": pred, "reference": ref, "abs error": np.abs(pred - ref)}, path,
                 title=f"{case.id} {label}")
    return path


def _write(groups: dict, out: Path, provenance: dict, pictures=()) -> dict:
    """per_case.csv + summary.json per output (eval/ for one, eval/<output>/ for several) and one report.md."""
    from medgen.engine.report_html import write_report_html
    from medgen.metrics import format_table, write_report
    from medgen.metrics.tables import SMALL_SAMPLE

    lines = [f"# Evaluation: {provenance['pipeline']}", "",
             f"- predictions: `{provenance['predictions']}`",
             f"- dataset: `{provenance['dataset']}` (dataset.json SHA-256 {provenance['dataset_sha256'][:12]}), "
             f"split(s): {', '.join(provenance['splits'])}",
             *[f"- checkpoint (stage {c.get('stage')}): `{c.get('path')}` (SHA-256 {str(c.get('sha256'))[:12]})"
               for c in provenance["checkpoints"]], ""]
    summaries, warnings_all = {}, []
    for label, group in groups.items():
        stage, rows = group["stage"], group["rows"]
        folder = out if len(groups) == 1 else out / label
        summary = write_report(rows, folder)
        summary["set_metrics"] = stage.evaluate_set(rows)
        summary["floors"] = {name: dict(_summary_of(r), set_metrics=stage.evaluate_set(r))
                             for name, r in group["floors"].items()}
        summary["baselines"] = {name: dict(_summary_of(b["rows"]), set_metrics=stage.evaluate_set(b["rows"]),
                                           description=b["description"])
                                for name, b in group.get("baselines", {}).items()}
        summary["verdicts"] = baseline_verdicts(summary, summary["baselines"], stage.key_metric,
                                                stage.key_metric_mode)
        summary["evaluation"] = stage.describe_evaluation()
        summary.update({k: v for k, v in provenance.items() if k != "predictions"}, output=label,
                       units=group.get("units") or "")
        warnings = compare_to_floors(stage, summary, summary["floors"])
        n = summary["n_cases"]
        if n < SMALL_SAMPLE:
            warnings.append(f"only {n} case(s): a small sample; read the means and intervals with care")
        summary["warnings"] = warnings
        atomic_write(folder / "summary.json", json.dumps(_plain(summary), indent=2, allow_nan=False) + "\n")
        summaries[label] = summary
        warnings_all += [f"{label}: {w}" for w in warnings]
        lines += [f"## {label}", "", _describe(summary["evaluation"]), "",
                  f"Units of the outputs and references: {summary['units'] or 'as written'} (physical).", "",
                  comparison_table(summary, key_metric=stage.key_metric), ""]
        lines += [f"- {name}: {b['description']}" for name, b in summary["baselines"].items()]
        lines += [f"- verdict: {v}" for v in summary["verdicts"].values()] + [""]
        if warnings:
            lines += ["**WARNING**", "", *[f"- {w}" for w in warnings], ""]
        lines += [f"Per case ({n}):", "", format_table(rows), ""]
    lines += [f"![{p.stem}]({p.name})" for p in pictures if p is not None]
    report = atomic_write(out / "report.md", "\n".join(lines) + "\n")
    write_report_html("\n".join(lines) + "\n", out, title=f"medgen evaluation: {provenance['pipeline']}")
    final = list(groups)[-1]
    return {"summary": summaries[final], "summaries": summaries, "warnings": warnings_all,
            "table": comparison_table(summaries[final], key_metric=groups[final]["stage"].key_metric),
            "report": str(report)}


def _plain(value):
    """JSON-safe: NaN / infinity as null (strict JSON has neither), numpy numbers as Python ones."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def _summary_of(rows: list[dict]) -> dict:
    from medgen.metrics import summarise

    return summarise(rows)


def _describe(evaluation: dict) -> str:
    if not evaluation:
        return ""
    parts = [f"{k.replace('_', ' ')}: {v:.6g}" if isinstance(v, float) else f"{k.replace('_', ' ')}: {v}"
             for k, v in evaluation.items()]
    return "Scored: " + "; ".join(parts) + "."


def comparison_table(summary: dict, key_metric: str | None = None, metrics=None) -> str:
    """One row per method (the model, each baseline, then each floor): mean [95 % interval] of each metric, n,
    and the set-level metrics (e.g. an AUC with its interval)."""
    methods = {MODEL: summary, **{f"baseline: {k}": v for k, v in summary.get("baselines", {}).items()},
               **{f"floor: {k}": v for k, v in summary.get("floors", {}).items()}}
    return methods_table(methods, key_metric, metrics)


def methods_table(methods: dict[str, dict], key_metric: str | None = None, metrics=None) -> str:
    """{method: summary} as one markdown table (the first method's metrics are the columns)."""
    from medgen.metrics.tables import _markdown

    first = next(iter(methods.values()), {})
    names = [m for m in (metrics or first.get("metrics", {})) if m in first.get("metrics", {})]
    if key_metric in names:
        names.remove(key_metric)
        names.insert(0, key_metric)
    set_names = [m for m in (metrics or first.get("set_metrics", {})) if m in first.get("set_metrics", {})]
    body = []
    for method, s in methods.items():
        cells = [method]
        for m in names:
            st = s.get("metrics", {}).get(m) or {}
            cells.append(_mean_ci(st.get("mean"), st.get("ci_low"), st.get("ci_high")))
        for m in set_names:
            v = s.get("set_metrics", {}).get(m)
            cells.append("-" if v is None else f"{v:.4g}")
        cells.append(str(s.get("n_cases", "")))
        body.append(cells)
    return _markdown(["method", *names, *set_names, "n"], body)


def _mean_ci(mean, lo, hi) -> str:
    if mean is None or not math.isfinite(mean):
        return "-"
    if lo is None or hi is None:
        return f"{mean:.4g}"
    return f"{mean:.4g} [{lo:.4g}, {hi:.4g}]"
