"""`medgen evaluate`: metrics of written predictions against dataset references, as per_case.csv,
summary.json and a report.md with tables and preview pictures.

The predictions folder's `manifest.json` (written by `medgen infer`) says, for every output file, which
dataset key it estimates, whether it is an image or a label map, the data range for PSNR / SSIM and the
mask key to evaluate inside.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medgen.errors import MedgenError
from medgen.files import atomic_write


def _load_array(path) -> tuple[np.ndarray, np.ndarray]:
    from medgen.data.io import load_image

    image = load_image(path, ensure_channel_first=False)
    return np.asarray(image, dtype=np.float32), np.asarray(image.affine)


def _pipeline_evaluator(name):
    """A pipeline's own `evaluate_predictions(predictions, references, out, split)` classmethod, if any."""
    if not name:
        return None
    from medgen.registry import PIPELINES

    return getattr(PIPELINES.get(name), "evaluate_predictions", None) if name in PIPELINES else None


def evaluate_predictions(predictions: Path, references: Path, out: Path | None = None, split: str = "test") -> dict:
    from medgen.data.datalist import load_datalist
    from medgen.engine.previews import save_montage
    from medgen.metrics import format_table, image_metrics, segmentation_metrics, write_report

    manifest_path = predictions / "manifest.json"
    if not manifest_path.exists():
        raise MedgenError(f"{predictions}: no manifest.json (write predictions with `medgen infer` first)")
    manifest = json.loads(manifest_path.read_text())
    own = _pipeline_evaluator(manifest.get("pipeline"))
    if own is not None:  # matrices, anomaly scores: the pipeline knows how to score its own outputs
        return own(predictions, references, out, split=split)
    datalist = load_datalist(references)
    cases = {c["id"]: c for s in ("training", "validation", "test") for c in getattr(datalist, s)}
    out = out or predictions.parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    rows, pictures = [], []
    for case_id, entry in manifest["cases"].items():
        if entry.get("status") != "ok" or (split != "all" and entry.get("split") != split):
            continue
        if case_id not in cases:
            raise MedgenError(f"{references}: case '{case_id}' of the predictions is not in dataset.json")
        ref_case = cases[case_id]
        for f in entry["files"]:
            key = f.get("reference_key")
            if not key or key not in ref_case:
                continue
            pred, affine = _load_array(f["path"])
            ref, ref_affine = _load_array(ref_case[key])
            if pred.shape != ref.shape or not np.allclose(affine, ref_affine, atol=1e-3):
                raise MedgenError(f"{f['path']}: geometry differs from the reference {ref_case[key]}")
            mask = None
            if f.get("mask_key") and f["mask_key"] in ref_case:
                mask = _load_array(ref_case[f["mask_key"]])[0] > 0
            row = {"id": case_id, "output": f["output"]}
            if f.get("kind") == "label":
                spacing = np.sqrt((ref_affine[:3, :3] ** 2).sum(0))
                row.update(segmentation_metrics(pred > 0.5, ref > 0.5, spacing=tuple(spacing)))
            else:
                inside = ref[mask] if mask is not None else ref  # the same range as validation uses
                data_range = f.get("data_range") or float(inside.max() - inside.min()) or 1.0
                row.update(image_metrics(pred, ref, data_range=data_range, mask=mask))
            rows.append(row)
            if len(pictures) < 4:
                pic = out / f"{case_id}_{f['output']}.png"
                save_montage({"prediction": pred, "reference": ref, "error": np.abs(pred - ref)}, pic, title=f"{case_id} {f['output']}")
                pictures.append(pic)
    if not rows:
        raise MedgenError(f"{predictions}: no predictions of split '{split}' with references to evaluate")
    # One report per output (a cascade writes one output per stage): eval/ for a single output,
    # eval/<output>/ for each of several.
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["output"], []).append(row)
    lines = [f"# Evaluation of {predictions}", "", f"References: {references} (split: {split}).", ""]
    summaries = {}
    for output, group in groups.items():
        folder = out if len(groups) == 1 else out / output
        summaries[output] = write_report(group, folder)
        lines += [f"## {output}: per case ({len(group)})", "", format_table(group), "",
                  f"## {output}: summary", "", format_table(summaries[output]), ""]
    lines += [f"![{p.stem}]({p.name})" for p in pictures]
    report = atomic_write(out / "report.md", "\n".join(lines) + "\n")
    final = list(groups)[-1]
    return {"summary": summaries[final], "summaries": summaries, "table": format_table(groups[final]),
            "report": str(report)}
