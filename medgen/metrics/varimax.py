"""Varimax rotation of a trained latent space (Kaiser 1958), for reading latent features one at a time.

Why: Tybalt's prior N(0, I) is unchanged by any rotation of the latent space, so where the data give two
directions of similar variance, which pair of axes the VAE settles on is arbitrary, and a programme is spread
over several latent features. The decoder is linear in z (its first layer is), so rotating z by an orthogonal
R and the decoder weights W by the same R is an exact reparametrisation: W z = (W R)(R^T z). Varimax picks
the R that makes each feature's gene weights as sparse as possible (maximum variance of squared weights per
column), as factor analysis has done for its own rotation ambiguity. It uses only the trained decoder weights,
never labels or known programmes. Used by expression_vae's readout (`model.latent_rotation`) and its
evaluation, which reports both readouts (docs/pipelines/expression_vae.md).
"""

from __future__ import annotations

import numpy as np

from medgen.errors import MedgenError


def varimax(loadings: np.ndarray, max_iter: int = 1000, tol: float = 1e-8) -> np.ndarray:
    """The orthogonal k x k rotation R that maximises the varimax criterion of ``loadings @ R``.

    ``loadings``: features x k (raw, not row-normalised: in expression data most genes carry no programme, and
    Kaiser's row normalisation would inflate their noise to unit length). Iterates the SVD update of the
    criterion's gradient until its value grows by less than a relative ``tol``. Each rotated column's sign is
    chosen so that its largest weights are positive (sum of cubed weights >= 0).
    """
    w = np.asarray(loadings, dtype=np.float64)
    if w.ndim != 2 or min(w.shape) < 1:
        raise MedgenError(f"varimax needs a features x k matrix, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise MedgenError("varimax: the loadings contain NaN or infinite values")
    p, k = w.shape
    rot = np.eye(k)
    if k == 1:
        return rot * (1.0 if (w**3).sum() >= 0 else -1.0)
    value = 0.0
    for _ in range(max_iter):
        lr = w @ rot
        u, s, vt = np.linalg.svd(w.T @ (lr**3 - lr * (lr**2).sum(0) / p))
        rot = u @ vt
        previous, value = value, float(s.sum())
        if previous > 0 and value <= previous * (1.0 + tol):
            break
    signs = np.where(((w @ rot) ** 3).sum(0) >= 0, 1.0, -1.0)
    return rot * signs
