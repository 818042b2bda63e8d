"""The VAE objective (ELBO) as Tybalt writes it (Way & Greene 2018), with reconstruction and KL kept apart.

Reconstruction and KL are returned separately so a trainer can log both (the reference only logged their sum,
and its KL warm-up may never have switched on - see ``medgen.losses.schedules.kl_warmup``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medgen.errors import ConfigError, MedgenError

__all__ = ["vae_loss", "kl_divergence"]


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(N(mu, exp(logvar)) || N(0, 1)) = -0.5 * sum(1 + logvar - mu^2 - exp(logvar)), float32 (B,)."""
    mu = mu.float().flatten(1)
    logvar = logvar.float().flatten(1)
    return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)


def vae_loss(
    recon: torch.Tensor,
    x: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    beta: float | torch.Tensor = 1.0,
    n_features: int | None = None,
    reconstruction: str = "bce",
) -> dict[str, torch.Tensor]:
    """ELBO terms, each a float32 scalar averaged over the batch: ``{"loss", "reconstruction", "kl"}``.

    - ``reconstruction`` (per sample) = ``n_features * mean over features of BCE(x, recon)`` (Tybalt:
      ``5000 * binary_crossentropy``), which with the default ``n_features`` = number of features per sample
      is the SUM of BCE over features. ``recon`` holds probabilities (decoder output after the sigmoid) and
      ``x`` lies in [0, 1]. ``reconstruction="mse"`` uses the squared error instead of BCE.
    - ``kl`` (per sample) = ``-0.5 * sum(1 + logvar - mu^2 - exp(logvar))`` over the latent dimensions.
    - ``loss`` = ``reconstruction + beta * kl``; ``beta`` may be a float or a tensor (scheduled warm-up).
    Computed in float32 with autocast disabled (BCE on probabilities is not autocast-safe).
    """
    if recon.shape != x.shape:
        raise MedgenError(f"vae_loss: recon {tuple(recon.shape)} and x {tuple(x.shape)} differ")
    if mu.shape != logvar.shape:
        raise MedgenError(f"vae_loss: mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} differ")
    if reconstruction not in ("bce", "mse"):
        raise ConfigError(f"vae_loss reconstruction must be 'bce' or 'mse', got {reconstruction!r}")
    with torch.autocast(device_type=recon.device.type, enabled=False):
        r = recon.float().flatten(1)
        t = x.float().flatten(1)
        if reconstruction == "bce":
            per_element = F.binary_cross_entropy(r, t, reduction="none")
        else:
            per_element = (r - t).pow(2)
        scale = float(n_features) if n_features is not None else float(r.shape[1])
        rec = scale * per_element.mean(dim=1)
        kl = kl_divergence(mu, logvar)
        rec_mean = rec.mean()
        kl_mean = kl.mean()
        beta_t = torch.as_tensor(beta, dtype=torch.float32, device=rec_mean.device)
        return {"loss": rec_mean + beta_t * kl_mean, "reconstruction": rec_mean, "kl": kl_mean}
