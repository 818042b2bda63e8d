"""Evaluating written anomaly-detection predictions: image-level and pooled pixel-level metrics and the
evaluation folder (metrics.json, roc.png, pr.png), for benchmarks that want them beside `medgen evaluate`.

What `medgen infer` writes for an anomaly detector (oct_anogan) and this module reads: the manifest's values
per case (score, the threshold chosen on the validation normals, the abnormal call) and one anomaly map per
case. Conventions (labels 1 = abnormal, "abnormal iff score > threshold") are those of
`medgen.metrics.anomaly` and docs/metrics.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medgen.errors import DataError, MedgenError
from medgen.files import atomic_write


def read_values(predictions, split: str = "all") -> list[dict]:
    """One row per predicted case of `split` from a predictions folder's manifest: id, split, every value
    output (score, threshold, abnormal), the case's plain fields (label), and the paths of its files by name."""
    path = Path(predictions) / "manifest.json"
    if not path.exists():
        raise MedgenError(f"{predictions}: no manifest.json (run `medgen infer` on the run first)")
    rows = []
    for cid, entry in json.loads(path.read_text())["cases"].items():
        if entry.get("status") != "ok" or (split != "all" and entry.get("split") != split):
            continue
        row = {"id": cid, "split": entry.get("split"), **(entry.get("fields") or {})}
        for f in entry.get("files", []):
            row[f["name"]] = f["value"] if "value" in f else f.get("path")
        rows.append(row)
    return rows


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
    """Anomaly metrics of written predictions (the manifest's scores and anomaly maps) against the dataset's
    labels and masks, with pooled pixel AUC: writes metrics.json, roc.png and pr.png (to `out`, default
    `<predictions>/../eval`) and returns the metrics. The benchmark's view; `medgen evaluate` reports the same
    image-level numbers through the pipeline's `evaluate_set`.

    Labels: the case's `label` (0 normal, 1 abnormal) in dataset.json, else whether its `mask` is non-empty.
    The threshold is the one chosen on the validation normals at inference.
    """
    from medgen.data.datalist import load_datalist
    from medgen.data.io import load_array, load_bscan
    from medgen.metrics.anomaly_figures import plot_roc_pr

    predictions = Path(predictions)
    rows = read_values(predictions, split)
    if not rows:
        raise MedgenError(f"{predictions}: no predictions of split '{split}'")
    threshold = next((r["threshold"] for r in rows if r.get("threshold") is not None), None)
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
    metrics.update({"threshold": threshold, "cases": used})
    out = Path(out) if out else predictions.parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    if metrics["n_normal"] and metrics["n_abnormal"]:
        metrics["plots"] = plot_roc_pr(np.array(scores), np.array(labels), out, overwrite)
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=1))
    return metrics
