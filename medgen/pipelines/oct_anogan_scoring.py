"""oct_anogan helpers that need no network: the retina-band detector, B-scan tiling and stitching, the
image-score aggregation, and the outputs users asked the reference code for (scores CSV, overlay PNGs,
ROC / PR plots, the anomaly evaluation).

Why a local tiler instead of `medgen.inference.windows.sliding_window`: anomaly scoring needs a *score per
patch* (to aggregate the image score from the top-k patches) and scores only the patches centred in the
retina band; the shared sliding window returns stitched maps only. The stitching here is the plain mean
over overlapping patches (constant blend), as the issue asks for the pixel residual map.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from medgen.errors import DataError, MedgenError
from medgen.files import atomic_write

# ----- retina band ---------------------------------------------------------------------------------------


def detect_depth_axis(image: np.ndarray, sigma: float = 2.0) -> int:
    """The depth (A-scan) axis of a B-scan: 0 for rows, 1 for columns.

    Retinal layers run along the lateral axis, so after light smoothing the intensity changes much more
    along depth than across it. Conventionally depth is the rows, but NIfTI B-scans are often stored
    transposed (the public data in ../shared/data is), hence the check.
    """
    from scipy import ndimage

    s = ndimage.gaussian_filter(np.asarray(image, np.float32), sigma)
    g0 = float(np.abs(np.diff(s, axis=0)).mean())
    g1 = float(np.abs(np.diff(s, axis=1)).mean())
    return 0 if g0 >= g1 else 1


def retina_band(image: np.ndarray, depth_axis: int | str = "auto", smooth: float = 0.012,
                closing: float = 0.03, min_component: float = 0.2) -> np.ndarray:
    """Boolean mask of the retina band (tissue between the vitreous and the fading choroid) of one B-scan.

    How (all sizes relative to the larger image side, so any resolution works):
    1. robust rescale (1st-99th percentile) and Gaussian smoothing (sigma `smooth`), which averages the
       speckle away;
    2. Otsu threshold: bright tissue (retina layers, RPE, upper choroid) vs the dark vitreous, the dark
       deep choroid / sclera and any black padding;
    3. morphological closing (disk of radius `closing`) bridges dark layers (ONL) and dark cysts, then
       connected components smaller than `min_component` of the largest are dropped (floaters, text);
    4. along every A-scan (the depth axis, detected by `detect_depth_axis` when "auto"), everything
       between the first and the last tissue pixel belongs to the band, so dark fluid inside the retina
       is always inside it.
    Used to draw training patches inside the retina and to score only retina patches at test time.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu
    from skimage.morphology import disk

    img = np.asarray(image, np.float32)
    if img.ndim != 2:
        raise MedgenError(f"retina_band expects a 2D B-scan, got shape {img.shape}")
    size = max(img.shape)
    lo, hi = np.percentile(img, [1.0, 99.0])
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    s = ndimage.gaussian_filter(img, max(smooth * size, 0.5))
    if float(s.max() - s.min()) < 1e-6:
        return np.ones(img.shape, bool)  # a constant image has no band: everything is a candidate
    fg = s > threshold_otsu(s)
    radius = max(1, int(round(closing * size)))
    pad = radius + 1
    fg = ndimage.binary_closing(np.pad(fg, pad), structure=disk(radius))[pad:-pad, pad:-pad]
    labels, n = ndimage.label(fg)
    if n > 1:
        sizes = ndimage.sum(fg, labels, index=np.arange(1, n + 1))
        keep = np.flatnonzero(sizes >= min_component * sizes.max()) + 1
        fg = np.isin(labels, keep)
    axis = detect_depth_axis(img) if depth_axis in ("auto", -1, None) else int(depth_axis)
    if axis not in (0, 1):
        raise MedgenError(f"depth_axis must be 'auto', 0 or 1, got {depth_axis!r}")
    d = np.moveaxis(fg, axis, 0)
    has = d.any(axis=0)
    first = np.argmax(d, axis=0)
    last = d.shape[0] - 1 - np.argmax(d[::-1], axis=0)
    rows = np.arange(d.shape[0])[:, None]
    band = (rows >= first[None]) & (rows <= last[None]) & has[None]
    band = np.moveaxis(band, 0, axis)
    if not band.any():
        return np.ones(img.shape, bool)
    return band


# ----- tiling ----------------------------------------------------------------------------------------------


def tile_starts(size: int, patch: int, stride: int) -> list[int]:
    """Start offsets covering [0, size) with windows of `patch` at most `stride` apart (last one flush)."""
    if size <= patch:
        return [0]
    starts = list(range(0, size - patch + 1, max(1, stride)))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def tile_image(image: np.ndarray, patch: Sequence[int], overlap: float):
    """(H, W) -> (patches (N, p0, p1), corners (N, 2), padded shape). Images smaller than a patch are
    mirror-padded at the bottom / right first (the stitched map is cropped back)."""
    p0, p1 = int(patch[0]), int(patch[1])
    h, w = image.shape
    ph, pw = max(0, p0 - h), max(0, p1 - w)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw)), mode="reflect" if min(h, w) > 1 else "edge")
    H, W = image.shape
    s0, s1 = max(1, int(round(p0 * (1 - overlap)))), max(1, int(round(p1 * (1 - overlap))))
    corners = np.array([(a, b) for a in tile_starts(H, p0, s0) for b in tile_starts(W, p1, s1)], dtype=np.int64)
    patches = np.stack([image[a:a + p0, b:b + p1] for a, b in corners])
    return patches, corners, (H, W)


def stitch_mean(values: np.ndarray, corners: np.ndarray, padded_shape, out_shape) -> np.ndarray:
    """Average per-patch maps (N, p0, p1) over their overlaps; pixels no patch covers get 0."""
    acc = np.zeros(padded_shape, np.float64)
    cnt = np.zeros(padded_shape, np.float64)
    p0, p1 = values.shape[1:]
    for v, (a, b) in zip(values, corners):
        acc[a:a + p0, b:b + p1] += v
        cnt[a:a + p0, b:b + p1] += 1
    out = np.where(cnt > 0, acc / np.maximum(cnt, 1), 0.0)
    return out[: out_shape[0], : out_shape[1]].astype(np.float32)


def aggregate_scores(patch_scores: np.ndarray, top_k_fraction: float) -> float:
    """Image score = mean of the k highest patch scores, k = max(1, ceil(fraction * n)).

    Why top-k: anomalies (a cyst, a few drusen) cover a small part of a B-scan, so the mean over all
    patches dilutes them, while the single maximum is at the mercy of one noisy patch.
    """
    s = np.sort(np.asarray(patch_scores, np.float64).ravel())[::-1]
    if s.size == 0:
        raise MedgenError("no patch scores to aggregate")
    k = max(1, int(math.ceil(top_k_fraction * s.size)))
    return float(s[:k].mean())


# ----- geometry of the source file ---------------------------------------------------------------------


def source_geometry(path, shape_2d: tuple[int, int]) -> dict:
    """How to write a (H, W) map back in the source's layout: NIfTI channel-last (H, W, C) -> (H, W),
    channel-first (C, H, W) -> (1, H, W), both with the source affine; PNG / TIFF -> (H, W), identity."""
    from medgen.data.io import NIFTI_SUFFIXES, image_suffix, load_header

    if image_suffix(path) not in NIFTI_SUFFIXES:
        return {"affine": np.eye(4), "shape": tuple(shape_2d), "nifti_source": False}
    h = load_header(path)
    shape = tuple(int(s) for s in h.shape)
    if len(shape) == 3 and shape[1:] == tuple(shape_2d) and shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4):
        out = (1, *shape_2d)
    else:
        out = tuple(shape_2d)
    return {"affine": np.asarray(h.affine, np.float64), "shape": out, "nifti_source": True}


# ----- writing -------------------------------------------------------------------------------------------


def save_figure(fig, path: Path, overwrite: bool, dpi: int = 80) -> Path:
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi), overwrite=overwrite)
    finally:
        plt.close(fig)


def overlay_figure(image: np.ndarray, amap: np.ndarray, title: str = "", vmax: float | None = None):
    """B-scan in grey with the anomaly map on top (transparent where it is low), plus the bare B-scan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vmax = vmax or float(np.percentile(amap, 99.5)) or 1.0
    h, w = image.shape
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.4 * h / max(w, 1) + 0.4))
    for ax in axes:
        ax.imshow(image, cmap="gray")
        ax.axis("off")
    alpha = np.clip(amap / vmax, 0, 1) * 0.8
    axes[1].imshow(amap, cmap="jet", vmin=0, vmax=vmax, alpha=alpha)
    axes[0].set_title("B-scan", fontsize=8)
    axes[1].set_title(title or "anomaly map", fontsize=8)
    fig.tight_layout()
    return fig


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
    if not Path(path).exists():
        raise MedgenError(f"{path}: no scores CSV (run `medgen infer` on the run first)")
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ----- evaluation ----------------------------------------------------------------------------------------


def plot_roc_pr(scores: np.ndarray, labels: np.ndarray, out_dir: Path, overwrite: bool, title: str = "") -> dict:
    """ROC and PR curves (scikit-learn) as PNGs; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    from medgen.metrics import pr_auc, roc_auc

    fpr, tpr, _ = roc_curve(labels, scores)
    prec, rec, _ = precision_recall_curve(labels, scores)
    paths = {}
    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    ax.plot(fpr, tpr, lw=1.5, label=f"AUC {roc_auc(scores, labels):.3f}")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC {title}".strip())
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    paths["roc"] = str(save_figure(fig, out_dir / "roc.png", overwrite))
    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    ax.step(rec, prec, where="post", lw=1.5, label=f"AP {pr_auc(scores, labels):.3f}")
    ax.axhline(float(np.mean(labels)), color="k", ls=":", lw=0.8, label="prevalence")
    ax.set(xlabel="recall", ylabel="precision", title=f"PR {title}".strip(), ylim=(0, 1.02))
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    paths["pr"] = str(save_figure(fig, out_dir / "pr.png", overwrite))
    return paths


def anomaly_metrics(scores, labels, threshold: float | None, maps=None, masks=None) -> dict:
    """Image-level ROC AUC (with its DeLong 95 % interval when each class has 2+ scans), PR AUC, sensitivity /
    specificity at `threshold`, pixel AUC where masks exist."""
    from medgen.metrics import pixel_auc, pr_auc, roc_auc, roc_auc_ci, sensitivity_specificity

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
    """Evaluate written oct_anogan predictions (scores.csv + anomaly maps) against the dataset's labels
    and masks: writes metrics.json, roc.png and pr.png and returns the metrics.

    Labels: the case's `label` (0 normal, 1 abnormal) in dataset.json, else whether its `mask` is non-empty.
    The threshold is the one chosen on the validation normals at inference (threshold.json).
    """
    from medgen.data.datalist import load_datalist
    from medgen.data.io import load_array, load_bscan

    predictions = Path(predictions)
    rows = [r for r in read_scores(predictions / "scores.csv") if split == "all" or r.get("split") == split]
    if not rows:
        raise MedgenError(f"{predictions}: no scores of split '{split}' in scores.csv")
    thr_info = json.loads((predictions / "threshold.json").read_text()) if (predictions / "threshold.json").exists() else {}
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
