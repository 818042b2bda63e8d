"""pix2pix-style U-Net generator (2D or 3D) with concatenating skips.

Used by pet_lowdose (Wang et al. 2018: encoder 4^3 stride-2 conv + BN + LeakyReLU 0.2, decoder ReLU +
4^3 stride-2 transposed conv + BN) and mr_synthesis (Ea-GANs: ngf 64, dropout 0.5 in the middle blocks,
tanh; 7 levels for 128^3). Why not MONAI's `UNet`: MONAI's UNet uses k3 strided convs with residual
units and no pix2pix dropout / pre-activation order / no-norm outermost and innermost layers; the papers
use the pix2pix `UnetGenerator`, rebuilt here (flat rather than recursive) so depth follows the patch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from medgen.errors import ConfigError
from medgen.networks.init import act_layer, check_spatial_dims, is_batch_norm, norm_layer, to_tuple
from medgen.registry import NETWORKS

__all__ = ["UNetGenerator", "unet_depth_for_patch"]


def unet_depth_for_patch(patch_size) -> int:
    """The deepest U-Net for a patch: the largest n <= log2(min side) with every side divisible by 2**n."""
    sides = tuple(patch_size)
    if not sides or min(sides) < 1:
        raise ConfigError(f"patch_size must be positive, got {patch_size!r}")
    n = int(min(sides)).bit_length() - 1  # floor(log2(min side))
    while n > 0 and any(s % (2**n) for s in sides):
        n -= 1
    return n


@NETWORKS.register("unet_generator")
class UNetGenerator(nn.Module):
    """pix2pix U-Net: k4 s2 conv down blocks, k4 s2 transposed-conv up blocks, concatenating skips.

    Level i (0 = outermost) has `channels[i]` features. Down block i: LeakyReLU(0.2) -> Conv k4 s2 p1 ->
    norm (no activation before level 0, no norm at level 0 and at the innermost level, as pix2pix). Up block i:
    ReLU -> ConvTranspose k4 s2 p1 -> norm (-> Dropout for the `num_dropout_blocks` levels just outside the
    innermost one); the outermost up block ends in `out_act` instead of norm. Pre-activation order is pix2pix's;
    composed it equals the papers' "conv + BN + LeakyReLU" encoder / "ReLU + deconv + BN" decoder.

    Args:
        spatial_dims: 2 or 3.
        in_channels / out_channels: image channels (multi-source input = more in_channels).
        ngf: base channels; level i has min(ngf * 2**i, max_mult * ngf) unless `channels` is given.
        num_downs: number of levels; None derives it from `patch_size` (see `unet_depth_for_patch`).
        patch_size: training patch size (int or per-axis); must be divisible by 2**num_downs.
        channels: explicit channels per level (overrides ngf/num_downs).
        norm: "batch" (default), "instance" or "none" (or a MONAI (name, kwargs) tuple).
        dropout: dropout probability in the dropout blocks (pix2pix 0.5).
        num_dropout_blocks: None = max(num_downs - 5, 0) as pix2pix (3 blocks at 8 levels, 2 at 7).
        out_act: "tanh" (default) or "none"/"linear", or any MONAI activation name.
        residual: add the input to the output (needs in_channels == out_channels); off for the papers.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        ngf: int = 64,
        num_downs: int | None = None,
        patch_size: int | Sequence[int] | None = None,
        channels: Sequence[int] | None = None,
        max_mult: int = 8,
        norm="batch",
        dropout: float = 0.5,
        num_dropout_blocks: int | None = None,
        out_act="tanh",
        residual: bool = False,
    ):
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.patch_size = to_tuple(patch_size, spatial_dims, "patch_size") if patch_size is not None else None
        if channels is not None:
            channels = [int(c) for c in channels]
            if num_downs is not None and num_downs != len(channels):
                raise ConfigError(f"num_downs={num_downs} disagrees with {len(channels)} channels {channels}")
            num_downs = len(channels)
        if num_downs is None:
            if self.patch_size is None:
                raise ConfigError("UNetGenerator needs num_downs, channels or patch_size to choose its depth")
            num_downs = unet_depth_for_patch(self.patch_size)
        if num_downs < 2:
            raise ConfigError(
                f"UNetGenerator needs at least 2 levels, got num_downs={num_downs}"
                + (f" for patch_size {self.patch_size}" if self.patch_size else "")
            )
        if self.patch_size is not None:
            factor = 2**num_downs
            if any(s % factor for s in self.patch_size):
                raise ConfigError(
                    f"patch_size {self.patch_size} is not divisible by 2**num_downs = {factor}; "
                    f"use a multiple of {factor} or fewer levels (num_downs <= {unet_depth_for_patch(self.patch_size)})"
                )
        if channels is None:
            channels = [min(ngf * 2**i, max_mult * ngf) for i in range(num_downs)]
        if residual and in_channels != out_channels:
            raise ConfigError("residual=True needs in_channels == out_channels")
        if num_dropout_blocks is None:
            num_dropout_blocks = max(num_downs - 5, 0)
        num_dropout_blocks = max(0, min(int(num_dropout_blocks), num_downs - 2))

        self.num_downs = num_downs
        self.channels = tuple(channels)
        self.residual = residual
        conv = Conv[Conv.CONV, spatial_dims]
        convt = Conv[Conv.CONVTRANS, spatial_dims]
        bias = not is_batch_norm(norm)
        n = num_downs

        self.down = nn.ModuleList()
        for i in range(n):
            cin = in_channels if i == 0 else channels[i - 1]
            layers: list[nn.Module] = []
            if i > 0:
                layers.append(act_layer(("leakyrelu", {"negative_slope": 0.2})))
            innermost = i == n - 1
            layers.append(conv(cin, channels[i], kernel_size=4, stride=2, padding=1, bias=bias or i == 0 or innermost))
            if 0 < i < n - 1:
                layers.append(norm_layer(norm, spatial_dims, channels[i]))
            self.down.append(nn.Sequential(*layers))

        # up[i] maps level i's features (plus level i's skip, except at the innermost) to level i-1's size
        self.up = nn.ModuleList()
        dropout_levels = set(range(n - 1 - num_dropout_blocks, n - 1))
        for i in range(n):
            cin = channels[i] if i == n - 1 else 2 * channels[i]
            layers = [act_layer("relu")]
            if i == 0:
                layers.append(convt(cin, out_channels, kernel_size=4, stride=2, padding=1, bias=True))
                layers.append(act_layer(out_act))
            else:
                layers.append(convt(cin, channels[i - 1], kernel_size=4, stride=2, padding=1, bias=bias))
                layers.append(norm_layer(norm, spatial_dims, channels[i - 1]))
                if i in dropout_levels and dropout > 0:
                    layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != self.spatial_dims + 2:
            raise ConfigError(f"UNetGenerator expects (B, C, {self.spatial_dims} spatial dims), got shape {tuple(x.shape)}")
        factor = 2**self.num_downs
        if any(int(s) % factor for s in x.shape[2:]):
            raise ConfigError(
                f"input spatial size {tuple(x.shape[2:])} is not divisible by 2**num_downs = {factor}"
            )

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """Returns the output, or (output, features) with features = encoder outputs from the outermost to the
        innermost (bottleneck) level, then decoder outputs from the innermost up (before skip concatenation,
        excluding the final output)."""
        if not torch.jit.is_tracing() and not torch.jit.is_scripting():
            self._check_input(x)
        skips = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)
        dec = []
        h = self.up[-1](skips[-1])
        dec.append(h)
        for i in range(self.num_downs - 2, 0, -1):
            h = self.up[i](torch.cat([skips[i], h], dim=1))
            dec.append(h)
        out = self.up[0](torch.cat([skips[0], h], dim=1))
        if self.residual:
            out = out + x
        if return_features:
            return out, skips + dec
        return out
