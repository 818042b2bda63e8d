"""DeepMedic-style multi-scale 3D segmenter (Kamnitsas et al. 2017), the lesion_uda segmenter.

Pathways: one at normal resolution and one per subsampling factor (default (3,)). Each pathway is eight 3^3
valid convolutions (channels 30, 30, 40, 40, 40, 40, 50, 50) in DeepMedic's pre-activation order (layer 1:
conv; later layers: norm -> PReLU -> conv), with residual links at layers 4, 6, 8: the output of layer L-2 is
centre-cropped and added to the output of layer L, zero-padding missing channels (or dropping extra ones) as
DeepMedic does. Subsampled pathway outputs are upsampled by repetition (nearest) and centre-cropped to the
normal pathway's output, concatenated, then two 1^3 "FC" convs (150 channels), dropout, and a final 1^3 conv to
`out_channels` logits (softmax is the loss's job). Dropout (default 0.5) is applied to the inputs of the second
FC layer and of the classification layer, as DeepMedic's default [0, 0.5, 0.5].

Inputs, our choice: `forward(x)` takes ONE large context patch (size `input_sizes(o).context`) and derives
the pathway inputs itself (`split_inputs`): the normal input is its centre crop, each subsampled input is the
average pool (factor f, anti-aliased; `subsample_mode="stride"` takes every f-th voxel like DeepMedic's
sampling) of the centre crop of side `subsampled * f`. `forward(x_normal, x_sub=[...])` accepts pre-extracted
inputs instead. Subsampling factors must be odd so every pathway stays centred on the same voxel.

Sizes (defaults, factor 3): output 21^3 <- normal input 37^3; subsampled pathway 23^3 at 1/3 resolution,
i.e. a 69^3 context patch. MONAI has no DeepMedic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn

from medgen.errors import ConfigError
from medgen.networks.domain import center_crop
from medgen.networks.init import act_layer, check_spatial_dims, norm_layer, to_tuple
from medgen.registry import NETWORKS

__all__ = ["DeepMedic", "DeepMedicSizes"]


class DeepMedicSizes(NamedTuple):
    """Patch sizes (per axis) for one output size."""

    output: tuple[int, ...]  # segmentation output (normal resolution)
    normal: tuple[int, ...]  # normal pathway input
    subsampled: tuple[tuple[int, ...], ...]  # each subsampled pathway's input, at its low resolution
    context: tuple[int, ...]  # the one large patch `forward(x)` expects (normal resolution)


def _low_res_size(target: int, f: int) -> int:
    """Smallest low-res side q with q * f >= target and q * f - target even (so the crop is centred)."""
    q = math.ceil(target / f)
    if (q * f - target) % 2:
        q += 1
    return q


def upsample_crop(h: torch.Tensor, factor: int, target: Sequence[int]) -> torch.Tensor:
    """Upsample a low-res map by repetition (nearest) and centre-crop it to `target` (normal resolution).

    The low-res map is first centre-cropped to the smallest region that covers the target, to save memory."""
    need = [_low_res_size(int(t), factor) for t in target]
    h = center_crop(h, need)
    h = F.interpolate(h, scale_factor=factor, mode="nearest")
    return center_crop(h, target)


class _Pathway(nn.Module):
    def __init__(self, spatial_dims, in_channels, channels, residual_layers, norm, act):
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        layers = []
        cin = in_channels
        for i, c in enumerate(channels):
            if i == 0:
                layers.append(conv(cin, c, 3))
            else:
                layers.append(nn.Sequential(norm_layer(norm, spatial_dims, cin), act_layer(act, cin), conv(cin, c, 3)))
            cin = c
        self.layers = nn.ModuleList(layers)
        self.residual_layers = tuple(sorted(residual_layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every layer (1-based layer L is index L - 1)."""
        outs: list[torch.Tensor] = []
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if (i + 1) in self.residual_layers:
                r = center_crop(outs[i - 2], h.shape[2:])
                ch, cr = h.shape[1], r.shape[1]
                if cr < ch:
                    r = F.pad(r, [0, 0] * (h.dim() - 2) + [0, ch - cr])
                elif cr > ch:
                    r = r[:, :ch]
                h = h + r
            outs.append(h)
        return outs


@NETWORKS.register("deepmedic")
class DeepMedic(nn.Module):
    """Kamnitsas-style multi-scale segmenter (see the module docstring for layers and input handling).

    Args:
        spatial_dims: 3 (2 works too).
        in_channels: image channels (MR sequences).
        out_channels: classes (logits).
        channels: per-layer channels of every pathway (kernel 3, valid); len(channels) = margin per side.
        subsample_factors: odd factors of the subsampled pathways; () = normal pathway only.
        residual_layers: 1-based layers whose output gets layer L-2's output added (need L >= 3).
        fc_channels: channels of the 1^3 "FC" layers.
        dropout: dropout on the inputs of the second FC layer and the classifier.
        norm / act: "batch" / "prelu" (per-channel) as DeepMedic.
        feature_layers: 1-based layers of every pathway tapped by `return_features`.
        subsample_mode: "avg" (average pooling) or "stride" (every f-th voxel) for `split_inputs`.

    `forward(x, x_sub=None, return_features=False)` -> logits (B, out_channels, *output), or (logits, features)
    where features = [normal pathway layer L for L in feature_layers] + [the same for each subsampled pathway,
    upsampled (nearest) and centre-cropped to the normal layer's size, so layer L of every pathway covers the
    same region] + [output of each FC layer]. `feature_channels` lists their channels in that order.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: Sequence[int] = (30, 30, 40, 40, 40, 40, 50, 50),
        subsample_factors: Sequence[int] = (3,),
        residual_layers: Sequence[int] = (4, 6, 8),
        fc_channels: Sequence[int] = (150, 150),
        dropout: float = 0.5,
        norm="batch",
        act="prelu",
        feature_layers: Sequence[int] = (2, 4, 6, 8),
        subsample_mode: str = "avg",
    ):
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        channels = [int(c) for c in channels]
        n = len(channels)
        if n < 1:
            raise ConfigError("DeepMedic needs at least one conv layer in channels")
        for f in subsample_factors:
            if f < 1 or f % 2 == 0:
                raise ConfigError(f"DeepMedic subsample factors must be odd (e.g. 3, 5) to keep pathways centred, got {f}")
        residual_layers = [int(L) for L in residual_layers if L <= n]
        if any(L < 3 for L in residual_layers):
            raise ConfigError(f"residual_layers must be >= 3 (layer L adds layer L-2's output), got {residual_layers}")
        feature_layers = [int(L) for L in feature_layers if 1 <= L <= n] or [n]
        if subsample_mode not in ("avg", "stride"):
            raise ConfigError(f"subsample_mode must be 'avg' or 'stride', got {subsample_mode!r}")
        if not fc_channels:
            raise ConfigError("DeepMedic needs at least one FC layer")

        self.channels = tuple(channels)
        self.margin = n
        self.subsample_factors = tuple(int(f) for f in subsample_factors)
        self.feature_layers = tuple(feature_layers)
        self.subsample_mode = subsample_mode
        self.normal = _Pathway(spatial_dims, in_channels, channels, residual_layers, norm, act)
        self.subsampled = nn.ModuleList(
            _Pathway(spatial_dims, in_channels, channels, residual_layers, norm, act) for _ in self.subsample_factors
        )
        conv = Conv[Conv.CONV, spatial_dims]
        cin = channels[-1] * (1 + len(self.subsample_factors))
        fcs = []
        for j, c in enumerate(fc_channels):
            layers = [norm_layer(norm, spatial_dims, cin), act_layer(act, cin)]
            if j > 0 and dropout > 0:
                layers.append(nn.Dropout(dropout))
            layers.append(conv(cin, c, 1))
            fcs.append(nn.Sequential(*layers))
            cin = c
        self.fc = nn.ModuleList(fcs)
        final = [norm_layer(norm, spatial_dims, cin), act_layer(act, cin)]
        if dropout > 0:
            final.append(nn.Dropout(dropout))
        final.append(conv(cin, out_channels, 1))
        self.classifier = nn.Sequential(*final)
        self.feature_channels = tuple(
            [channels[L - 1] for L in feature_layers] * (1 + len(self.subsample_factors)) + [int(c) for c in fc_channels]
        )

    # ---- size arithmetic -------------------------------------------------------------------------------
    def input_sizes(self, output_size) -> DeepMedicSizes:
        """Pathway input sizes for an output size (int or per-axis). Default: 21 -> normal 37, sub 23, context 69."""
        out = to_tuple(output_size, self.spatial_dims, "output_size")
        if min(out) < 1:
            raise ConfigError(f"DeepMedic output size must be positive, got {out}")
        normal = tuple(o + 2 * self.margin for o in out)
        subs = tuple(tuple(_low_res_size(o, f) + 2 * self.margin for o in out) for f in self.subsample_factors)
        context = tuple(
            max([normal[d]] + [s[d] * f for s, f in zip(subs, self.subsample_factors)]) for d in range(self.spatial_dims)
        )
        return DeepMedicSizes(out, normal, subs, context)

    def output_size(self, context_size) -> tuple[int, ...]:
        """The largest output size whose context patch fits in `context_size` (int or per-axis)."""
        size = to_tuple(context_size, self.spatial_dims, "context_size")
        out = []
        for d, s in enumerate(size):
            o = s - 2 * self.margin
            while o >= 1 and self.input_sizes(o).context[0] > s:
                o -= 1
            if o < 1:
                smallest = self.input_sizes(1).context[0]
                raise ConfigError(
                    f"patch size {size} is too small for DeepMedic: each side needs at least {smallest} "
                    f"(margin {self.margin}, subsample factors {self.subsample_factors})"
                )
            out.append(o)
        return tuple(out)

    def split_inputs(self, x: torch.Tensor, output_size=None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(normal input, [subsampled inputs]) from one large patch (see the module docstring)."""
        if x.dim() != self.spatial_dims + 2:
            raise ConfigError(f"DeepMedic expects (B, C, {self.spatial_dims} spatial dims), got {tuple(x.shape)}")
        spatial = tuple(int(s) for s in x.shape[2:])
        out = self.output_size(spatial) if output_size is None else to_tuple(output_size, self.spatial_dims)
        sizes = self.input_sizes(out)
        if any(c > s for c, s in zip(sizes.context, spatial)):
            raise ConfigError(f"patch {spatial} is smaller than the context {sizes.context} needed for output {out}")
        x_normal = center_crop(x, sizes.normal)
        subs = []
        for f, sub in zip(self.subsample_factors, sizes.subsampled):
            region = center_crop(x, [s * f for s in sub])
            if self.subsample_mode == "avg":
                pool = F.avg_pool3d if self.spatial_dims == 3 else F.avg_pool2d
                subs.append(pool(region, f))
            else:
                idx = (slice(None), slice(None)) + (slice(f // 2, None, f),) * self.spatial_dims
                subs.append(region[idx])
        return x_normal, subs

    # ---- forward ---------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, x_sub: Sequence[torch.Tensor] | torch.Tensor | None = None,
                return_features: bool = False, output_size=None):
        """See the class docstring. With one context patch, the output is the largest that fits
        (`output_size(patch)`; several outputs can share one context size) unless `output_size` is given."""
        if x_sub is None:
            x_normal, subs = self.split_inputs(x, output_size)
        else:
            x_normal = x
            subs = [x_sub] if isinstance(x_sub, torch.Tensor) else list(x_sub)
            if len(subs) != len(self.subsample_factors):
                raise ConfigError(f"DeepMedic has {len(self.subsample_factors)} subsampled pathways, got {len(subs)} inputs")
        out_size = [int(s) - 2 * self.margin for s in x_normal.shape[2:]]
        if min(out_size) < 1:
            raise ConfigError(f"normal pathway input {tuple(x_normal.shape[2:])} is too small (margin {self.margin})")

        normal_outs = self.normal(x_normal)
        pathway_outs = [normal_outs[-1]]
        feats = [normal_outs[L - 1] for L in self.feature_layers]
        sub_feats = []
        for f, pathway, xs in zip(self.subsample_factors, self.subsampled, subs):
            need = [_low_res_size(o, f) + 2 * self.margin for o in out_size]
            if any(int(s) < q for s, q in zip(xs.shape[2:], need)):
                raise ConfigError(
                    f"subsampled input {tuple(xs.shape[2:])} (factor {f}) is smaller than the {tuple(need)} needed "
                    f"for output {tuple(out_size)}"
                )
            outs = pathway(xs)
            pathway_outs.append(upsample_crop(outs[-1], f, out_size))
            if return_features:
                for L in self.feature_layers:
                    sub_feats.append(upsample_crop(outs[L - 1], f, normal_outs[L - 1].shape[2:]))
        h = torch.cat(pathway_outs, dim=1)
        fc_feats = []
        for fc in self.fc:
            h = fc(h)
            fc_feats.append(h)
        logits = self.classifier(h)
        if return_features:
            return logits, feats + sub_feats + fc_feats
        return logits
