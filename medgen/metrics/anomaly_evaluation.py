"""Evaluating written anomaly-detection predictions: the per-case scores table (`scores.csv`), image-level
and pixel-level metrics, and the evaluation folder (metrics.json, roc.png, pr.png).

What `medgen infer` writes for an anomaly detector (oct_anogan) and this module reads: `scores.csv` (one row
per case: id, split, score, label, anomaly_map path ...), `threshold.json` (the threshold chosen on the
validation normals) and one anomaly map per case. Conventions (labels 1 = abnormal, "abnormal iff score >
threshold") are those of `medgen.metrics.anomaly` and docs/metrics.md.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from medgen.errors import DataError, MedgenError
from medgen.files import atomic_write


def upsert_csv_text(path: Path | None, row: dict, key: str = "id") -> str:
    """The CSV at `path` (None: a new one) with `row` inserted or replacing the row of the same `key`."""
    rows: list[dict] = []
    if path is not None and Path(path).exists():
        with open(path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get(key) != str(row[key])]
    rows.append({k: ("" if v is None else v) for k, v in row.items()})
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: str(r[key])))
    return buf.getvalue()


def read_scores(path: Path) -> list[dict]:
    """The rows of a scores CSV (a MedgenError naming it when it is missing)."""
    if not Path(path).exists():
        raise MedgenError(f"{path}: no scores CSV (run `medgen infer` on the run first)")
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def anomaly_metrics(scores, labels, threshold: float | None, maps=None, masks=None) -> dict:
    """Image-level ROC AUC (with its DeLong 95 % interval when each class has 2+ scans), PR AUC, sensitivity /
    specificity at `threshold`, pixel AUC where masks exist."""
    from medgen.metrics.anomaly import pixel_auc, pr_auc, roc_auc, roc_auc_ci, sensitivity_specificity

    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, np.int64)
    out = {"n_normal": int((labels == 0).sum()), "n_abnormal": int((labels == 1).sum())}
    if out["n_normal"] and out["n_abnormal"]:
        out["roc_auc"] = roc_auc(scores, labels)
        if min(out["n_normal"], out["n_abnormal"]) >= 2:
            ci = roc_auc_ci(scores, labels)
            out.update(roc_auc_se=ci["se"], roc_auc_ci_low=ci["low"], roc_auc_ci_high=ci["high"])
        out["pr_auc"] = pr_auc(scores, labels)
        if threshold is not None and np.isfinite(threshold):
            ss = sensitivity_specificity(scores, labels, threshold)
            out.update({k: ss[k] for k in ("sensitivity", "specificity", "tp", "fn", "tn", "fp")})
    if maps:
        try:
            out["pixel_auc"] = pixel_auc(list(maps), list(masks))
        except MedgenError:
            pass  # every mask empty (or full): no pixel AUC
    return out


def evaluate_anomaly(predictions, dataset=None, out=None, overwrite: bool = True, split: str = "test") -> dict:
    """Evaluate written anomaly predictions (scores.csv + anomaly maps) against the dataset's labels and
    masks: writes metrics.json, roc.png and pr.png (to `out`, default `<predictions>/../eval`) and returns the
    metrics.

    Labels: the case's `label` (0 normal, 1 abnormal) in dataset.json, else whether its `mask` is non-empty.
    The threshold is the one chosen on the validation normals at inference (threshold.json).
    """
    from medgen.data.datalist import load_datalist
    from medgen.data.io import load_array, load_bscan
    from medgen.metrics.anomaly_figures import plot_roc_pr

    predictions = Path(predictions)
    rows = [r for r in read_scores(predictions / "scores.csv") if split == "all" or r.get("split") == split]
    if not rows:
        raise MedgenError(f"{predictions}: no scores of split '{split}' in scores.csv")
    thr_path = predictions / "threshold.json"
    thr_info = json.loads(thr_path.read_text()) if thr_path.exists() else {}
    threshold = thr_info.get("threshold")
    cases = {}
    if dataset:
        dl = load_datalist(dataset)
        cases = {c["id"]: c for c in dl.all_cases}
    scores, labels, maps, masks, used = [], [], [], [], []
    for r in rows:
        case = cases.get(r["id"], {})
        label = case.get("label", r.get("label"))
        mask = None
        if case.get("mask"):
            mask = load_bscan(case["mask"]) > 0
        if label in (None, ""):
            if mask is None:
                continue
            label = int(mask.any())
        scores.append(float(r["score"]))
        labels.append(int(float(label)))
        used.append(r["id"])
        if mask is not None and r.get("anomaly_map"):
            amap = np.squeeze(load_array(r["anomaly_map"])[0])
            if amap.shape != mask.shape:
                raise DataError(r["anomaly_map"], f"anomaly map shape {amap.shape} differs from its mask {mask.shape}")
            maps.append(amap)
            masks.append(mask)
    if not scores:
        raise MedgenError(f"{predictions}: no case of split '{split}' has a label or a mask to evaluate against")
    metrics = anomaly_metrics(scores, labels, threshold, maps, masks)
    metrics.update({"threshold": threshold, "specificity_target": thr_info.get("specificity"), "cases": used})
    out = Path(out) if out else predictions.parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    if metrics["n_normal"] and metrics["n_abnormal"]:
        metrics["plots"] = plot_roc_pr(np.array(scores), np.array(labels), out, overwrite)
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=1))
    return metrics
