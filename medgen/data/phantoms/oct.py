"""A procedural retinal OCT B-scan: layered retina with a foveal pit, speckle, optional anomalies.

Why: the anomaly-detection pipeline (AnoGAN / f-AnoGAN) trains on normal B-scans only and is scored on
normal vs abnormal ones; the phantom gives both, with pixel masks of the anomalies, and no download.
Rows are depth (axial, top = vitreous), columns are the lateral scan direction.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from medgen.errors import MedgenError

ANOMALIES = {
    "fluid": "dark intraretinal cysts in the inner/outer nuclear layers",
    "drusen": "dome-shaped deposits under the RPE that elevate it",
    "foci": "small hyperreflective dots in the nuclear layers",
}
# Layers from the inner limiting membrane down: (name, thickness in px at 256 rows, reflectivity).
LAYERS = (
    ("RNFL", 7.0, 0.72),
    ("GCL", 9.0, 0.38),
    ("IPL", 7.0, 0.55),
    ("INL", 7.0, 0.26),
    ("OPL", 5.0, 0.50),
    ("ONL", 14.0, 0.17),
    ("ELM", 2.0, 0.42),
    ("MZ", 3.0, 0.22),
    ("EZ", 3.0, 0.80),
    ("IZ", 2.0, 0.35),
    ("RPE", 4.0, 0.95),
)
_INNER = {"RNFL", "GCL", "IPL", "INL", "OPL"}  # thinned in the foveal pit
VITREOUS, CHOROID = 0.04, 0.55


def _smooth_1d(rng: np.random.Generator, n: int, length: float) -> np.ndarray:
    """Unit-std smooth 1D random curve with correlation length ``length`` (in samples)."""
    x = ndimage.gaussian_filter1d(rng.standard_normal(n + int(6 * length)), length, mode="wrap")
    x = x[int(3 * length): int(3 * length) + n]
    return x / max(float(x.std()), 1e-6)


def make_oct_bscan(seed: int, shape: Sequence[int] = (256, 256), anomalies: Sequence[str] = ()) -> dict:
    """One B-scan: ``image`` float32 in [0, 1] (H, W), ``mask`` uint8 anomaly mask, ``retina_mask`` uint8.

    ``anomalies`` is any of "fluid", "drusen", "foci" (a list; repeats are ignored). The normal anatomy of
    a seed is the same with or without anomalies, so ``image`` differs from the normal scan of the same
    seed mostly where ``mask`` is set (the speckle draw is shared too).
    """
    if int(seed) != seed or seed < 0:
        raise MedgenError(f"phantom seed must be a non-negative integer, got {seed!r}")
    if len(shape) != 2 or min(shape) < 32:
        raise MedgenError(f"OCT B-scan shape must be (H, W) with both at least 32, got {tuple(shape)}")
    unknown = sorted(set(anomalies) - set(ANOMALIES))
    if unknown:
        raise MedgenError(f"unknown OCT anomalies {unknown}; choose from {sorted(ANOMALIES)}")
    H, W = int(shape[0]), int(shape[1])
    sy = H / 256.0  # layer geometry scales with the number of rows
    rng = np.random.default_rng([int(seed), 11])
    x = np.arange(W, dtype=np.float64)
    xn = (x - (W - 1) / 2.0) / W  # -0.5 .. 0.5

    # Bruch's membrane: a curved, tilted, gently wavy surface. Layers stack upwards from it; the inner
    # layers thin in the foveal pit, so the inner limiting membrane (top) dips there.
    fovea = rng.uniform(0.38, 0.62) * W
    pit_w = rng.uniform(0.06, 0.1) * W
    pit = np.exp(-0.5 * ((x - fovea) / pit_w) ** 2)
    bruch = (rng.uniform(0.5, 0.62) * H + rng.uniform(-0.08, 0.08) * H * xn * 2
             - rng.uniform(0.1, 0.4) * H * xn ** 2 + 2.0 * sy * _smooth_1d(rng, W, W / 8))
    thick_scale = rng.uniform(0.85, 1.15)
    layer_vals = np.array([v for _, _, v in LAYERS]) * rng.normal(1.0, 0.05, len(LAYERS))
    thick = []
    for name, t, _ in LAYERS:
        th = t * sy * thick_scale * (1.0 + 0.08 * _smooth_1d(rng, W, W / 6))
        if name in _INNER:
            th = th * (1.0 - 0.92 * pit)
        if name == "RNFL":  # thicker on the nasal side
            th = th * (1.0 + 0.5 * np.clip(xn * 2, 0, 1))
        if name == "ONL":
            th = th * (1.0 + 0.35 * pit)
        thick.append(th)
    thick = np.array(thick)  # (n_layers, W)
    below_sum = np.cumsum(thick[::-1], axis=0)[::-1] - thick  # thickness of the layers under each one
    bounds = bruch[None, :] - below_sum  # bottom of each layer
    top = bruch - thick.sum(axis=0)

    # Drusen elevate the outer layers (EZ..RPE) by dome-shaped bumps: material fills the gap.
    elev = np.zeros(W)
    want = list(dict.fromkeys(anomalies))
    rng_an = np.random.default_rng([int(seed), 12])
    if "drusen" in want:
        for _ in range(int(rng_an.integers(1, 4))):
            c = rng_an.uniform(0.15, 0.85) * W
            w = rng_an.uniform(0.025, 0.06) * W
            h = rng_an.uniform(4.0, 10.0) * sy
            elev = np.maximum(elev, h * np.clip(1.0 - ((x - c) / w) ** 2, 0.0, None) ** 0.7)
    onl_i = [n for n, _, _ in LAYERS].index("ONL")
    for i in range(onl_i, len(LAYERS)):  # the ONL is squeezed, everything below it is lifted
        bounds[i] = bounds[i] - elev
    bounds[onl_i] = np.maximum(bounds[onl_i], bounds[onl_i - 1] + 1.0)

    rows = np.arange(H, dtype=np.float64)[:, None]
    # Soft layer edges (0.5 px) anti-alias the boundaries.
    img = np.full((H, W), VITREOUS)
    prev = top[None, :]
    for i in range(len(LAYERS)):
        upper = np.clip(rows - prev + 0.5, 0.0, 1.0)
        lower = np.clip(bounds[i][None, :] - rows + 0.5, 0.0, 1.0)
        img = img + np.minimum(upper, lower) * (layer_vals[i] - VITREOUS)
        prev = bounds[i][None, :]
    retina = (rows >= top[None, :]) & (rows < bruch[None, :])

    # Choroid below Bruch's membrane: bright, vessel-textured, fading with depth; sclera darker still.
    depth = rows - bruch[None, :]
    vessels = ndimage.gaussian_filter(rng.standard_normal((H, W)), (2.5 * sy, 4.0))
    vessels /= max(float(vessels.std()), 1e-6)
    chor = CHOROID * np.exp(-np.clip(depth, 0, None) / (45.0 * sy)) * (1.0 + 0.35 * np.clip(vessels, -2, 2))
    below = depth > 0
    img = np.where(below, np.clip(chor, 0.03, 1.0), img)

    mask = np.zeros((H, W), dtype=bool)
    drusen = (rows >= bruch[None, :] - elev[None, :] + 0.5) & (rows < bruch[None, :]) & (elev[None, :] > 0.5)
    img = np.where(drusen, 0.5, img)
    mask |= drusen
    inl_top, onl_bot = bounds[onl_i - 3], bounds[onl_i]
    if "fluid" in want:
        for _ in range(int(rng_an.integers(1, 4))):
            cx = rng_an.uniform(0.12, 0.88) * W
            xi = int(np.clip(cx, 0, W - 1))
            cy = rng_an.uniform(0.35, 0.7) * (onl_bot[xi] - inl_top[xi]) + inl_top[xi]
            ry, rx = rng_an.uniform(3.0, 8.0) * sy, rng_an.uniform(5.0, 14.0) * W / 256.0
            cyst = ((rows - cy) / ry) ** 2 + ((x[None, :] - cx) / rx) ** 2 <= 1.0
            cyst &= retina
            img = np.where(cyst, 0.02, img)
            mask |= cyst
    if "foci" in want:
        for _ in range(int(rng_an.integers(3, 9))):
            cx = rng_an.uniform(0.1, 0.9) * W
            xi = int(np.clip(cx, 0, W - 1))
            cy = rng_an.uniform(0.1, 0.9) * (onl_bot[xi] - inl_top[xi]) + inl_top[xi]
            r = rng_an.uniform(1.2, 2.5) * max(sy, 0.5)
            dot = ((rows - cy) ** 2 + (x[None, :] - cx) ** 2) <= r * r
            img = np.where(dot, 0.95, img)
            mask |= dot

    # Speckle: multiplicative gamma noise (mean 1), slight optical blur, additive detector noise.
    looks = rng.uniform(3.0, 5.0)
    speckle = rng.gamma(looks, 1.0 / looks, (H, W))
    img = ndimage.gaussian_filter(img * speckle, 0.6)
    img = img + rng.normal(0.0, 0.015, (H, W))
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    return {"image": img, "mask": mask.astype(np.uint8), "retina_mask": retina.astype(np.uint8)}
