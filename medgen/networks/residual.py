"""Wrappers that change what a generator predicts (pet_lowdose options, ours; see docs/pipelines/pet_lowdose.md):

- `ResidualOnInput`: G(x) + x[:, :1], so the generator learns the correction to its first input channel (the
  low-dose PET), which is close to the identity mapping it would otherwise have to learn;
- `FullResolutionHead`: the generator's estimate plus a correction from three 3^3 convolutions at full
  resolution on [input, estimate]; the pix2pix U-Net's finest level works at half resolution.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResidualOnInput", "FullResolutionHead"]


class ResidualOnInput(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x) + x[:, :1]


class FullResolutionHead(nn.Module):
    def __init__(self, net: nn.Module, in_channels: int, channels: int):
        super().__init__()
        self.net = net
        conv = lambda i, o: nn.Conv3d(i, o, 3, padding=1)  # noqa: E731
        act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        self.head = nn.Sequential(conv(in_channels + 1, channels), act(), conv(channels, channels), act(),
                                  conv(channels, 1))

    def forward(self, x):
        y = self.net(x)
        return y + self.head(torch.cat([x, y], dim=1))
