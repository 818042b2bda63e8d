"""Discriminators: pix2pix PatchGAN (2D/3D) and Nie et al.'s CT-patch discriminator.

`PatchDiscriminator` vs MONAI's `monai.networks.nets.PatchDiscriminator`: the layers are the same pix2pix
NLayerDiscriminator idea, but MONAI's returns a list of every intermediate output with the logits last and
uses k4 s2 for all but the last layer with its own padding; this one returns the logits map (B, 1, ...) by
default and (logits, features) on request, accepts the condition separately, and exposes its receptive field.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from medgen.errors import ConfigError
from medgen.networks.init import act_layer, check_spatial_dims, is_batch_norm, norm_layer, to_tuple
from medgen.registry import NETWORKS

__all__ = ["PatchDiscriminator", "NieDiscriminator"]


@NETWORKS.register("patch_discriminator")
class PatchDiscriminator(nn.Module):
    """pix2pix PatchGAN: Conv k4 s2 (ndf) + LeakyReLU; n_layers - 1 times Conv k4 s2 + norm + LeakyReLU
    (channels doubling to 8 * ndf); Conv k4 s1 + norm + LeakyReLU; Conv k4 s1 -> out_channels logits map.
    All convs pad 1. Receptive field: 70 px for n_layers=3 (the "70x70 PatchGAN"), 34 for 2, 142 for 4.

    Conditional use: `in_channels` counts ALL input channels. Either concatenate [condition, image] on channels
    yourself, or call `forward(image, condition)`, which does exactly that (condition first, as pix2pix's
    torch.cat((real_A, fake_B), 1)). Ea-GANs' dEa-GAN adds the edge map as a third group of channels.

    `forward(..., return_features=True)` -> (logits, features): the output of each block after its LeakyReLU,
    shallow to deep (n_layers + 1 maps), for feature-matching losses. The logits are not in the list.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 2, ndf: int = 64, n_layers: int = 3,
                 norm="batch", out_channels: int = 1, act=("leakyrelu", {"negative_slope": 0.2})):
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if n_layers < 1:
            raise ConfigError(f"PatchDiscriminator needs n_layers >= 1, got {n_layers}")
        self.n_layers = n_layers
        conv = Conv[Conv.CONV, spatial_dims]
        bias = not is_batch_norm(norm)
        blocks = [nn.Sequential(conv(in_channels, ndf, 4, 2, 1), act_layer(act))]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            blocks.append(nn.Sequential(conv(ndf * prev, ndf * mult, 4, 2, 1, bias=bias),
                                        norm_layer(norm, spatial_dims, ndf * mult), act_layer(act)))
        prev, mult = mult, min(2**n_layers, 8)
        blocks.append(nn.Sequential(conv(ndf * prev, ndf * mult, 4, 1, 1, bias=bias),
                                    norm_layer(norm, spatial_dims, ndf * mult), act_layer(act)))
        self.blocks = nn.ModuleList(blocks)
        self.out = conv(ndf * mult, out_channels, 4, 1, 1)
        # (kernel, stride, padding) of every conv, in order, for the size arithmetic
        self._convs = [(4, 2, 1)] * n_layers + [(4, 1, 1), (4, 1, 1)]

    @property
    def receptive_field(self) -> int:
        """Side (pixels/voxels) of the input region that one output logit sees."""
        rf = 1
        for k, s, _ in reversed(self._convs):
            rf = (rf - 1) * s + k
        return rf

    def _side_out(self, s: int) -> int:
        for k, st, p in self._convs:
            s = (s + 2 * p - k) // st + 1
            if s < 1:
                return 0
        return s

    @property
    def min_input_size(self) -> int:
        """Smallest input side that still gives a logits map."""
        s = 1
        while self._side_out(s) < 1:
            s += 1
        return s

    def output_size(self, input_size) -> tuple[int, ...]:
        """Spatial size of the logits map for an input size; ConfigError if the input is too small."""
        size = to_tuple(input_size, self.spatial_dims, "input_size")
        out = tuple(self._side_out(s) for s in size)
        if min(out) < 1:
            raise ConfigError(
                f"input size {size} is too small for a PatchGAN with n_layers={self.n_layers}: "
                f"each side needs at least {self.min_input_size}"
            )
        return out

    def forward(self, image: torch.Tensor, condition: torch.Tensor | None = None, return_features: bool = False):
        x = image if condition is None else torch.cat([condition, image], dim=1)
        if not torch.jit.is_tracing() and not torch.jit.is_scripting():
            if x.dim() != self.spatial_dims + 2:
                raise ConfigError(f"PatchDiscriminator expects (B, C, {self.spatial_dims} spatial dims), got {tuple(x.shape)}")
            self.output_size(tuple(int(s) for s in x.shape[2:]))
        feats = []
        h = x
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        logits = self.out(h)
        return (logits, feats) if return_features else logits


@NETWORKS.register("nie_discriminator")
class NieDiscriminator(nn.Module):
    """Nie et al. 2017 discriminator on the CT patch alone: conv 5^3 32; conv 3^3 64; conv 3^3 64; conv 3^3 32
    (valid, stride 1 by default, + norm + act); flatten; FC 128 + act; FC 1 -> a LINEAR logit (B, 1).
    The reference code applies ReLU to the logit, which kills the gradient for negative logits; not here.

    Args: spatial_dims (3), in_channels (1), input_size (16: the generator's output patch), channels,
    kernel_sizes, strides (conv strides; the paper does not state them, stride 1 valid convs keep 16^3 -> 6^3),
    fc_channels (128), norm ("batch"), act ("relu").
    `forward(x, return_features=True)` -> (logit, features): each conv block's output then the FC-128 output.
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, input_size: int | Sequence[int] = 16,
                 channels: Sequence[int] = (32, 64, 64, 32), kernel_sizes: Sequence[int] = (5, 3, 3, 3),
                 strides: Sequence[int] = (1, 1, 1, 1), fc_channels: int = 128, norm="batch", act="relu"):
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if not (len(channels) == len(kernel_sizes) == len(strides)):
            raise ConfigError("channels, kernel_sizes and strides need one entry per conv layer")
        self.input_size = to_tuple(input_size, spatial_dims, "input_size")
        conv = Conv[Conv.CONV, spatial_dims]
        bias = not is_batch_norm(norm)
        blocks = []
        cin = in_channels
        size = list(self.input_size)
        for c, k, s in zip(channels, kernel_sizes, strides):
            blocks.append(nn.Sequential(conv(cin, c, k, s, 0, bias=bias), norm_layer(norm, spatial_dims, c), act_layer(act)))
            size = [(d - k) // s + 1 for d in size]
            cin = c
        if min(size) < 1:
            raise ConfigError(f"NieDiscriminator input_size {self.input_size} is too small for its valid convolutions")
        self.blocks = nn.ModuleList(blocks)
        self.fc1 = nn.Sequential(nn.Linear(cin * int(torch.tensor(size).prod()), fc_channels), act_layer(act))
        self.fc2 = nn.Linear(fc_channels, 1)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        if not torch.jit.is_tracing() and not torch.jit.is_scripting():
            if x.dim() != self.spatial_dims + 2 or tuple(int(s) for s in x.shape[2:]) != self.input_size:
                raise ConfigError(f"NieDiscriminator expects (B, C) + {self.input_size}, got {tuple(x.shape)}")
        feats = []
        h = x
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        h = self.fc1(h.reshape(h.shape[0], -1))
        feats.append(h)
        logit = self.fc2(h)
        return (logit, feats) if return_features else logit
