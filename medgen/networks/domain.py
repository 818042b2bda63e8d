"""Adversarial domain adaptation parts (Kamnitsas et al. 2017; Ganin & Lempitsky 2015).

- `GradientReversal`: identity forward, gradient times -weight backward.
- `GradReverse(weight)`: the module form; `set_weight(w)` per step (e.g. with `ramp_weight`).
- `ramp_weight(step, warmup, ramp, max_weight)`: 0 during warm-up, then rising to max_weight over `ramp` steps.
- `DomainDiscriminator`: feature maps from several segmenter layers -> one domain logit.
MONAI has none of these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn

from medgen.errors import ConfigError
from medgen.networks.init import act_layer, check_spatial_dims, is_batch_norm, norm_layer, to_tuple
from medgen.registry import NETWORKS

__all__ = ["GradientReversal", "GradReverse", "grad_reverse", "ramp_weight", "center_crop", "DomainDiscriminator"]


class GradientReversal(torch.autograd.Function):
    """y = x forward; dL/dx = -weight * dL/dy backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float):
        ctx.weight = float(weight)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return -ctx.weight * grad_output, None


def grad_reverse(x: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    return GradientReversal.apply(x, weight)


class GradReverse(nn.Module):
    """Gradient reversal layer with a weight that can change every step (`set_weight`)."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = float(weight)

    def set_weight(self, weight: float) -> None:
        self.weight = float(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return GradientReversal.apply(x, self.weight)

    def extra_repr(self) -> str:
        return f"weight={self.weight}"


def ramp_weight(step: int, warmup: int, ramp: int, max_weight: float = 1.0, mode: str = "linear") -> float:
    """Adversarial weight schedule: 0 for step < warmup, then rises to max_weight over `ramp` steps and stays.

    mode "linear" (Kamnitsas et al.: alpha raised linearly after a warm-up) or "sigmoid" (Ganin et al.'s
    2 / (1 + exp(-10 p)) - 1 over the ramp, p in [0, 1]). ramp=0 jumps to max_weight after the warm-up.
    """
    if warmup < 0 or ramp < 0:
        raise ConfigError(f"warmup and ramp must be >= 0, got warmup={warmup}, ramp={ramp}")
    if mode not in ("linear", "sigmoid"):
        raise ConfigError(f"ramp mode must be 'linear' or 'sigmoid', got {mode!r}")
    if step < warmup:
        return 0.0
    if ramp == 0:
        return float(max_weight)
    p = min(1.0, (step - warmup) / ramp)
    if mode == "sigmoid":
        p = 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0 if p < 1.0 else 1.0
    return float(max_weight) * p


def center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop the spatial dims of (B, C, *spatial) to `size` around the centre (offset floor((s - t) / 2))."""
    slices = [slice(None), slice(None)]
    for s, t in zip(x.shape[2:], size):
        s, t = int(s), int(t)
        if t > s:
            raise ConfigError(f"cannot crop spatial size {tuple(x.shape[2:])} to the larger {tuple(size)}")
        start = (s - t) // 2
        slices.append(slice(start, start + t))
    return x[tuple(slices)]


class _ResBlock(nn.Module):
    """Pre-activation residual block: x + conv3(act(norm(conv3(act(norm(x))))))."""

    def __init__(self, spatial_dims, channels, norm, act, dropout):
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        layers = [norm_layer(norm, spatial_dims, channels), act_layer(act, channels),
                  conv(channels, channels, 3, padding=1, bias=not is_batch_norm(norm)),
                  norm_layer(norm, spatial_dims, channels), act_layer(act, channels)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(conv(channels, channels, 3, padding=1))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x)


@NETWORKS.register("domain_discriminator")
class DomainDiscriminator(nn.Module):
    """Domain classifier on feature maps tapped from several segmenter layers (Kamnitsas et al. 2017).

    forward(features: list of (B, C_i, *spatial_i)) -> domain logit (B, 1). Each map is centre-cropped
    (resize="crop", default; right for valid-conv nets like DeepMedic whose maps share a centre) or resampled
    (resize="resample", trilinear/bilinear) to `target_size` (None = the smallest size per axis among the
    inputs, at call time), then concatenated on channels. Then: conv3 stem -> for each entry of `channels`
    a residual block (a stride-2 conv3 between entries) -> global average pooling -> Linear -> 1.

    in_channels: sum of the tapped channels (e.g. `sum(DeepMedic.feature_channels)`). None builds the stem as
    a lazy conv that infers it at the first forward: run one batch before creating the optimizer or calling
    `init_weights`.
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int | None = None, channels: Sequence[int] = (64, 64, 128),
                 target_size: int | Sequence[int] | None = None, resize: str = "crop", norm="batch",
                 act=("leakyrelu", {"negative_slope": 0.2}), dropout: float = 0.0):
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if resize not in ("crop", "resample"):
            raise ConfigError(f"resize must be 'crop' or 'resample', got {resize!r}")
        if not channels:
            raise ConfigError("DomainDiscriminator needs at least one entry in channels")
        self.resize = resize
        self.target_size = to_tuple(target_size, spatial_dims, "target_size") if target_size is not None else None
        conv = Conv[Conv.CONV, spatial_dims]
        c0 = channels[0]
        if in_channels is None:
            lazy = {2: nn.LazyConv2d, 3: nn.LazyConv3d}[spatial_dims]
            self.stem = lazy(c0, 3, padding=1)
        else:
            self.stem = conv(in_channels, c0, 3, padding=1)
        stages: list[nn.Module] = []
        cin = c0
        for i, c in enumerate(channels):
            if i > 0:
                stages += [norm_layer(norm, spatial_dims, cin), act_layer(act, cin), conv(cin, c, 3, stride=2, padding=1)]
            stages.append(_ResBlock(spatial_dims, c, norm, act, dropout))
            cin = c
        stages += [norm_layer(norm, spatial_dims, cin), act_layer(act, cin)]
        self.body = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, 1)

    def common_size(self, features: Sequence[torch.Tensor]) -> tuple[int, ...]:
        if self.target_size is not None:
            return self.target_size
        return tuple(min(int(f.shape[2 + d]) for f in features) for d in range(self.spatial_dims))

    def align(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Crop/resample every map to the common size and concatenate them on channels."""
        if isinstance(features, torch.Tensor):
            features = [features]
        if not features:
            raise ConfigError("DomainDiscriminator got an empty feature list")
        for f in features:
            if f.dim() != self.spatial_dims + 2:
                raise ConfigError(f"feature maps must be (B, C, {self.spatial_dims} spatial dims), got {tuple(f.shape)}")
        size = self.common_size(features)
        out = []
        for f in features:
            if tuple(f.shape[2:]) == size:
                out.append(f)
            elif self.resize == "crop":
                out.append(center_crop(f, size))
            else:
                mode = "trilinear" if self.spatial_dims == 3 else "bilinear"
                out.append(F.interpolate(f, size=size, mode=mode, align_corners=False))
        return torch.cat(out, dim=1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        h = self.body(self.stem(self.align(features)))
        h = h.mean(dim=tuple(range(2, h.dim())))
        return self.fc(h)
