"""A hallucination check for translated images: do the lesions of the source survive, and does the translation
add lesion-like structures that are not there?

Cycle-consistent and other distribution-matching translations are known to erase or add structures when the
two domains' distributions differ (Cohen, Luck, Honari, "Distribution matching losses can hallucinate features
in medical image translation", MICCAI 2018: tumours removed when the target domain has none). Where the true
target image is known (a held-out paired test case) and the lesions are labelled, `lesion_fidelity` counts
them, lesion by lesion, in the true target's own contrast:

- a true lesion (a connected component of the labels) is judged only where it is *visible* in the true target:
  its mean differs from the mean of the tissue around it (a shell `ring` voxels thick, outside every lesion,
  inside `region`) by at least `min_visibility` standard deviations of that tissue. A lesion the target
  modality does not show (the phantom's white-matter lesions on CT differ by 8 HU) is not counted either way;
- *kept*: in the translated image the lesion differs from its shell in the same direction and by at least
  `keep_fraction` of the true contrast; otherwise *lost*. `lesion_contrast` is the graded version: the
  translated contrast over the true one, averaged over the visible lesions (1 = as in the truth, 0 = erased,
  below 0 = inverted), so a translation that fades lesions shows it before they cross the kept / lost line;
- *invented*: a region outside the (dilated) true lesions where the translated image departs from the truth
  in the lesions' direction by more than `keep_fraction` times their median true contrast, at least 3 voxels
  across (it survives one erosion, so the one-voxel seams of a slightly displaced edge are not counted) and at
  least as large as the smallest visible true lesion. Not computed (NaN) when no lesion is visible.

The rules and thresholds are fixed here, before any model is scored with them (docs/metrics.md conventions).
"""

from __future__ import annotations

import numpy as np

__all__ = ["lesion_fidelity"]


def lesion_fidelity(pred, ref, lesions, region=None, ring: int = 2, keep_fraction: float = 0.5,
                    min_visibility: float = 2.0) -> dict[str, float]:
    """{"lesions_kept", "lesions_lost", "lesions_invented", "lesion_contrast"} of `pred` against the true target
    `ref` (same grid, same units), with `lesions` the true lesion labels (> 0) and `region` where to look (e.g.
    the brain or head mask; everything when None). See the module docstring."""
    from scipy import ndimage

    p, r = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    les = np.asarray(lesions) > 0
    reg = np.ones(r.shape, bool) if region is None else np.asarray(region) > 0
    if p.shape != r.shape or les.shape != r.shape or reg.shape != r.shape:
        raise ValueError(f"lesion_fidelity: shapes differ: pred {p.shape}, ref {r.shape}, lesions {les.shape}, "
                         f"region {reg.shape}")
    full = ndimage.generate_binary_structure(r.ndim, r.ndim)
    labels, _ = ndimage.label(les, structure=full)
    kept = lost = 0
    contrasts, sizes, ratios = [], [], []
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        box = tuple(slice(max(s.start - ring - 1, 0), s.stop + ring + 1) for s in box)
        lesion = labels[box] == k
        shell = ndimage.binary_dilation(lesion, structure=full, iterations=ring) & ~les[box] & reg[box]
        if shell.sum() < 3:
            continue  # no surrounding tissue to judge it against
        c_ref = r[box][lesion].mean() - r[box][shell].mean()
        if abs(c_ref) < min_visibility * r[box][shell].std():
            continue  # the true target does not show it
        c_out = p[box][lesion].mean() - p[box][shell].mean()
        if np.sign(c_out) == np.sign(c_ref) and abs(c_out) >= keep_fraction * abs(c_ref):
            kept += 1
        else:
            lost += 1
        contrasts.append(c_ref)
        sizes.append(int(lesion.sum()))
        ratios.append(c_out / c_ref)
    out = {"lesions_kept": float(kept), "lesions_lost": float(lost), "lesions_invented": float("nan"),
           "lesion_contrast": float(np.mean(ratios)) if ratios else float("nan")}
    if contrasts:
        sign = np.sign(np.median(contrasts))
        threshold = keep_fraction * float(np.median(np.abs(contrasts)))
        near_lesion = ndimage.binary_dilation(les, structure=full, iterations=ring) if les.any() else les
        candidates = (sign * (p - r) > threshold) & reg & ~near_lesion
        core = ndimage.binary_erosion(candidates)  # at least 3 voxels across
        comp, m = ndimage.label(candidates, structure=full)
        if m:
            size = np.bincount(comp.ravel(), minlength=m + 1)
            has_core = np.bincount(comp[core].ravel(), minlength=m + 1) > 0
            big = size >= min(sizes)
            big[0] = False
            out["lesions_invented"] = float((big & has_core).sum())
        else:
            out["lesions_invented"] = 0.0
    return out
