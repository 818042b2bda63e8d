"""Edge fidelity of a synthesised image (Yu et al., IEEE TMI 2019, Ea-GANs): the Ea-GANs Sobel map
(`medgen.losses.sobel_edges`) of the estimate and of the target, compared inside the metric mask by the mean
absolute difference (`edge_l1`, lower is better) and the Pearson correlation (`edge_corr`, higher is better).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["edge_scores"]


def edge_scores(prediction: torch.Tensor, target: torch.Tensor, mask: np.ndarray | None = None) -> dict[str, float]:
    """{edge_l1, edge_corr} between the Ea-GANs Sobel maps of two normalised (1, *spatial) images."""
    from medgen.losses import sobel_edges

    with torch.no_grad():
        e_pred = sobel_edges(prediction.float().cpu()[None])[0, 0].numpy().astype(np.float64)
        e_true = sobel_edges(target.float().cpu()[None])[0, 0].numpy().astype(np.float64)
    if mask is not None:
        e_pred, e_true = e_pred[mask], e_true[mask]
    l1 = float(np.abs(e_pred - e_true).mean())
    a, b = e_pred - e_pred.mean(), e_true - e_true.mean()
    den = float(np.sqrt((a**2).sum() * (b**2).sum()))
    return {"edge_l1": l1, "edge_corr": float((a * b).sum() / den) if den > 0 else float("nan")}
