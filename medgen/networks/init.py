"""Weight initialisation and the small layer helpers every block in `medgen.networks` shares.

`init_weights` follows pix2pix/CycleGAN's `init_weights` (the GAN papers' N(0, 0.02) default), so a
network built here starts where the reference code starts. `norm_layer` / `act_layer` wrap MONAI's
`get_norm_layer` / `get_act_layer` with the GAN-code defaults (instance norm without affine parameters,
"none" meaning no layer) so all blocks spell options the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn

from medgen.errors import ConfigError

__all__ = ["init_weights", "norm_layer", "act_layer", "is_batch_norm", "to_tuple", "INIT_SCHEMES"]

INIT_SCHEMES = ("normal", "xavier", "kaiming", "orthogonal")

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)


def init_weights(net: nn.Module, scheme: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise conv / transposed-conv / linear weights in place and return `net`.

    schemes (as pix2pix's `init_weights`): "normal" N(0, gain) (gain 0.02 = the DCGAN/pix2pix default),
    "xavier" (xavier_normal with `gain`), "kaiming" (kaiming_normal, fan_in, a=0; `gain` unused),
    "orthogonal" (with `gain`). Biases are set to 0. Norm layers with affine parameters get weight
    N(1, 0.02) and bias 0. Lazy layers must be materialised (one forward) first.
    """
    if scheme not in INIT_SCHEMES:
        raise ConfigError(f"unknown init scheme '{scheme}'; choose one of {', '.join(INIT_SCHEMES)}")

    for module in net.modules():
        if isinstance(module, nn.modules.lazy.LazyModuleMixin) and module.has_uninitialized_params():
            raise ConfigError(
                f"cannot initialise {type(module).__name__} before its shape is known: run one forward pass first"
            )
        if isinstance(module, _NORM_TYPES):
            if getattr(module, "weight", None) is not None:
                nn.init.normal_(module.weight, 1.0, 0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            w = module.weight
            if scheme == "normal":
                nn.init.normal_(w, 0.0, gain)
            elif scheme == "xavier":
                nn.init.xavier_normal_(w, gain=gain)
            elif scheme == "kaiming":
                nn.init.kaiming_normal_(w, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(w, gain=gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return net


def _norm_name(norm) -> str | None:
    if norm is None:
        return None
    name = norm[0] if isinstance(norm, (tuple, list)) else norm
    if not isinstance(name, str):
        raise ConfigError(f"norm must be a name like 'batch' or 'instance' (or a (name, kwargs) tuple), got {norm!r}")
    name = name.lower()
    return None if name in ("none", "", "identity") else name


def is_batch_norm(norm) -> bool:
    """True when `norm` names batch norm (then the preceding conv needs no bias)."""
    return _norm_name(norm) in ("batch", "syncbatch")


def norm_layer(norm, spatial_dims: int, channels: int) -> nn.Module:
    """A norm layer from a name or MONAI (name, kwargs) tuple; "none"/None gives nn.Identity.

    "instance" defaults to affine=False, track_running_stats=False (pix2pix's choice), unlike MONAI's
    ("instance", {"affine": True}); pass a tuple to get MONAI's behaviour. "layer" means GroupNorm(1, C):
    normalisation over (C, *spatial) with per-channel affine, which works for any spatial size (torch's
    LayerNorm needs the spatial shape up front).
    """
    name = _norm_name(norm)
    if name is None:
        return nn.Identity()
    kwargs = dict(norm[1]) if isinstance(norm, (tuple, list)) and len(norm) > 1 else {}
    if name == "layer":
        return nn.GroupNorm(1, channels, affine=kwargs.get("affine", True), eps=kwargs.get("eps", 1e-5))
    if name == "instance":
        kwargs.setdefault("affine", False)
    try:
        return get_norm_layer((name, kwargs), spatial_dims=spatial_dims, channels=channels)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"unknown or bad norm {norm!r}: {exc}") from None


def act_layer(act, channels: int | None = None) -> nn.Module:
    """An activation from a name or MONAI (name, kwargs) tuple; "none"/None gives nn.Identity.

    "prelu" gets one slope per channel when `channels` is given (DeepMedic's PReLU), MONAI's default is one.
    """
    if act is None:
        return nn.Identity()
    name = act[0] if isinstance(act, (tuple, list)) else act
    if not isinstance(name, str):
        raise ConfigError(f"act must be a name like 'relu' (or a (name, kwargs) tuple), got {act!r}")
    name = name.lower()
    if name in ("none", "", "linear", "identity"):
        return nn.Identity()
    kwargs = dict(act[1]) if isinstance(act, (tuple, list)) and len(act) > 1 else {}
    if name == "leakyrelu":
        kwargs.setdefault("negative_slope", 0.2)
    if name == "prelu" and channels is not None:
        kwargs.setdefault("num_parameters", channels)
    try:
        return get_act_layer((name, kwargs))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"unknown or bad activation {act!r}: {exc}") from None


def to_tuple(value, spatial_dims: int, what: str = "size") -> tuple[int, ...]:
    """An int or a sequence of `spatial_dims` ints as a tuple of ints."""
    if isinstance(value, torch.Size):
        value = tuple(value)
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return (int(value),) * spatial_dims
    if isinstance(value, Sequence) and len(value) == spatial_dims and all(isinstance(v, int) for v in value):
        return tuple(int(v) for v in value)
    raise ConfigError(f"{what} must be an int or {spatial_dims} ints, got {value!r}")


def check_spatial_dims(spatial_dims: int, allowed: tuple[int, ...] = (2, 3)) -> int:
    if spatial_dims not in allowed:
        raise ConfigError(f"spatial_dims must be one of {allowed}, got {spatial_dims!r}")
    return spatial_dims


def log2_int(n: int) -> int | None:
    """log2(n) when n is a positive power of two, else None."""
    if n <= 0 or n & (n - 1):
        return None
    return int(math.log2(n))
