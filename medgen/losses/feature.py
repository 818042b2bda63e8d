"""Feature matching between intermediate discriminator / critic features.

Used by AnoGAN's discrimination loss (|f(x) - f(G(z))|, summed), f-AnoGAN's izi_f encoder loss (MSE of the
critic's penultimate features) and pix2pixHD-style generator regularisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medgen.errors import ConfigError, MedgenError

__all__ = ["feature_matching_loss"]


def _as_list(features) -> list[torch.Tensor]:
    if isinstance(features, torch.Tensor):
        return [features]
    if isinstance(features, (list, tuple)) and all(isinstance(f, torch.Tensor) for f in features):
        return list(features)
    raise MedgenError(f"feature_matching_loss: expected a tensor or a list of tensors, got {type(features).__name__}")


def feature_matching_loss(
    features_fake: torch.Tensor | Sequence[torch.Tensor],
    features_real: torch.Tensor | Sequence[torch.Tensor],
    weights: Sequence[float] | None = None,
    norm: str = "l1",
    reduction: str = "mean",
    detach_real: bool = True,
) -> torch.Tensor:
    """Weighted distance between two equally long lists of feature tensors (float32 scalar).

    Per layer i: ``d_i = reduce(|fake_i - real_i|)`` (``norm="l1"``) or ``reduce((fake_i - real_i)^2)``
    (``norm="l2"``, i.e. MSE), with ``reduce`` the mean (default) or the sum over all elements
    (``reduction="sum"``, AnoGAN's sum |.|). Result: ``sum_i w_i * d_i`` with ``weights`` defaulting to
    ``1 / n_layers`` each, i.e. the mean over layers (so a single tensor gives plain L1 / MSE).
    ``features_real`` is detached unless ``detach_real=False``.
    """
    fake = _as_list(features_fake)
    real = _as_list(features_real)
    if len(fake) != len(real) or not fake:
        raise MedgenError(f"feature_matching_loss: {len(fake)} fake vs {len(real)} real feature tensors")
    if norm not in ("l1", "l2"):
        raise ConfigError(f"feature_matching_loss norm must be 'l1' or 'l2', got {norm!r}")
    if reduction not in ("mean", "sum"):
        raise ConfigError(f"feature_matching_loss reduction must be 'mean' or 'sum', got {reduction!r}")
    if weights is None:
        weights = [1.0 / len(fake)] * len(fake)
    elif len(weights) != len(fake):
        raise ConfigError(f"feature_matching_loss: {len(weights)} weights for {len(fake)} feature tensors")
    total = fake[0].new_zeros((), dtype=torch.float32)
    for w, f, r in zip(weights, fake, real):
        if f.shape != r.shape:
            raise MedgenError(f"feature_matching_loss: feature shapes differ: {tuple(f.shape)} vs {tuple(r.shape)}")
        if detach_real:
            r = r.detach()
        diff = f.float() - r.float()
        d = diff.abs() if norm == "l1" else diff * diff
        total = total + float(w) * (d.mean() if reduction == "mean" else d.sum())
    return total
