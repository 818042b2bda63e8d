"""A brain mask for skull-stripped MR that comes without one, and a check that the scans are skull-stripped.

The rule (`BRAIN_MASK_RULE`) is the one mr_synthesis uses for its metric mask: the voxels where any input
sequence is above zero, i.e. above the background of a skull-stripped scan (the `mr` intensity preset treats
values <= 0 as background the same way). It is right only for skull-stripped scans: on a whole head the
same voxels are the head, scalp and all, and a lesion segmenter sampled, normalised and applied there learns
and predicts over tissue it was never meant to see. `skull_stripped_problem` says when a derived region cannot
be a brain, from two facts that hold for every adult brain whatever the scanner:

- its volume: adult intracranial volume is about 1.2-1.8 litres (e.g. Buckner et al., NeuroImage 23 (2004)
  724-738, eTIV 1.1-1.9 L), brain tissue less; a region above `MAX_BRAIN_ML` (2,000 ml) is a head, not a brain;
- a flat background: a skull-stripped scan is exactly zero outside the brain; a region covering more than
  `MAX_FOV_FRACTION` of the field of view means there is no such background (a raw scan's noisy air).

Neither can prove a scan is skull-stripped (a tightly cropped raw slab passes both); the docs say so.
"""

from __future__ import annotations

import numpy as np

BRAIN_MASK_RULE = ("the voxels where any input sequence is above zero (the background of a skull-stripped scan), "
                   "as mr_synthesis derives its mask")
MAX_BRAIN_ML = 2000.0  # above any adult intracranial volume (about 1.1-1.9 L)
MAX_FOV_FRACTION = 0.9  # a skull-stripped scan's zero background covers more than a tenth of its field of view


def derive_brain_mask(images, threshold: float = 0.0) -> np.ndarray:
    """Boolean mask (spatial shape): voxels where any of `images` (arrays of one shape, in source units) is above
    `threshold`."""
    arrays = [np.asarray(a) for a in images]
    return np.any(np.stack([a > threshold for a in arrays]), axis=0)


def voxel_volume_ml(affine) -> float:
    """Volume of one voxel in ml from a 4x4 affine (mm)."""
    a = np.asarray(affine, dtype=float)
    return float(abs(np.linalg.det(a[:3, :3]))) / 1000.0


def skull_stripped_problem(mask: np.ndarray, affine=None) -> str | None:
    """Why a mask derived by `BRAIN_MASK_RULE` cannot be a brain (None when it can): more than MAX_BRAIN_ML, or
    more than MAX_FOV_FRACTION of the field of view. Without an affine only the second test is made."""
    m = np.asarray(mask) > 0
    fraction = float(m.mean()) if m.size else 0.0
    if affine is not None:
        volume = float(m.sum()) * voxel_volume_ml(affine)
        if volume > MAX_BRAIN_ML:
            return (f"the voxels above zero make {volume:.0f} ml ({fraction:.0%} of the field of view), more than "
                    f"any brain ({MAX_BRAIN_ML:.0f} ml): the scan does not look skull-stripped")
    if fraction > MAX_FOV_FRACTION:
        return (f"the voxels above zero fill {fraction:.0%} of the field of view (no zero background): the scan "
                "does not look skull-stripped")
    return None
