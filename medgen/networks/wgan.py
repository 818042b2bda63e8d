"""ResNet WGAN-GP generator and critic (Gulrajani et al. 2017, 64x64 "Good" nets) and the f-AnoGAN izi_f encoder.

Generator: Linear(z 128 -> 8*dim x 4x4) -> residual up blocks (8,8,4,2,1 x dim at 64 px) -> BN -> ReLU ->
conv3 -> out_channels -> tanh. Critic: conv3 (dim) -> residual down blocks (2,4,8,8 x dim) -> flatten ->
Linear -> 1 (linear, the Wasserstein critic). Encoder (izi_f): the critic topology with a Linear -> latent_dim
and tanh (Schlegl et al. 2019).

Differences from the TF reference, on purpose: upsampling is nearest + conv (the reference's "UpsampleConv"
is depth-to-space + conv; nearest is the usual PyTorch port and works in 3D), and the critic's layer norm is
GroupNorm(1, C): normalisation over (C, *spatial) with a per-channel scale and shift, which is what tflib's
Layernorm computes and works for any spatial size. No batch norm in the critic: the gradient penalty is
per-sample and batch statistics would couple samples.
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv, Pool
from torch import nn

from medgen.errors import ConfigError
from medgen.networks.init import act_layer, check_spatial_dims, log2_int, norm_layer
from medgen.registry import NETWORKS

__all__ = ["WGANResNetGenerator", "WGANResNetCritic", "IziEncoder", "ResBlockUpDown"]


class ResBlockUpDown(nn.Module):
    """Gulrajani residual block, resample "up" | "down" | None.

    up:   shortcut = upsample -> conv1;        main = norm, ReLU, upsample -> conv3 (cin->cout), norm, ReLU, conv3
    down: shortcut = conv1 -> mean pool;       main = norm, ReLU, conv3 (cin->cin), norm, ReLU, conv3 (cin->cout) -> mean pool
    """

    def __init__(self, spatial_dims: int, cin: int, cout: int, resample: str | None, norm="batch"):
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.resample = resample
        if resample == "up":
            self.shortcut = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv(cin, cout, 1))
            self.main = nn.Sequential(
                norm_layer(norm, spatial_dims, cin), nn.ReLU(),
                nn.Upsample(scale_factor=2, mode="nearest"), conv(cin, cout, 3, padding=1),
                norm_layer(norm, spatial_dims, cout), nn.ReLU(), conv(cout, cout, 3, padding=1),
            )
        elif resample == "down":
            pool = Pool[Pool.AVG, spatial_dims]
            self.shortcut = nn.Sequential(conv(cin, cout, 1), pool(2))
            self.main = nn.Sequential(
                norm_layer(norm, spatial_dims, cin), nn.ReLU(), conv(cin, cin, 3, padding=1),
                norm_layer(norm, spatial_dims, cin), nn.ReLU(), conv(cin, cout, 3, padding=1), pool(2),
            )
        else:
            self.shortcut = nn.Identity() if cin == cout else conv(cin, cout, 1)
            self.main = nn.Sequential(
                norm_layer(norm, spatial_dims, cin), nn.ReLU(), conv(cin, cout, 3, padding=1),
                norm_layer(norm, spatial_dims, cout), nn.ReLU(), conv(cout, cout, 3, padding=1),
            )

    def forward(self, x):
        return self.shortcut(x) + self.main(x)


def _num_blocks(image_size: int) -> int:
    k = log2_int(image_size)
    if k is None or k < 3:
        raise ConfigError(f"WGAN ResNet image_size must be a power of 2 >= 8, got {image_size}")
    return k - 2  # 4x4 at the bottom


@NETWORKS.register("wgan_resnet_generator")
class WGANResNetGenerator(nn.Module):
    """z (B, latent_dim) -> image (B, out_channels, image_size, ...).

    Args: spatial_dims (2), latent_dim (128), out_channels (1), image_size (64), dim (64: base width),
    norm ("batch" as the reference generator), out_act ("tanh").
    """

    def __init__(self, spatial_dims: int = 2, latent_dim: int = 128, out_channels: int = 1, image_size: int = 64,
                 dim: int = 64, norm="batch", out_act="tanh"):
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.latent_dim = latent_dim
        k = _num_blocks(image_size)
        mults = [min(8, 2 ** (k - 1 - i)) for i in range(k)]  # 64 px: 8, 4, 2, 1
        self.start_channels = mults[0] * dim
        self.fc = nn.Linear(latent_dim, self.start_channels * 4**spatial_dims)
        blocks = []
        cin = self.start_channels
        for m in mults:
            blocks.append(ResBlockUpDown(spatial_dims, cin, m * dim, "up", norm=norm))
            cin = m * dim
        self.blocks = nn.ModuleList(blocks)
        conv = Conv[Conv.CONV, spatial_dims]
        self.out = nn.Sequential(norm_layer(norm, spatial_dims, cin), nn.ReLU(), conv(cin, out_channels, 3, padding=1), act_layer(out_act))

    def forward(self, z: torch.Tensor, return_features: bool = False):
        """Returns the image, or (image, features): the 4x4 seed then each up block's output."""
        z = z.reshape(z.shape[0], -1)
        h = self.fc(z).reshape(z.shape[0], self.start_channels, *([4] * self.spatial_dims))
        feats = [h]
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        out = self.out(h)
        return (out, feats) if return_features else out


@NETWORKS.register("wgan_resnet_critic")
class WGANResNetCritic(nn.Module):
    """Image -> critic value (B, out_features) (linear; no sigmoid).

    Args: spatial_dims (2), in_channels (1), image_size (64), dim (64), norm ("layer" = GroupNorm(1, C);
    never "batch" with a gradient penalty), out_features (1).
    `forward(x, return_features=True)` -> (output, features): the stem conv output, each down block's output,
    and last the flattened penultimate features (B, 8*dim*4*4 at 64 px) = f-AnoGAN's f(x).
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, image_size: int = 64, dim: int = 64,
                 norm="layer", out_features: int = 1):
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.image_size = image_size
        k = _num_blocks(image_size)
        mults = [min(8, 2 ** (i + 1)) for i in range(k)]  # 64 px: 2, 4, 8, 8
        conv = Conv[Conv.CONV, spatial_dims]
        self.stem = conv(in_channels, dim, 3, padding=1)
        blocks = []
        cin = dim
        for m in mults:
            blocks.append(ResBlockUpDown(spatial_dims, cin, m * dim, "down", norm=norm))
            cin = m * dim
        self.blocks = nn.ModuleList(blocks)
        self.feature_dim = cin * 4**spatial_dims
        self.fc = nn.Linear(self.feature_dim, out_features)

    def _check(self, x):
        if not torch.jit.is_tracing() and not torch.jit.is_scripting():
            if x.dim() != self.spatial_dims + 2 or any(int(s) != self.image_size for s in x.shape[2:]):
                raise ConfigError(
                    f"{type(self).__name__} expects (B, C) + {(self.image_size,) * self.spatial_dims}, got {tuple(x.shape)}"
                )

    def forward(self, x: torch.Tensor, return_features: bool = False):
        self._check(x)
        h = self.stem(x)
        feats = [h]
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        flat = h.reshape(h.shape[0], -1)
        feats.append(flat)
        out = self.head(flat)
        return (out, feats) if return_features else out

    def head(self, flat: torch.Tensor) -> torch.Tensor:
        return self.fc(flat)


@NETWORKS.register("izi_encoder")
class IziEncoder(WGANResNetCritic):
    """f-AnoGAN izi_f encoder: the critic topology with a tanh-bounded latent (B, latent_dim) output.

    Args: spatial_dims, in_channels, image_size, dim, norm (as the critic), latent_dim (128, = the generator's).
    features as the critic's (last = flattened penultimate).
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, image_size: int = 64, dim: int = 64,
                 norm="layer", latent_dim: int = 128):
        super().__init__(spatial_dims, in_channels, image_size, dim, norm, out_features=latent_dim)
        self.latent_dim = latent_dim

    def head(self, flat: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(flat))
