"""Pictures of anomaly detection results: a B-scan with its anomaly map on top, and ROC / PR curves.

Both use matplotlib's non-interactive Agg backend (no display needed); the curves come from scikit-learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medgen.files import atomic_write


def save_figure(fig, path: Path, overwrite: bool, dpi: int = 80) -> Path:
    """A figure as PNG at `path`, written atomically (and closed)."""
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi), overwrite=overwrite)
    finally:
        plt.close(fig)


def overlay_figure(image: np.ndarray, amap: np.ndarray, title: str = "", vmax: float | None = None):
    """B-scan in grey with the anomaly map on top (transparent where it is low), plus the bare B-scan.
    `image` in [0, 1]; the colour scale ends at `vmax` (default: the map's 99.5th percentile)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vmax = vmax or float(np.percentile(amap, 99.5)) or 1.0
    h, w = image.shape
    # As every medgen picture of a 2D image: shown as stored (rows down), like the training previews.
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.4 * h / max(w, 1) + 1.0), layout="constrained")
    for ax in axes:
        ax.imshow(image, cmap="gray")
        ax.axis("off")
    alpha = np.clip(amap / vmax, 0, 1) * 0.8
    shown = axes[1].imshow(amap, cmap="jet", vmin=0, vmax=vmax, alpha=alpha)
    axes[0].set_title("B-scan", fontsize=8)
    axes[1].set_title(title or "anomaly map", fontsize=8)
    # the bar shows the map's colours opaque: the overlay fades them where the residual is low
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=shown.norm, cmap=shown.cmap), ax=list(axes),
                       location="bottom", shrink=0.6, aspect=30, label="residual (normalised B-scan units)")
    bar.ax.tick_params(labelsize=7)
    return fig


def plot_roc_pr(scores: np.ndarray, labels: np.ndarray, out_dir: Path, overwrite: bool, title: str = "") -> dict:
    """ROC and PR curves (scikit-learn) as `roc.png` and `pr.png` in `out_dir`; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    from medgen.metrics.anomaly import pr_auc, roc_auc

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
