"""`UNetSegmenter`: MONAI's BasicUNet whose `forward(x, return_features=True)` also returns the outputs of
several layers (forward hooks), so the U-Net alternative of `lesion_uda` exposes multi-layer features to a
domain discriminator the way DeepMedic's `forward(x, return_features=True)` does (Kamnitsas et al. 2017).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medgen.errors import ConfigError
from medgen.registry import NETWORKS

# BasicUNet children that can be tapped, from low to high level (names of monai.networks.nets.BasicUNet).
UNET_LAYERS = ("conv_0", "down_1", "down_2", "down_3", "down_4", "upcat_4", "upcat_3", "upcat_2", "upcat_1")


@NETWORKS.register("unet_segmenter")
class UNetSegmenter(nn.Module):
    """MONAI BasicUNet (3D, same-size output) whose `forward(x, return_features=True)` also returns the
    outputs of `feature_layers` (forward hooks), ordered as given. `feature_channels` lists their channels.

    Why hooks: BasicUNet's forward has no feature output; hooks tap it without copying its code.
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2,
                 features: Sequence[int] = (32, 32, 64, 128, 256, 32), dropout: float = 0.0,
                 feature_layers: Sequence[str] = ("down_1", "down_3", "upcat_3", "upcat_1")):
        super().__init__()
        from monai.networks.nets import BasicUNet

        if len(features) != 6:
            raise ConfigError(f"model.unet_features needs 6 entries (BasicUNet), got {list(features)}")
        bad = [n for n in feature_layers if n not in UNET_LAYERS]
        if bad or not feature_layers:
            raise ConfigError(f"model.unet_feature_layers {list(feature_layers)}: choose from {', '.join(UNET_LAYERS)}")
        self.net = BasicUNet(spatial_dims, in_channels, out_channels, features=tuple(features), dropout=dropout)
        self.feature_layers = tuple(feature_layers)
        f = list(features)
        chans = {"conv_0": f[0], "down_1": f[1], "down_2": f[2], "down_3": f[3], "down_4": f[4],
                 "upcat_4": f[3], "upcat_3": f[2], "upcat_2": f[1], "upcat_1": f[5]}
        self.feature_channels = tuple(chans[n] for n in self.feature_layers)
        self._taps: dict[str, torch.Tensor] = {}
        for name in self.feature_layers:
            getattr(self.net, name).register_forward_hook(self._hook(name))

    def _hook(self, name):
        def hook(module, inputs, output):
            self._taps[name] = output
        return hook

    def forward(self, x: torch.Tensor, return_features: bool = False):
        self._taps = {}
        logits = self.net(x)
        if not return_features:
            self._taps = {}
            return logits
        feats = [self._taps[n] for n in self.feature_layers]
        self._taps = {}
        return logits, feats
