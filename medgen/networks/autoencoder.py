"""A plain 2D convolutional autoencoder with a vector bottleneck: the reconstruction baseline that anomaly
detectors on OCT (oct_anogan) are compared with.

Why not MONAI's `AutoEncoder`: its code is a feature map, not a latent vector of a chosen size; the
baseline's bottleneck should be a vector like the GANs' z, so that "learns a compact model of normal
anatomy" means the same thing for all methods.
"""

from __future__ import annotations

import math

from torch import nn

from medgen.errors import ConfigError
from medgen.registry import NETWORKS

__all__ = ["ConvAutoencoder"]


@NETWORKS.register()
class ConvAutoencoder(nn.Module):
    """Stride-2 convs (BN, LeakyReLU) from `image_size` down to 4 x 4, a linear bottleneck of `latent_dim`,
    mirrored transposed convs (BN, ReLU) up, tanh output. `channels`: one per stride-2 conv (the last one
    repeated when the image needs more levels)."""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, image_size: int = 64,
                 channels=(32, 64, 128, 256), latent_dim: int = 128):
        super().__init__()
        if spatial_dims != 2:
            raise ConfigError(f"ConvAutoencoder is 2D only, got spatial_dims={spatial_dims}")
        n = int(math.log2(image_size)) - 2
        chans = list(channels)[:n] + [list(channels)[-1]] * max(0, n - len(channels))
        enc, cin = [], in_channels
        for c in chans:
            enc += [nn.Conv2d(cin, c, 4, 2, 1), nn.BatchNorm2d(c), nn.LeakyReLU(0.2, True)]
            cin = c
        self.encoder = nn.Sequential(*enc)
        self.to_latent = nn.Linear(cin * 16, latent_dim)
        self.from_latent = nn.Linear(latent_dim, cin * 16)
        dec = []
        for c in reversed(chans[:-1]):
            dec += [nn.ConvTranspose2d(cin, c, 4, 2, 1), nn.BatchNorm2d(c), nn.ReLU(True)]
            cin = c
        dec += [nn.ConvTranspose2d(cin, in_channels, 4, 2, 1), nn.Tanh()]
        self.decoder = nn.Sequential(*dec)
        self.bottom = chans[-1]

    def forward(self, x):
        h = self.encoder(x)
        z = self.to_latent(h.flatten(1))
        h = self.from_latent(z).reshape(x.shape[0], self.bottom, 4, 4)
        return self.decoder(h)
