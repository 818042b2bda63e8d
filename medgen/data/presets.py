"""Modality intensity presets with stored inverses, so results are reported in the input's units.

A preset maps an image to the network's range and returns the parameters it used as a plain dict of
floats (plus the preset's name), so they can go into JSON, a checkpoint or a MetaTensor's meta, and
`invert_intensity(y, params)` maps a prediction back to Bq/mL, SUV, HU or the scanner's MR units.

| preset | forward | inverse |
|---|---|---|
| pet   | x / scale; scale = robust high percentile of positive voxels, or dose/weight (-> SUV) | y * scale |
| mr    | robust percentiles [p_lo, p_hi] of the foreground -> [-1, 1], background exactly -1 | linear back; -1 -> background value |
| zscore | (x - mean) / std inside the mask (all voxels without one), no clipping | y * std + mean |
| ct    | HU window [low, high] (default [-1000, 2000]) -> [-1, 1] (clipped by default) | back to HU |
| oct   | input range (uint8 / uint16 / [0, 1] / min-max) -> [0, 1] or [-1, 1] | back to the input range |
| label | unchanged (spatial transforms must use mode="nearest") | unchanged |

MONAI has ScaleIntensityRange(Percentiles)d, but they neither store what they did per image nor
keep an MR background at exactly -1 (which the Ea-GAN Sobel padding assumes), hence these presets.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np

from medgen.errors import ConfigError, DataError, MedgenError

NORM_META_KEY = "medgen_norm"


def _is_torch(x) -> bool:
    try:
        import torch

        return isinstance(x, torch.Tensor)
    except ImportError:  # pragma: no cover
        return False


def _np(x) -> np.ndarray:
    if _is_torch(x):
        x = x.detach()
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
        return x.cpu().numpy()
    return np.asarray(x)


def _float_tensor(x):
    """Floating copy-friendly view of x (float32 unless already float64)."""
    if _is_torch(x):
        return x if x.is_floating_point() else x.float()
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)


def _where(cond, a, b):
    if _is_torch(b):
        import torch

        cond_t = torch.as_tensor(cond, device=b.device)
        return torch.where(cond_t, torch.as_tensor(a, dtype=b.dtype, device=b.device), b)
    return np.where(cond, a, b).astype(np.asarray(b).dtype, copy=False)


def _clip(x, lo, hi):
    return x.clamp(lo, hi) if _is_torch(x) else np.clip(x, lo, hi)


def _param(params: Mapping, key: str) -> float:
    """A stored parameter as a float (accepts 1-element tensors/arrays from collated batches)."""
    if key not in params:
        raise MedgenError(f"normalisation params lack {key!r}: {dict(params)}")
    v = _np(params[key]).reshape(-1)
    if v.size == 0:
        raise MedgenError(f"normalisation param {key!r} is empty")
    if v.size > 1:
        if not np.allclose(v, v[0]):
            raise MedgenError(f"normalisation param {key!r} differs across a batch ({v.tolist()}): "
                              "invert each case on its own (monai.data.decollate_batch)")
    return float(v[0])


def _source_name(meta) -> str | None:
    if meta is None:
        return None
    f = meta.get("filename_or_obj") if hasattr(meta, "get") else None
    return str(f) if f else None


class Preset:
    """Base class: `forward(x, meta=None, mask=None) -> (y, params)`, `inverse(y, params) -> x`."""

    name = "base"

    def forward(self, x, meta: Mapping | None = None, mask=None) -> tuple[Any, dict]:
        raise NotImplementedError

    def inverse(self, y, params: Mapping):
        raise NotImplementedError

    def __call__(self, x, meta=None, mask=None):
        return self.forward(x, meta, mask)

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({items})"


class PETPreset(Preset):
    """Divide by a scale so 0 stays 0 (PET has no negative activity and the background is ~0).

    Without dose information the scale is the `percentile` (default 99.5th) of the positive voxels, a
    robust maximum. With `weight_kg` and `injected_dose_bq` (arguments or meta keys of the same names)
    the output is SUV / `suv_scale`: scale = injected_dose_bq / (weight_kg * 1000) * suv_scale, which
    assumes Bq/mL images and decay-corrected dose. The inverse multiplies by the scale.
    """

    name = "pet"

    def __init__(self, percentile: float = 99.5, weight_kg: float | None = None,
                 injected_dose_bq: float | None = None, suv_scale: float = 1.0):
        if not 0 < percentile <= 100:
            raise ConfigError(f"pet preset percentile must be in (0, 100], got {percentile}")
        self.percentile, self.weight_kg, self.injected_dose_bq, self.suv_scale = \
            float(percentile), weight_kg, injected_dose_bq, float(suv_scale)

    def forward(self, x, meta=None, mask=None):
        weight = self.weight_kg if self.weight_kg is not None else (meta or {}).get("weight_kg")
        dose = self.injected_dose_bq if self.injected_dose_bq is not None else (meta or {}).get("injected_dose_bq")
        x = _float_tensor(x)
        suv_factor = 0.0
        if weight is not None and dose is not None:
            weight, dose = float(_np(weight).reshape(-1)[0]), float(_np(dose).reshape(-1)[0])
            if weight <= 0 or dose <= 0:
                raise ConfigError(f"pet preset needs positive weight_kg and injected_dose_bq, got {weight}, {dose}")
            suv_factor = weight * 1000.0 / dose  # SUV = activity [Bq/mL] * weight [g] / dose [Bq]
            scale = self.suv_scale / suv_factor
        else:
            a = _np(x)
            pos = a[a > 0]
            if pos.size == 0:
                raise DataError(_source_name(meta), "PET image has no positive voxels: cannot scale it")
            scale = float(np.percentile(pos, self.percentile))
        if not np.isfinite(scale) or scale <= 0:
            raise DataError(_source_name(meta), f"PET scale is {scale}: cannot normalise")
        return x / scale, {"preset": self.name, "scale": float(scale), "suv_factor": float(suv_factor)}

    def inverse(self, y, params):
        return _float_tensor(y) * _param(params, "scale")


class MRPreset(Preset):
    """Robust percentile scaling of the foreground to [-1, 1]; background exactly -1.

    Foreground: voxels > `threshold` (default 0: skull-stripped / zero-background data), and inside
    `mask` when one is given. [p_lower, p_upper] (default 0.5th - 99.5th of the foreground) maps to
    [-1, 1], clipped when `clip`. The inverse is the linear map back, with values at -1 (background)
    set to the stored background value, so a foreground voxel at or below p_lower comes back as background:
    that is the price of a hard -1 background.
    """

    name = "mr"

    def __init__(self, lower: float = 0.5, upper: float = 99.5, threshold: float = 0.0, clip: bool = True):
        if not 0 <= lower < upper <= 100:
            raise ConfigError(f"mr preset needs 0 <= lower < upper <= 100, got {lower}, {upper}")
        self.lower, self.upper, self.threshold, self.clip = float(lower), float(upper), float(threshold), clip

    def forward(self, x, meta=None, mask=None):
        x = _float_tensor(x)
        a = _np(x)
        fg = a > self.threshold
        if mask is not None:
            m = _np(mask)
            if m.shape != a.shape and m.shape[-a.ndim + 1:] != a.shape[1:]:
                raise DataError(_source_name(meta), f"mask shape {m.shape} does not match the image shape {a.shape}")
            fg = fg & (np.broadcast_to(m, a.shape) > 0)
        if not fg.any():
            raise DataError(_source_name(meta), f"MR image has no foreground voxels (> {self.threshold} "
                                                "and inside the mask): cannot normalise")
        lo, hi = (float(v) for v in np.percentile(a[fg], [self.lower, self.upper]))
        if hi <= lo:
            hi = lo + 1.0  # constant foreground: map it to -1 rather than divide by zero
        bg = a[~fg]
        background = float(np.median(bg)) if bg.size else 0.0
        y = (x - lo) * (2.0 / (hi - lo)) - 1.0
        if self.clip:
            y = _clip(y, -1.0, 1.0)
        y = _where(~fg, -1.0, y)
        return y, {"preset": self.name, "low": lo, "high": hi, "background": background}

    def inverse(self, y, params):
        lo, hi, bg = _param(params, "low"), _param(params, "high"), _param(params, "background")
        y = _float_tensor(y)
        x = (y + 1.0) * ((hi - lo) / 2.0) + lo
        return _where(_np(y) <= -1.0 + 1e-6, bg, x)


class ZScorePreset(Preset):
    """Per-case z-score: (x - mean) / std, with mean and std taken inside `mask` (all voxels without one),
    applied to the whole image, no clipping (DeepMedic's normalisation; MONAI's NormalizeIntensity with a
    mask). Unlike "mr" it keeps the top tail: hyperintense lesions, often < 1 % of the brain, are exactly
    the voxels that percentile clipping flattens to one value."""

    name = "zscore"

    def forward(self, x, meta=None, mask=None):
        x = _float_tensor(x)
        a = _np(x)
        roi = np.ones(a.shape, bool)
        if mask is not None:
            m = _np(mask)
            if m.shape != a.shape and m.shape[-a.ndim + 1:] != a.shape[1:]:
                raise DataError(_source_name(meta), f"mask shape {m.shape} does not match the image shape {a.shape}")
            roi = np.broadcast_to(m, a.shape) > 0
        vals = a[roi]
        if vals.size == 0:
            raise DataError(_source_name(meta), "empty mask: cannot z-score normalise")
        mean, std = float(vals.mean()), float(vals.std())
        if not (np.isfinite(mean) and np.isfinite(std)):
            raise DataError(_source_name(meta), "non-finite intensities inside the mask: cannot normalise")
        std = std if std > 0 else 1.0
        return (x - mean) / std, {"preset": self.name, "mean": mean, "std": std}

    def inverse(self, y, params):
        return _float_tensor(y) * _param(params, "std") + _param(params, "mean")


class CTPreset(Preset):
    """HU window [low, high] linearly to [-1, 1] (default [-1000, 2000]: air to dense bone).

    With `check_units` the image is first checked to be in Hounsfield units (`medgen.data.ct.check_ct_units`,
    with the case's mask when given): a display-scaled or contrast-stretched CT fails with a clear error
    instead of silently teaching a network wrong HU."""

    name = "ct"

    def __init__(self, low: float = -1000.0, high: float = 2000.0, clip: bool = True, check_units: bool = False):
        if high <= low:
            raise ConfigError(f"ct preset window needs low < high, got [{low}, {high}]")
        self.low, self.high, self.clip, self.check_units = float(low), float(high), clip, check_units

    def forward(self, x, meta=None, mask=None):
        if self.check_units:
            from medgen.data.ct import check_ct_units

            raw = _np(x)[0] if _np(x).ndim == 4 else _np(x)
            m = None if mask is None else (_np(mask)[0] if _np(mask).ndim == 4 else _np(mask)) > 0
            check_ct_units(raw, _source_name(meta), m if m is not None and m.shape == raw.shape else None)
        y = (_float_tensor(x) - self.low) * (2.0 / (self.high - self.low)) - 1.0
        if self.clip:
            y = _clip(y, -1.0, 1.0)
        return y, {"preset": self.name, "low": self.low, "high": self.high}

    def inverse(self, y, params):
        lo, hi = _param(params, "low"), _param(params, "high")
        return (_float_tensor(y) + 1.0) * ((hi - lo) / 2.0) + lo


class OCTPreset(Preset):
    """OCT B-scan to [0, 1] (`out_range=(0, 1)`) or [-1, 1].

    in_range "auto": uint8 -> [0, 255], uint16 -> [0, 65535]; float data already in [0, 1] -> [0, 1];
    integer-valued float data <= 255 (or <= 65535) -> that range; anything else its own min-max.
    """

    name = "oct"

    def __init__(self, out_range: Sequence[float] = (0.0, 1.0), in_range: Sequence[float] | str = "auto"):
        if len(out_range) != 2 or out_range[1] <= out_range[0]:
            raise ConfigError(f"oct preset out_range must be (low, high), got {out_range}")
        self.out_range = (float(out_range[0]), float(out_range[1]))
        if in_range != "auto" and (len(in_range) != 2 or in_range[1] <= in_range[0]):
            raise ConfigError(f"oct preset in_range must be 'auto' or (low, high), got {in_range}")
        self.in_range = in_range

    @staticmethod
    def infer_range(x) -> tuple[float, float]:
        a = _np(x)
        if a.dtype == np.uint8:
            return 0.0, 255.0
        if a.dtype == np.uint16:
            return 0.0, 65535.0
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0 and hi <= 1:
            return 0.0, 1.0
        integer = lo >= 0 and bool(np.all(np.mod(a, 1) == 0))
        if integer and hi <= 255:
            return 0.0, 255.0
        if integer and hi <= 65535:
            return 0.0, 65535.0
        return lo, (hi if hi > lo else lo + 1.0)

    def forward(self, x, meta=None, mask=None):
        lo, hi = self.infer_range(x) if self.in_range == "auto" else (float(self.in_range[0]), float(self.in_range[1]))
        olo, ohi = self.out_range
        y = (_float_tensor(x) - lo) * ((ohi - olo) / (hi - lo)) + olo
        return y, {"preset": self.name, "in_low": lo, "in_high": hi, "out_low": olo, "out_high": ohi}

    def inverse(self, y, params):
        lo, hi = _param(params, "in_low"), _param(params, "in_high")
        olo, ohi = _param(params, "out_low"), _param(params, "out_high")
        return (_float_tensor(y) - olo) * ((hi - lo) / (ohi - olo)) + lo


class LabelPreset(Preset):
    """Label maps are not rescaled; spatial transforms must use mode='nearest' for them."""

    name = "label"

    def forward(self, x, meta=None, mask=None):
        return x, {"preset": self.name}

    def inverse(self, y, params):
        return y


PRESETS: dict[str, type[Preset]] = {p.name: p for p in (PETPreset, MRPreset, ZScorePreset, CTPreset, OCTPreset, LabelPreset)}


def get_preset(name: str | Preset, **kwargs) -> Preset:
    """A preset by name ('pet', 'mr', 'zscore', 'ct', 'oct', 'label') with its options."""
    if isinstance(name, Preset):
        return name
    if name not in PRESETS:
        raise ConfigError(f"unknown intensity preset {name!r}; choose one of {', '.join(PRESETS)}")
    try:
        return PRESETS[name](**kwargs)
    except TypeError as err:
        raise ConfigError(f"bad options for the {name!r} preset: {err}") from err


def invert_intensity(y, params: Mapping):
    """Map a normalised tensor back to the input's units using the params `forward` stored."""
    if params is None or "preset" not in params:
        raise MedgenError("cannot invert intensities: no stored normalisation params (key 'preset' missing)")
    name = params["preset"]
    if isinstance(name, (list, tuple)):
        name = name[0]
    return get_preset(str(name)).inverse(y, params)


def norm_params(x) -> dict | None:
    """The params a `NormalizeIntensityd` stored in a MetaTensor's meta, or None."""
    meta = getattr(x, "meta", None)
    return None if meta is None else meta.get(NORM_META_KEY)


def _monai_map_transform():
    from monai.transforms import MapTransform

    return MapTransform


class NormalizeIntensityd(_monai_map_transform()):
    """MONAI dictionary transform: apply a preset to `keys`, store params in meta['medgen_norm'].

    With `mask_key` the mask restricts the statistics (MR foreground). If the value is not a
    MetaTensor the params go to `data[f"{key}_medgen_norm"]` instead.
    """

    def __init__(self, keys, preset: str | Preset, mask_key: Hashable | None = None,
                 allow_missing_keys: bool = False, **preset_kwargs):
        super().__init__(keys, allow_missing_keys)
        self.preset = get_preset(preset, **preset_kwargs)
        self.mask_key = mask_key

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        mask = d.get(self.mask_key) if self.mask_key is not None else None
        for key in self.key_iterator(d):
            x = d[key]
            meta = getattr(x, "meta", None)
            y, params = self.preset.forward(x, meta, mask)
            if hasattr(y, "meta"):
                y.meta[NORM_META_KEY] = dict(params)
            else:
                d[f"{key}_{NORM_META_KEY}"] = dict(params)
            d[key] = y
        return d


def load_transforms(
    keys: Sequence[str] | None = None,
    image_keys: Sequence[str] = (),
    label_keys: Sequence[str] = (),
    spacing: Sequence[float] | float | None = None,
    orientation: str | None = "RAS",
):
    """The MONAI loading Compose pipelines use: LoadImaged -> EnsureChannelFirstd -> Orientationd ->
    (Spacingd: bilinear for images, nearest for labels).

    keys defaults to image_keys + label_keys; keys in neither list are treated as images. The
    MetaTensors keep their applied operations, so `write_prediction` can map outputs back.
    """
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd

    label_keys = list(label_keys)
    keys = list(keys) if keys is not None else list(image_keys) + label_keys
    if not keys:
        raise ConfigError("load_transforms needs at least one key")
    unknown = [k for k in label_keys if k not in keys]
    if unknown:
        raise ConfigError(f"label keys {unknown} are not among the loaded keys {keys}")
    steps = [LoadImaged(keys, reader="NibabelReader", image_only=True), EnsureChannelFirstd(keys)]
    if orientation:
        steps.append(Orientationd(keys, axcodes=orientation, labels=None))
    if spacing is not None:
        pixdim = tuple(float(s) for s in spacing) if isinstance(spacing, (list, tuple)) else float(spacing)
        modes = ["nearest" if k in label_keys else "bilinear" for k in keys]
        steps.append(Spacingd(keys, pixdim=pixdim, mode=modes))
    return Compose(steps)
