"""DCGAN generator and discriminator (Radford et al.), as AnoGAN (Schlegl et al. 2017) uses them.

G: z (latent_dim 100) -> ConvT k4 s1 (4x4, channels[0]) -> ConvT k4 s2 p1 doubling the size through
channels[1:] (BN + ReLU) -> ConvT k4 s2 p1 to out_channels -> tanh. D mirrors it: Conv k4 s2 p1 (no norm on
the first) + LeakyReLU 0.2, ..., Conv k4 s1 p0 -> one logit. spatial_dims 2 (OCT) or 3. MONAI has no DCGAN
(its `Generator`/`Regressor` use different blocks), so these are written from the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from medgen.errors import ConfigError
from medgen.networks.init import act_layer, check_spatial_dims, is_batch_norm, log2_int, norm_layer
from medgen.registry import NETWORKS

__all__ = ["DCGANGenerator", "DCGANDiscriminator"]


def _dcgan_channels(image_size: int, channels, base: int, reverse: bool) -> list[int]:
    k = log2_int(image_size)
    if k is None or k < 3:
        raise ConfigError(f"DCGAN image_size must be a power of 2 >= 8, got {image_size}")
    n = k - 2  # number of feature levels between 4x4 and the image
    if channels is None:
        chans = [base * 2**i for i in range(n)]  # 64, 128, 256, 512
        return chans[::-1] if reverse else chans
    channels = [int(c) for c in channels]
    if len(channels) != n:
        raise ConfigError(
            f"DCGAN with image_size {image_size} needs {n} channel entries (log2(size) - 2), got {channels}"
        )
    return channels


@NETWORKS.register("dcgan_generator")
class DCGANGenerator(nn.Module):
    """DCGAN generator: (B, latent_dim) or (B, latent_dim, 1, ...) -> (B, out_channels, image_size, ...).

    Args: spatial_dims (2), latent_dim (100), out_channels (1), image_size (64, a power of 2),
    channels (default 512-256-128-64 for 64 px; log2(image_size) - 2 entries, from the 4x4 level up),
    ngf (64: default channels are ngf * 8, 4, 2, 1), norm ("batch"), out_act ("tanh").
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        latent_dim: int = 100,
        out_channels: int = 1,
        image_size: int = 64,
        channels: Sequence[int] | None = None,
        ngf: int = 64,
        norm="batch",
        out_act="tanh",
    ):
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.latent_dim = latent_dim
        self.image_size = image_size
        chans = _dcgan_channels(image_size, channels, ngf, reverse=True)
        self.channels = tuple(chans)
        convt = Conv[Conv.CONVTRANS, spatial_dims]
        bias = not is_batch_norm(norm)
        blocks = [nn.Sequential(convt(latent_dim, chans[0], 4, 1, 0, bias=bias), norm_layer(norm, spatial_dims, chans[0]), nn.ReLU(True))]
        for cin, cout in zip(chans[:-1], chans[1:]):
            blocks.append(nn.Sequential(convt(cin, cout, 4, 2, 1, bias=bias), norm_layer(norm, spatial_dims, cout), nn.ReLU(True)))
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Sequential(convt(chans[-1], out_channels, 4, 2, 1, bias=True), act_layer(out_act))

    def forward(self, z: torch.Tensor, return_features: bool = False):
        """Returns the image, or (image, features): each block's output from 4x4 up."""
        if z.dim() == 2:
            z = z.reshape(z.shape[0], z.shape[1], *([1] * self.spatial_dims))
        h = z
        feats = []
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        out = self.out(h)
        return (out, feats) if return_features else out


@NETWORKS.register("dcgan_discriminator")
class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator: (B, in_channels, image_size, ...) -> logits (B, 1).

    Args: spatial_dims (2), in_channels (1), image_size (64), channels (default 64-128-256-512 for 64 px),
    ndf (64), norm ("batch"; "none" for WGAN-style critics), act (LeakyReLU 0.2).
    `forward(x, return_features=True)` -> (logits, features): each conv block's output after its activation,
    shallow to deep; features[-1] (512 x 4 x 4 at 64 px) is the intermediate layer AnoGAN uses as f(x).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        image_size: int = 64,
        channels: Sequence[int] | None = None,
        ndf: int = 64,
        norm="batch",
        act=("leakyrelu", {"negative_slope": 0.2}),
    ):
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.image_size = image_size
        chans = _dcgan_channels(image_size, channels, ndf, reverse=False)
        self.channels = tuple(chans)
        conv = Conv[Conv.CONV, spatial_dims]
        bias = not is_batch_norm(norm)
        blocks = [nn.Sequential(conv(in_channels, chans[0], 4, 2, 1, bias=True), act_layer(act))]
        for cin, cout in zip(chans[:-1], chans[1:]):
            blocks.append(nn.Sequential(conv(cin, cout, 4, 2, 1, bias=bias), norm_layer(norm, spatial_dims, cout), act_layer(act)))
        self.blocks = nn.ModuleList(blocks)
        self.out = conv(chans[-1], 1, 4, 1, 0, bias=True)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        if not torch.jit.is_tracing() and not torch.jit.is_scripting():
            if x.dim() != self.spatial_dims + 2 or any(int(s) != self.image_size for s in x.shape[2:]):
                raise ConfigError(
                    f"DCGANDiscriminator expects (B, C, {'x'.join([str(self.image_size)] * self.spatial_dims)}), got {tuple(x.shape)}"
                )
        h = x
        feats = []
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        logits = self.out(h).reshape(x.shape[0], 1)
        return (logits, feats) if return_features else logits
