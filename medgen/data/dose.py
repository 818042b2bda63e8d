"""Low-dose PET simulation by Poisson thinning of counts, and the PET sidecar parameters it needs.

Why counts: PET noise is Poisson in the detected counts, not in Bq/mL. A scan at dose fraction f (or a
scan f times as long) detects each event of the full scan with probability f, so its counts are a binomial
thinning of the full-dose counts: Binomial(N, f), which is Poisson(f * lambda) when N ~ Poisson(lambda).
Dividing the thinned counts by f gives an image with the same mean activity and 1/f times the count
variance - what a real low-dose reconstruction looks like to first order (a reconstructed voxel is not an
independent Poisson variable; ``sensitivity`` is therefore an *effective* value that sets the noise level).

Count model per voxel (the image is decay-corrected, so the decays that really happened in the frame are
the corrected activity divided by the decay-correction factor):

    counts = activity [Bq/mL] * voxel_volume [mL] * frame_duration [s] * sensitivity [counts/decay]
             / decay_factor
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from medgen.errors import DataError, MedgenError

DEFAULT_FRAME_DURATION_S = 600.0  # a 10 min static brain frame (FDG / amyloid protocols: 5-20 min)
DEFAULT_SENSITIVITY = 1e-3  # effective counts per decay: ~5-7 % voxel noise in phantom grey matter at full dose
DEFAULT_VOXEL_VOLUME_ML = 0.027  # a 3 mm cube, the head phantom's default voxel


def voxel_volume_ml(spacing_mm) -> float:
    """Voxel volume in mL from the voxel sizes in mm (e.g. nibabel's ``header.get_zooms()[:3]``)."""
    return float(np.prod([float(s) for s in list(spacing_mm)[:3]])) / 1000.0


def _check_params(frame_duration_s: float, sensitivity: float, decay_factor: float, voxel_volume: float):
    for name, value in (("frame_duration_s", frame_duration_s), ("sensitivity", sensitivity),
                        ("decay_factor", decay_factor), ("voxel_volume_ml", voxel_volume)):
        if not (isinstance(value, (int, float, np.floating)) and math.isfinite(value) and value > 0):
            raise MedgenError(f"{name} must be a positive finite number, got {value!r}")


def _counts_per_bqml(frame_duration_s, sensitivity, decay_factor, voxel_volume_ml_) -> float:
    _check_params(frame_duration_s, sensitivity, decay_factor, voxel_volume_ml_)
    return float(voxel_volume_ml_) * float(frame_duration_s) * float(sensitivity) / float(decay_factor)


def activity_to_counts(
    activity,
    frame_duration_s: float = DEFAULT_FRAME_DURATION_S,
    sensitivity: float = DEFAULT_SENSITIVITY,
    decay_factor: float = 1.0,
    voxel_volume_ml: float = DEFAULT_VOXEL_VOLUME_ML,
) -> np.ndarray:
    """Expected detected counts per voxel (float64) for an activity image in Bq/mL (negatives -> 0)."""
    k = _counts_per_bqml(frame_duration_s, sensitivity, decay_factor, voxel_volume_ml)
    return np.maximum(np.asarray(activity, dtype=np.float64), 0.0) * k


def counts_to_activity(
    counts,
    frame_duration_s: float = DEFAULT_FRAME_DURATION_S,
    sensitivity: float = DEFAULT_SENSITIVITY,
    decay_factor: float = 1.0,
    voxel_volume_ml: float = DEFAULT_VOXEL_VOLUME_ML,
) -> np.ndarray:
    """Inverse of :func:`activity_to_counts` (float64 Bq/mL)."""
    k = _counts_per_bqml(frame_duration_s, sensitivity, decay_factor, voxel_volume_ml)
    return np.asarray(counts, dtype=np.float64) / k


def _as_rng(rng) -> tuple[np.random.Generator, int | None]:
    if isinstance(rng, np.random.Generator):
        return rng, None
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng)), int(rng)
    raise MedgenError(f"rng must be a numpy Generator or a non-negative integer seed, got {rng!r}")


def _check_fraction(fraction: float) -> float:
    if not (isinstance(fraction, (int, float, np.floating)) and 0.0 < float(fraction) <= 1.0):
        raise MedgenError(f"dose fraction must be in (0, 1], got {fraction!r}")
    return float(fraction)


def _info(fraction, seed, frame_duration_s, sensitivity, decay_factor, voxel_volume, input_is) -> dict:
    return {
        "simulated": True,
        "method": "binomial thinning of Poisson counts",
        "fraction": fraction,
        "seed": seed,
        "input_is": input_is,
        "frame_duration_s": float(frame_duration_s),
        "sensitivity": float(sensitivity),
        "decay_factor": float(decay_factor),
        "voxel_volume_ml": float(voxel_volume),
    }


def simulate_low_dose(
    activity,
    fraction: float,
    rng,
    frame_duration_s: float = DEFAULT_FRAME_DURATION_S,
    sensitivity: float = DEFAULT_SENSITIVITY,
    decay_factor: float = 1.0,
    voxel_volume_ml: float = DEFAULT_VOXEL_VOLUME_ML,
    input_is: str = "measured",
) -> tuple[np.ndarray, dict]:
    """A simulated low-dose image (Bq/mL, float32, same shape) and a JSON-able ``info`` dict.

    Args:
        activity: full-dose image in Bq/mL.
        fraction: dose fraction f in (0, 1] (0.25 = a quarter dose).
        rng: a numpy Generator or an int seed (recorded in ``info["seed"]``; None for a Generator).
        input_is: "measured" (default) when ``activity`` is a real reconstructed full-dose image that
            already carries its own counting noise: its counts N are thinned directly (stochastic rounding
            keeps the mean), so low/f has mean N and the noise a real f-dose scan adds to the full-dose
            one. "expected" when ``activity`` is a noise-free mean (a phantom): full counts are drawn
            N ~ Poisson(lambda) first, then thinned, giving Poisson(f * lambda).

    The result is rescaled by 1/f, so it estimates the same activity as the input (unbiased mean) with
    1/f times the count variance.
    """
    f = _check_fraction(fraction)
    if input_is not in ("measured", "expected"):
        raise MedgenError(f"input_is must be 'measured' or 'expected', got {input_is!r}")
    gen, seed = _as_rng(rng)
    kw = dict(frame_duration_s=frame_duration_s, sensitivity=sensitivity, decay_factor=decay_factor,
              voxel_volume_ml=voxel_volume_ml)
    lam = activity_to_counts(activity, **kw)
    if input_is == "expected":
        full = gen.poisson(lam)
    else:  # stochastic rounding: integer counts whose mean is exactly lam
        base = np.floor(lam)
        full = (base + (gen.random(lam.shape) < (lam - base))).astype(np.int64)
    low = gen.binomial(full, f) if f < 1.0 else full
    out = (counts_to_activity(low, **kw) / f).astype(np.float32)
    return out, _info(f, seed, frame_duration_s, sensitivity, decay_factor, voxel_volume_ml, input_is)


def simulate_dose_pair(
    expected_activity,
    fraction: float,
    rng,
    frame_duration_s: float = DEFAULT_FRAME_DURATION_S,
    sensitivity: float = DEFAULT_SENSITIVITY,
    decay_factor: float = 1.0,
    voxel_volume_ml: float = DEFAULT_VOXEL_VOLUME_ML,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(full_dose, low_dose, info) from a noise-free activity: N ~ Poisson(lambda), low = Binomial(N, f)/f.

    The pair shares its counts, like a list-mode acquisition subsampled to a shorter scan, which is how
    paired low/full-dose studies are often made. Used by the head phantom datasets.
    """
    f = _check_fraction(fraction)
    gen, seed = _as_rng(rng)
    kw = dict(frame_duration_s=frame_duration_s, sensitivity=sensitivity, decay_factor=decay_factor,
              voxel_volume_ml=voxel_volume_ml)
    full = gen.poisson(activity_to_counts(expected_activity, **kw))
    low = gen.binomial(full, f) if f < 1.0 else full
    full_img = counts_to_activity(full, **kw).astype(np.float32)
    low_img = (counts_to_activity(low, **kw) / f).astype(np.float32)
    return full_img, low_img, _info(f, seed, frame_duration_s, sensitivity, decay_factor, voxel_volume_ml,
                                    "expected")


def _first(value):
    """A scalar from a sidecar value that may be a list (one entry per frame)."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def read_pet_sidecar(json_path) -> dict[str, Any]:
    """The dose-simulation parameters of a dcm2niix / BIDS PET sidecar, with clear defaults.

    Returns ``frame_duration_s`` (sum over frames; default 600 s), ``frame_durations_s`` (list or None),
    ``frame_start_s``, ``decay_factor`` (first frame; default 1.0), ``injected_activity_mbq``,
    ``half_life_s``, ``units`` (as written, e.g. "BQML"), ``units_are_bqml``, ``decay_correction``,
    ``radiopharmaceutical``, ``defaults_used`` (keys that fell back to a default) and ``notes``.
    Raises DataError when the file is missing, not JSON or not a JSON object.
    """
    path = Path(json_path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "PET sidecar not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read PET sidecar ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"PET sidecar is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(meta, dict):
        raise DataError(path, "PET sidecar must be a JSON object")

    defaults_used: list[str] = []
    notes: list[str] = []

    def number(key):
        value = meta.get(key)
        values = value if isinstance(value, list) else [value]
        try:
            out = [float(v) for v in values if v is not None]
        except (TypeError, ValueError):
            raise DataError(path, f"'{key}' must be a number or a list of numbers, got {value!r}") from None
        return out or None

    durations = number("FrameDuration")
    if durations and max(durations) > 4 * 3600:  # old dcm2niix wrote milliseconds
        durations = [d / 1000.0 for d in durations]
        notes.append("FrameDuration looked like milliseconds and was divided by 1000")
    if durations:
        frame_duration = float(sum(durations))
    else:
        frame_duration = DEFAULT_FRAME_DURATION_S
        defaults_used.append("frame_duration_s")
    starts = number("FrameTimesStart")
    decay = number("DecayFactor")
    if decay is None:
        defaults_used.append("decay_factor")
    if decay and len(decay) > 1:
        notes.append("several DecayFactor values (one per frame): using the first")

    injected = number("InjectedRadioactivity")
    injected_mbq = None
    if injected:
        injected_mbq = injected[0]
        unit = str(meta.get("InjectedRadioactivityUnits", "MBq"))
        if unit.lower() == "bq" or injected_mbq > 1e5:  # > 100 GBq cannot be MBq: the value is in Bq
            injected_mbq /= 1e6
            if unit.lower() != "bq":
                notes.append(f"InjectedRadioactivity {injected[0]:g} labelled {unit} is read as Bq")
    units = meta.get("Units")
    if units is None:
        defaults_used.append("units")
    units_bqml = str(units or "BQML").replace("/", "").replace(" ", "").upper() in ("BQML", "BQPERML")
    if not units_bqml:
        notes.append(f"image units are {units!r}, not Bq/mL: convert before simulating counts")
    half_life = number("RadionuclideHalfLife")
    return {
        "frame_duration_s": frame_duration,
        "frame_durations_s": durations,
        "frame_start_s": starts[0] if starts else None,
        "decay_factor": decay[0] if decay else 1.0,
        "injected_activity_mbq": injected_mbq,
        "half_life_s": half_life[0] if half_life else None,
        "units": units if units is not None else "BQML",
        "units_are_bqml": units_bqml,
        "decay_correction": _first(meta.get("DecayCorrection")),
        "radiopharmaceutical": _first(meta.get("Radiopharmaceutical")),
        "defaults_used": defaults_used,
        "notes": notes,
    }
