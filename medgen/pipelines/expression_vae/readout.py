"""Reading a trained model's latent features: each gene's decoder weight per latent feature, and the
high-weight genes of each feature (Way & Greene read their nodes' genes off the decoder weights)."""

from __future__ import annotations

import numpy as np
import torch


def decoder_weights(net, method: str) -> np.ndarray:
    """features x latent: the decoder weight of each feature for each latent feature as trained (ADAGE: the
    tied encoder weights). With hidden decoder layers, the product of the decoder's linear maps (ignoring
    the ReLU) is used, as an approximation."""
    if method == "adage":
        return net.encoder.weight.detach().float().cpu().numpy().T
    dec = net.decoder
    w = dec.out.weight.detach().float().cpu()
    for layer in reversed([m for m in dec.body if isinstance(m, torch.nn.Linear)]):
        w = w @ layer.weight.detach().float().cpu()
    return w.numpy()


def top_genes_table(weights, n: int = 50):
    """Long table (latent_feature, sign, rank, feature, weight): the n most positive and n most negative
    weights of each latent feature (Tybalt's high-weight genes per node)."""
    import pandas as pd

    rows = []
    w = weights.to_numpy()
    names = np.asarray(weights.index)
    n = min(n, w.shape[0])
    for j, col in enumerate(weights.columns):
        order = np.argsort(-w[:, j], kind="stable")
        for sign, idx in (("positive", order[:n]), ("negative", order[::-1][:n])):
            for rank, i in enumerate(idx, start=1):
                rows.append({"latent_feature": col, "sign": sign, "rank": rank, "feature": names[i], "weight": w[i, j]})
    return pd.DataFrame(rows)
