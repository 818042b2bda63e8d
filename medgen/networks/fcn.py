"""Nie et al. 2017 generator: a fully convolutional net with valid convolutions (32^3 MR in -> 16^3 CT out).

Layers (mr_to_ct spec): conv 9^3 valid 32; three conv 3^3 same 32; conv 9^3 valid 64; two conv 3^3 same 64;
conv 3^3 same 32; conv 3^3 -> out_channels, linear. Conv + BN + ReLU elsewhere. Built from MONAI's
`Convolution` block (order conv -> norm -> act); MONAI has no valid-padding FCN of this kind.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn

from medgen.errors import ConfigError
from medgen.networks.init import check_spatial_dims, is_batch_norm, to_tuple
from medgen.registry import NETWORKS

__all__ = ["NieFCN"]


def _norm_arg(norm):
    """None for "none" (MONAI's Convolution treats None as no layer)."""
    if norm is None or (isinstance(norm, str) and norm.lower() in ("none", "")):
        return None
    return norm


@NETWORKS.register("nie_fcn")
class NieFCN(nn.Module):
    """Valid-convolution FCN (Nie et al. 2017) for 2D or 3D.

    Args:
        spatial_dims: 2 or 3.
        in_channels: MR channels (auto-context stages add the previous CT estimate as channels).
        out_channels: output channels (1 CT).
        channels / kernel_sizes / valid: per hidden layer; defaults are the paper's 8 layers.
        out_kernel_size: kernel of the final linear conv (same padding).
        norm / act / dropout: MONAI names; default BN + ReLU, no dropout.

    Size helpers: `margin` (voxels lost per side), `output_size(input_size)`, `input_size(output_size)`.
    With the defaults margin = 8 so 32 -> 16.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (32, 32, 32, 32, 64, 64, 64, 32),
        kernel_sizes: Sequence[int] = (9, 3, 3, 3, 9, 3, 3, 3),
        valid: Sequence[bool] = (True, False, False, False, True, False, False, False),
        out_kernel_size: int = 3,
        norm="batch",
        act="relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if not (len(channels) == len(kernel_sizes) == len(valid)):
            raise ConfigError(
                f"channels ({len(channels)}), kernel_sizes ({len(kernel_sizes)}) and valid ({len(valid)}) must have one entry per layer"
            )
        for k in list(kernel_sizes) + [out_kernel_size]:
            if k % 2 != 1:
                raise ConfigError(f"kernel sizes must be odd so 'same' padding is symmetric, got {k}")
        self.margin = sum((k - 1) // 2 for k, v in zip(kernel_sizes, valid) if v)
        norm = _norm_arg(norm)
        act = _norm_arg(act)
        layers = []
        cin = in_channels
        for c, k, v in zip(channels, kernel_sizes, valid):
            layers.append(
                Convolution(
                    spatial_dims, cin, c, kernel_size=k, strides=1, padding=0 if v else (k - 1) // 2,
                    act=act, norm=norm, dropout=dropout if dropout else None, bias=not is_batch_norm(norm),
                )
            )
            cin = c
        self.layers = nn.ModuleList(layers)
        self.out = Convolution(
            spatial_dims, cin, out_channels, kernel_size=out_kernel_size, strides=1,
            padding=(out_kernel_size - 1) // 2, conv_only=True, bias=True,
        )

    def output_size(self, input_size) -> tuple[int, ...]:
        """Output spatial size for an input size (int or per-axis); ConfigError if too small."""
        size = to_tuple(input_size, self.spatial_dims, "input_size")
        out = tuple(s - 2 * self.margin for s in size)
        if min(out) < 1:
            raise ConfigError(
                f"input size {size} is too small for NieFCN: it loses {self.margin} voxels per side, "
                f"so each side needs at least {2 * self.margin + 1}"
            )
        return out

    def input_size(self, output_size) -> tuple[int, ...]:
        """Input spatial size needed for an output size (int or per-axis)."""
        size = to_tuple(output_size, self.spatial_dims, "output_size")
        if min(size) < 1:
            raise ConfigError(f"output size must be positive, got {size}")
        return tuple(s + 2 * self.margin for s in size)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """Returns the output, or (output, features): the output of every hidden layer, first to last."""
        if not torch.jit.is_tracing() and not torch.jit.is_scripting():
            if x.dim() != self.spatial_dims + 2:
                raise ConfigError(f"NieFCN expects (B, C, {self.spatial_dims} spatial dims), got {tuple(x.shape)}")
            self.output_size(tuple(int(s) for s in x.shape[2:]))
        feats = []
        h = x
        for layer in self.layers:
            h = layer(h)
            feats.append(h)
        out = self.out(h)
        return (out, feats) if return_features else out
