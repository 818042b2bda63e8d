"""A t-SNE figure of a latent space (one panel per label), for expression_vae's outputs and evaluation: the
paper's latent-separation figure as one command."""

from __future__ import annotations

import numpy as np

from medgen.errors import MedgenError


def plot_tsne(z: np.ndarray, labels, path, seed: int = 0, perplexity: float = 30.0, title: str = "") -> None:
    """2D t-SNE (scikit-learn, PCA init, seeded) of the rows of z, one panel coloured by each label column."""
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    n = z.shape[0]
    z = np.asarray(z, dtype=np.float64)
    if not np.isfinite(z).all() or float(np.ptp(z, axis=0).max(initial=0.0)) <= 0.0:
        # scikit-learn's Barnes-Hut t-SNE of identical points divides by a zero spread and can crash the
        # process (seen: a segmentation fault on a constant matrix); there is nothing to embed anyway.
        raise MedgenError(f"no t-SNE: the {n} latent vectors are identical or not finite")
    perp = float(min(perplexity, max(2.0, (n - 1) / 3.0)))
    emb = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(z)
    columns = list(labels.columns) if labels is not None and len(labels.columns) else [None]
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 4.0), squeeze=False)
    for ax, col in zip(axes[0], columns):
        if col is None:
            ax.scatter(emb[:, 0], emb[:, 1], s=4, c="0.3")
        else:
            values = np.array(["" if pd.isna(v) else str(v) for v in labels[col].to_numpy(dtype=object)])
            values = np.where(values == "", "missing", values)
            levels = sorted(set(values), key=lambda v: (-int((values == v).sum()), v))[:10]
            cmap = plt.get_cmap("tab10")
            for k, lev in enumerate(levels):
                sel = values == lev
                ax.scatter(emb[sel, 0], emb[sel, 1], s=4, color=cmap(k), label=f"{lev} ({int(sel.sum())})")
            rest = ~np.isin(values, levels)
            if rest.any():
                ax.scatter(emb[rest, 0], emb[rest, 1], s=4, c="0.7", label=f"other ({int(rest.sum())})")
            ax.legend(fontsize=6, markerscale=2, loc="best")
            ax.set_title(str(col), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80, format="png")
    plt.close(fig)
