"""Baselines for a learned latent space of an expression matrix, in expression_vae's prediction format
({"latent": samples x k, "reconstruction": samples x features}, CPU tensors):

- `PCABaseline`: PCA with as many components as the latent space (scikit-learn), fitted on the training rows:
  the linear latent space Way & Greene (PSB 2018) compared Tybalt against;
- `TrainingMean`: every sample reconstructed as the per-feature mean of the training rows (no latent space):
  the floor a reconstruction must beat.
"""

from __future__ import annotations

import numpy as np
import torch


def _rows(cases) -> np.ndarray:
    return np.concatenate([c["x"].numpy() for c in cases])


class PCABaseline:
    def __init__(self, n_components: int, seed: int = 0):
        self.n_components, self.seed = int(n_components), seed
        self.pca = None

    @property
    def name(self) -> str:
        """"pca<k>", k the components fitted (capped by the training rows and features)."""
        return f"pca{self.pca.n_components_}"

    def fit(self, training_cases) -> "PCABaseline":
        from sklearn.decomposition import PCA

        x = _rows(training_cases)
        self.pca = PCA(n_components=min(self.n_components, x.shape[0], x.shape[1]), random_state=self.seed).fit(x)
        return self

    def predict_case(self, case) -> dict[str, torch.Tensor]:
        scores = self.pca.transform(case["x"].numpy())
        recon = self.pca.inverse_transform(scores)
        return {"latent": torch.from_numpy(scores), "reconstruction": torch.from_numpy(recon)}


class TrainingMean:
    name = "training_mean"

    def __init__(self):
        self.mean = None

    def fit(self, training_cases) -> "TrainingMean":
        self.mean = _rows(training_cases).mean(0)
        return self

    def predict_case(self, case) -> dict[str, torch.Tensor]:
        """The mean row expanded to the case's rows: a view (do not write into it). The view, not a copy, so the
        metrics sum in the same order as the published evaluation did (a copy changes the last digit)."""
        return {"reconstruction": torch.from_numpy(self.mean).expand(case["x"].shape[0], -1)}
