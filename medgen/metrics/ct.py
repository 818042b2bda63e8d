"""Synthetic-CT metrics in Hounsfield units (Nie et al. 2017 report MAE and PSNR): MAE / PSNR / SSIM inside
the head mask with a fixed HU range, bone Dice, and MAE per reference tissue region."""

from __future__ import annotations

import numpy as np

__all__ = ["ct_metrics", "AIR_BELOW_HU", "BONE_ABOVE_HU"]

# Reference-CT regions for the per-region MAE (HU); bone also defines the bone Dice.
AIR_BELOW_HU = -400.0  # ours: air / sinus below -400 HU (a common split between air and fat/soft tissue)
BONE_ABOVE_HU = 250.0  # ours: bone above 250 HU (cortical and dense trabecular bone)


def ct_metrics(pred_hu: np.ndarray, ref_hu: np.ndarray, mask: np.ndarray | None, data_range: float = 3000.0,
               bone_hu: float = BONE_ABOVE_HU, air_hu: float = AIR_BELOW_HU, region_margin: int = 2) -> dict:
    """MAE / PSNR / SSIM inside `mask` (HU; PSNR and SSIM with the fixed `data_range`, default the
    [-1000, 2000] HU window), bone Dice (> bone_hu) inside the mask, and MAE per reference region (air
    < air_hu, soft tissue, bone > bone_hu) inside the mask dilated by `region_margin` voxels, so the air
    just outside the skin, where synthesis errors at the head boundary show, is counted."""
    from scipy import ndimage

    from medgen.metrics import dice, image_metrics

    p = np.asarray(pred_hu, dtype=np.float64)
    r = np.asarray(ref_hu, dtype=np.float64)
    m = np.ones(r.shape, bool) if mask is None else np.asarray(mask) > 0
    base = image_metrics(p, r, data_range=data_range, mask=m)
    out = {"mae": base["mae"], "psnr": base["psnr"], "ssim": base["ssim"]}
    ref_bone, pred_bone = (r > bone_hu) & m, (p > bone_hu) & m
    out["bone_dice"] = float(dice(pred_bone, ref_bone)) if ref_bone.any() or pred_bone.any() else float("nan")
    region = ndimage.binary_dilation(m, iterations=region_margin) if region_margin > 0 else m
    err = np.abs(p - r)
    for name, sel in (("air", r < air_hu), ("soft", (r >= air_hu) & (r <= bone_hu)), ("bone", r > bone_hu)):
        sel = sel & region
        out[f"mae_{name}"] = float(err[sel].mean()) if sel.any() else float("nan")
    return out
