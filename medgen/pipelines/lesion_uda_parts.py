"""Building blocks of the `lesion_uda` pipeline that are not the pipeline class itself:

- `UNetSegmenter`: MONAI's BasicUNet with forward hooks that tap several layers, so the U-Net alternative
  exposes multi-layer features the same way DeepMedic's `forward(x, return_features=True)` does;
- `MixedDomainDataset`: one item = a source patch (with labels) and a target patch (images only), so every
  batch mixes the two domains equally (Kamnitsas et al. 2017, sec. 3); optionally a second, unlabelled source
  patch drawn the way target patches are drawn, for the domain discriminator (see the class docstring);
- `protocol_shift`: the documented, constructed scanner/protocol change used to build a target domain from
  one site's images (contrast, bias field, noise, through-plane resolution) for the real-data benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from medgen.errors import ConfigError

# BasicUNet children that can be tapped, from low to high level (names of monai.networks.nets.BasicUNet).
UNET_LAYERS = ("conv_0", "down_1", "down_2", "down_3", "down_4", "upcat_4", "upcat_3", "upcat_2", "upcat_1")


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


class MixedDomainDataset(torch.utils.data.Dataset):
    """Item i = {"source": source[i], "target": target[i], "source_adv": source_adv[i]} (the last two optional).
    All are deterministic in i (each PatchDataset draws from its own seed), so resume and workers stay exact.

    Why `source_adv`: labelled source segments are lesion-centred half of the time (DeepMedic's class balance),
    target segments cannot be (no labels), so a discriminator shown those two would tell the domains apart by
    lesion content alone and, through the reversed gradient, teach the segmenter to put lesion-like features
    into every target segment (over-segmentation). `source_adv` holds source segments sampled like the target
    ones (inside the brain mask), so source and target differ only in the domain."""

    def __init__(self, source, target=None, source_adv=None):
        self.source, self.target, self.source_adv = source, target, source_adv
        self.epoch_size = source.epoch_size + (target.epoch_size if target is not None else 0)

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        item = {"source": _tensors(self.source[i])}
        if self.target is not None:
            item["target"] = _tensors(self.target[i])
        if self.source_adv is not None:
            item["source_adv"] = _tensors(self.source_adv[i])
        return item


def _tensors(item: dict) -> dict:
    return {k: v for k, v in item.items() if torch.is_tensor(v)}


# ----- the constructed protocol shift (real-data benchmark) ----------------------------------------------------
SHIFT_DEFAULTS = {
    "gamma": {"t1": 0.7, "t2": 1.3, "flair": 0.75},  # contrast: per-sequence power law on [0, 1]-scaled intensities
    "bias_std": 0.25,  # std of the log of a smooth multiplicative bias field
    "bias_scale_mm": 60.0,  # smoothness of the bias field
    "noise": 0.06,  # Rician noise sigma, as a fraction of the brain's 99th percentile
    "slice_factor": 3,  # through-plane (last axis) resolution: average blocks of this many slices, then repeat
}


def protocol_shift(images: dict[str, np.ndarray], brain: np.ndarray, spacing: Sequence[float], seed: int,
                   params: dict | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Simulate another scanner / protocol from one acquisition: per-sequence contrast change (gamma), a
    smooth multiplicative bias field, thick slices (block-average along the last axis, then nearest back),
    and Rician noise. Geometry and lesions are unchanged, so the original labels stay valid for evaluation.
    Returns (shifted images, the parameters used)."""
    from scipy import ndimage

    p = {**SHIFT_DEFAULTS, **(params or {})}
    rng = np.random.default_rng(seed)
    shape = brain.shape
    # One smooth bias field shared by all sequences (the coil), made at low resolution and zoomed.
    coarse = [max(2, int(round(s * sp / p["bias_scale_mm"]))) for s, sp in zip(shape, spacing)]
    field = rng.normal(0.0, 1.0, coarse)
    field = ndimage.zoom(field, [s / c for s, c in zip(shape, coarse)], order=3)[tuple(slice(0, s) for s in shape)]
    field = field / (field.std() + 1e-6) * p["bias_std"]
    bias = np.exp(field).astype(np.float32)
    out = {}
    k = int(p["slice_factor"])
    for key, img in images.items():
        x = np.clip(img.astype(np.float32), 0, None)
        hi = float(np.percentile(x[brain], 99)) or 1.0
        y = np.clip(x / hi, 0, None) ** float(p["gamma"].get(key, 1.0)) * hi
        y = y * bias
        if k > 1:
            n = y.shape[-1]
            pad = (-n) % k
            yp = np.concatenate([y, np.repeat(y[..., -1:], pad, axis=-1)], axis=-1) if pad else y
            blocks = yp.reshape(*yp.shape[:-1], -1, k).mean(-1)
            y = np.repeat(blocks, k, axis=-1)[..., :n]
        sigma = float(p["noise"]) * hi
        y = np.sqrt((y + rng.normal(0, sigma, y.shape)) ** 2 + rng.normal(0, sigma, y.shape) ** 2)
        y[~brain] = 0.0
        out[key] = y.astype(np.float32)
    return out, {k: v for k, v in p.items()} | {"seed": int(seed)}
