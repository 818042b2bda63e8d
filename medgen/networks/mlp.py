"""Fully connected blocks for tabular data (gene expression): Tybalt's VAE and an ADAGE denoising autoencoder.

Tybalt (Way & Greene 2018): encoder 5000 -> Dense(100) + BN (+ ReLU in the reference) for the mean and the same
for the log-variance; z = mu + exp(logvar / 2) * eps; decoder Dense(5000) + sigmoid. Two-hidden-layer variants
(5000-100-100-100-5000, 5000-300-100-300-5000) use `hidden_sizes=(100,)` / `(300,)`.
The reference's ReLU on both heads forces sigma >= 1; it is `head_relu=True` here, off by default.
MONAI's `VarAutoEncoder` is convolutional; these are plain MLPs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medgen.errors import ConfigError
from medgen.networks.init import act_layer
from medgen.registry import NETWORKS

__all__ = ["MLPEncoder", "MLPDecoder", "TybaltVAE", "AdageAutoencoder"]


def _norm1d(norm, features: int) -> nn.Module:
    if norm is None or (isinstance(norm, str) and norm.lower() in ("none", "")):
        return nn.Identity()
    if isinstance(norm, str) and norm.lower() == "batch":
        return nn.BatchNorm1d(features)
    if isinstance(norm, str) and norm.lower() == "layer":
        return nn.LayerNorm(features)
    raise ConfigError(f"MLP norm must be 'batch', 'layer' or 'none', got {norm!r}")


def _mlp(sizes: Sequence[int], norm, act, dropout: float) -> nn.Sequential:
    """Dense -> norm -> act -> dropout for each consecutive pair of sizes."""
    layers: list[nn.Module] = []
    for cin, cout in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(cin, cout), _norm1d(norm, cout), act_layer(act)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


@NETWORKS.register("mlp_encoder")
class MLPEncoder(nn.Module):
    """x (B, in_features) -> (mu, logvar) each (B, latent_dim) when variational, else z (B, latent_dim).

    Args: in_features (5000), latent_dim (100), hidden_sizes (() = Tybalt's one-layer encoder),
    norm ("batch" | "layer" | "none" for hidden layers), act ("relu"), dropout (0),
    variational (True), head_norm (True: Dense + BN heads as Tybalt), head_relu (False; True = reference quirk).
    """

    def __init__(self, in_features: int = 5000, latent_dim: int = 100, hidden_sizes: Sequence[int] = (),
                 norm="batch", act="relu", dropout: float = 0.0, variational: bool = True,
                 head_norm: bool = True, head_relu: bool = False):
        super().__init__()
        self.in_features, self.latent_dim, self.variational = in_features, latent_dim, variational
        sizes = [in_features, *[int(h) for h in hidden_sizes]]
        self.body = _mlp(sizes, norm, act, dropout)

        def head() -> nn.Sequential:
            layers: list[nn.Module] = [nn.Linear(sizes[-1], latent_dim)]
            if head_norm:
                layers.append(_norm1d(norm if norm not in (None, "none") else "batch", latent_dim))
            if head_relu:
                layers.append(nn.ReLU())
            return nn.Sequential(*layers)

        self.mu = head()
        self.logvar = head() if variational else None

    def forward(self, x: torch.Tensor):
        if not torch.jit.is_tracing() and not torch.jit.is_scripting():
            if x.dim() != 2 or x.shape[1] != self.in_features:
                raise ConfigError(f"MLPEncoder expects (B, {self.in_features}), got {tuple(x.shape)}")
        h = self.body(x)
        if self.logvar is None:
            return self.mu(h)
        return self.mu(h), self.logvar(h)


@NETWORKS.register("mlp_decoder")
class MLPDecoder(nn.Module):
    """z (B, latent_dim) -> (B, out_features). Hidden layers Dense -> norm -> act; last Dense -> out_act.

    Args: latent_dim (100), out_features (5000), hidden_sizes (()), norm ("none", as Tybalt's decoder),
    act ("relu"), dropout (0), out_act ("sigmoid": genes scaled to [0, 1]).
    """

    def __init__(self, latent_dim: int = 100, out_features: int = 5000, hidden_sizes: Sequence[int] = (),
                 norm="none", act="relu", dropout: float = 0.0, out_act="sigmoid"):
        super().__init__()
        sizes = [latent_dim, *[int(h) for h in hidden_sizes]]
        self.body = _mlp(sizes, norm, act, dropout)
        self.out = nn.Linear(sizes[-1], out_features)
        self.out_act = act_layer(out_act)

    @property
    def gene_weights(self) -> torch.Tensor:
        """The last Dense layer's weights, (out_features, last hidden or latent): Tybalt's per-feature gene weights."""
        return self.out.weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out_act(self.out(self.body(z)))


@NETWORKS.register("tybalt_vae")
class TybaltVAE(nn.Module):
    """Tybalt VAE. forward(x, sample=None) -> (recon, mu, logvar, z).

    z = mu + exp(logvar / 2) * eps when sampling; `sample=None` samples in training mode and uses z = mu in
    eval mode (deterministic latent features and reconstructions); pass sample=True to sample in eval (e.g. a
    held-out ELBO). Args: in_features (5000), latent_dim (100), hidden_sizes (encoder; () = one layer),
    decoder_hidden_sizes (None = mirror of hidden_sizes), norm ("batch"), head_relu (False), out_act ("sigmoid").
    """

    def __init__(self, in_features: int = 5000, latent_dim: int = 100, hidden_sizes: Sequence[int] = (),
                 decoder_hidden_sizes: Sequence[int] | None = None, norm="batch", act="relu",
                 dropout: float = 0.0, head_relu: bool = False, out_act="sigmoid"):
        super().__init__()
        if decoder_hidden_sizes is None:
            decoder_hidden_sizes = tuple(hidden_sizes)[::-1]
        self.encoder = MLPEncoder(in_features, latent_dim, hidden_sizes, norm=norm, act=act, dropout=dropout,
                                  variational=True, head_relu=head_relu)
        self.decoder = MLPDecoder(latent_dim, in_features, decoder_hidden_sizes, norm="none", act=act, out_act=out_act)
        self.latent_dim = latent_dim

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def encode(self, x: torch.Tensor):
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, sample: bool | None = None):
        mu, logvar = self.encoder(x)
        if sample is None:
            sample = self.training
        z = self.reparameterize(mu, logvar) if sample else mu
        return self.decoder(z), mu, logvar, z


@NETWORKS.register("adage_autoencoder")
class AdageAutoencoder(nn.Module):
    """ADAGE-style single-layer denoising autoencoder (Tan et al. 2016): sigmoid encoder and decoder.

    forward(x) -> (recon, h). In training mode each input is zeroed with probability `corruption` (masking
    noise) before encoding; in eval mode the input is used as is. tied=True uses the transposed encoder weights
    in the decoder (ADAGE's choice), with its own decoder bias. Defaults (100 nodes, corruption 0.1) are
    medgen's, chosen to match Tybalt's latent size for the baseline.
    """

    def __init__(self, in_features: int = 5000, latent_dim: int = 100, corruption: float = 0.1, tied: bool = True):
        super().__init__()
        if not 0.0 <= corruption < 1.0:
            raise ConfigError(f"corruption must be in [0, 1), got {corruption}")
        self.corruption, self.tied = corruption, tied
        self.encoder = nn.Linear(in_features, latent_dim)
        if tied:
            self.decoder_bias = nn.Parameter(torch.zeros(in_features))
            self.decoder = None
        else:
            self.decoder = nn.Linear(latent_dim, in_features)

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        if self.corruption <= 0:
            return x
        keep = (torch.rand_like(x) >= self.corruption).to(x.dtype)
        return x * keep

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.encoder(x))

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        if self.decoder is None:
            return torch.sigmoid(nn.functional.linear(h, self.encoder.weight.t(), self.decoder_bias))
        return torch.sigmoid(self.decoder(h))

    def forward(self, x: torch.Tensor):
        h = self.encode(self.corrupt(x) if self.training else x)
        return self.decode(h), h
