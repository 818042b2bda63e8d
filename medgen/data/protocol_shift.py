"""`protocol_shift`: a documented, constructed scanner / protocol change that turns one site's MR images into a
second domain (contrast, bias field, noise, through-plane resolution), for domain-adaptation benchmarks where
only one acquisition per patient exists. Geometry and lesions are unchanged, so the original labels stay valid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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
