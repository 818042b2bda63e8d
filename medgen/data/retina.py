"""The retina band of an OCT B-scan: where the tissue lies between the vitreous and the fading choroid.

Anomaly detectors trained on normal anatomy (oct_anogan) draw their training patches inside this band and
score only patches centred in it, so that the black vitreous and the noise below the choroid neither
dominate training nor produce false alarms (AnoGAN and f-AnoGAN, Schlegl et al. 2017 / 2019, learn from
patches of the retina). No learning here: smoothing, Otsu's threshold, morphology (scipy.ndimage,
scikit-image).
"""

from __future__ import annotations

import numpy as np

from medgen.errors import MedgenError


def detect_depth_axis(image: np.ndarray, sigma: float = 2.0) -> int:
    """The depth (A-scan) axis of a B-scan: 0 for rows, 1 for columns.

    Retinal layers run along the lateral axis, so after light smoothing the intensity changes much more
    along depth than across it. Conventionally depth is the rows, but NIfTI B-scans are often stored
    transposed (public OCT B-scans in NIfTI are), hence the check.
    """
    from scipy import ndimage

    s = ndimage.gaussian_filter(np.asarray(image, np.float32), sigma)
    g0 = float(np.abs(np.diff(s, axis=0)).mean())
    g1 = float(np.abs(np.diff(s, axis=1)).mean())
    return 0 if g0 >= g1 else 1


def retina_band(image: np.ndarray, depth_axis: int | str = "auto", smooth: float = 0.012,
                closing: float = 0.03, min_component: float = 0.2) -> np.ndarray:
    """Boolean mask of the retina band (tissue between the vitreous and the fading choroid) of one B-scan.

    How (all sizes relative to the larger image side, so any resolution works):
    1. robust rescale (1st-99th percentile) and Gaussian smoothing (sigma `smooth`), which averages the
       speckle away;
    2. Otsu threshold: bright tissue (retina layers, RPE, upper choroid) vs the dark vitreous, the dark
       deep choroid / sclera and any black padding;
    3. morphological closing (disk of radius `closing`) bridges dark layers (ONL) and dark cysts, then
       connected components smaller than `min_component` of the largest are dropped (floaters, text);
    4. along every A-scan (the depth axis, detected by `detect_depth_axis` when "auto"), everything
       between the first and the last tissue pixel belongs to the band, so dark fluid inside the retina
       is always inside it.
    Give it the B-scan as stored (values before any normalisation).
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu
    from skimage.morphology import disk

    img = np.asarray(image, np.float32)
    if img.ndim != 2:
        raise MedgenError(f"retina_band expects a 2D B-scan, got shape {img.shape}")
    size = max(img.shape)
    lo, hi = np.percentile(img, [1.0, 99.0])
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    s = ndimage.gaussian_filter(img, max(smooth * size, 0.5))
    if float(s.max() - s.min()) < 1e-6:
        return np.ones(img.shape, bool)  # a constant image has no band: everything is a candidate
    fg = s > threshold_otsu(s)
    radius = max(1, int(round(closing * size)))
    pad = radius + 1
    fg = ndimage.binary_closing(np.pad(fg, pad), structure=disk(radius))[pad:-pad, pad:-pad]
    labels, n = ndimage.label(fg)
    if n > 1:
        sizes = ndimage.sum(fg, labels, index=np.arange(1, n + 1))
        keep = np.flatnonzero(sizes >= min_component * sizes.max()) + 1
        fg = np.isin(labels, keep)
    axis = detect_depth_axis(img) if depth_axis in ("auto", -1, None) else int(depth_axis)
    if axis not in (0, 1):
        raise MedgenError(f"depth_axis must be 'auto', 0 or 1, got {depth_axis!r}")
    d = np.moveaxis(fg, axis, 0)
    has = d.any(axis=0)
    first = np.argmax(d, axis=0)
    last = d.shape[0] - 1 - np.argmax(d[::-1], axis=0)
    rows = np.arange(d.shape[0])[:, None]
    band = (rows >= first[None]) & (rows <= last[None]) & has[None]
    band = np.moveaxis(band, 0, axis)
    if not band.any():
        return np.ones(img.shape, bool)
    return band
