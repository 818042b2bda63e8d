"""CT data: checking that a CT is really in Hounsfield units, converting the Clinical toolbox's "Cormack" CT
templates back to HU, a head mask from a CT, and a paired MR / CT dataset from your own NIfTI files.

Why here: users of the reference code (medSynthesis) mostly struggle with cutting paired patches from their
own NIfTI and with outputs that are not in HU. medgen never cuts patches to disk: a `dataset.json` that lists
co-registered `mr` / `ct` (/ `mask`) files per case is all it needs, and `write_paired_dataset` writes one
(with a head mask from the CT when you have none) after checking grids and units.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from medgen.errors import ConfigError, DataError
from medgen.files import atomic_write



# ----- units ---------------------------------------------------------------------------------------------
def check_ct_units(ct: np.ndarray, path=None, head_mask: np.ndarray | None = None) -> None:
    """Raise DataError unless `ct` looks like Hounsfield units.

    A head CT in HU has air near -1000 (outside the head, sinuses) and bone above +300; its voxel values
    are never all >= 0. Display-scaled (0-255), contrast-stretched ("Cormack", 0-~3800) or
    min-shifted (air = 0) CTs fail here instead of silently teaching the network wrong HU.
    """
    a = np.asarray(ct, dtype=np.float32)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        raise DataError(path, "CT has no finite voxels")
    lo, hi = float(np.percentile(finite, 0.5)), float(np.percentile(finite, 99.9))
    if lo > -500.0:
        hint = ""
        if finite.min() >= 0 and finite.max() > 2500:
            hint = (" The range (0 to %.0f) looks like Cormack units (Clinical toolbox templates): convert with "
                    "medgen.data.ct.cormack_to_hu." % finite.max())
        elif finite.min() >= 0 and finite.max() <= 255:
            hint = " The range 0-255 looks display-scaled (8-bit): use the original DICOM-derived CT."
        elif finite.min() >= 0:
            hint = " If air is stored as 0, subtract the scanner's offset (usually 1024) or set the NIfTI intercept."
        raise DataError(path, f"CT does not look like Hounsfield units: 0.5th percentile {lo:.0f} (air should be "
                              f"near -1000), 99.9th percentile {hi:.0f}.{hint}")
    if head_mask is not None and np.any(head_mask):
        inside = a[np.asarray(head_mask) > 0]
        if float(np.percentile(inside, 99)) < 100.0:
            raise DataError(path, "CT has no voxel above 100 HU inside the mask (no bone): is it in HU and "
                                  "is the mask the head (not the brain)?")


def cormack_to_hu(c: np.ndarray) -> np.ndarray:
    """Invert the Clinical toolbox's HU -> "Cormack" stretch (Rorden; clinical_h2c / clinical_c2h).

    Cormack units shift air to 0 and stretch the brain range 11-fold: c <= 900 is HU + 1024; 900 < c <= 3100
    holds -124..+76 HU at 11 units per HU; above 3100, c - 2000 = HU + 1024. The SPM/Clinical `scct` CT
    templates of SPM's Clinical toolbox are stored this way (values 0-3794), so they are NOT in HU.
    """
    c = np.asarray(c, dtype=np.float32)
    dark, mid, ratio = 900.0, 200.0, 10.0  # clinical_cormack(): kUninterestingDarkUnits, kInterestingMidUnits
    k_max = mid * (ratio + 1.0)  # 2200
    x = c - dark
    v = np.where(x <= 0, x, np.where(x <= k_max, x / (ratio + 1.0), x - k_max + mid))
    return (v + dark - 1024.0).astype(np.float32)


# ----- building a dataset from your own files ------------------------------------------------------------
def _load(path):
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise DataError(path, "file does not exist")
    try:
        img = nib.load(str(path))
        return img, np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as err:  # nibabel raises many types for broken files
        raise DataError(path, f"cannot read the image ({type(err).__name__}: {err})") from err


def head_mask_from_ct(ct_hu: np.ndarray, threshold_hu: float = -500.0) -> np.ndarray:
    """Head mask: the largest connected region above `threshold_hu`, holes filled slice by slice and in 3D."""
    from scipy import ndimage

    fg = np.asarray(ct_hu) > threshold_hu
    labels, n = ndimage.label(fg)
    if n == 0:
        return fg.astype(np.uint8)
    sizes = ndimage.sum(fg, labels, index=range(1, n + 1))
    mask = labels == (int(np.argmax(sizes)) + 1)
    mask = ndimage.binary_closing(mask, iterations=2)
    mask = ndimage.binary_fill_holes(mask)
    for k in range(mask.shape[2]):
        mask[..., k] = ndimage.binary_fill_holes(mask[..., k])
    return mask.astype(np.uint8)


def write_paired_dataset(pairs: Sequence[dict], out_dir, splits: dict[str, Sequence[str]] | None = None,
                         val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
                         mask_threshold_hu: float = -500.0, name: str = "mr_to_ct_paired") -> Path:
    """Write `out_dir/dataset.json` for co-registered MR / CT pairs; returns its path.

    pairs: [{"id": ..., "mr": path, "ct": path, "mask": path (optional)}]. Each CT must be in HU and on the
    MR's voxel grid (same shape and affine; resample it first, e.g. SynthRAD2023 already provides this).
    Cases without a mask get `out_dir/<id>_mask.nii.gz` from the CT (> mask_threshold_hu, largest
    component, holes filled). splits: {"training": [ids], "validation": [...], "test": [...]} or None for
    a seeded random split by case (never by patch, so no subject is in two splits).
    """
    import nibabel as nib

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not pairs:
        raise ConfigError("write_paired_dataset needs at least one pair")
    cases = []
    for n, pair in enumerate(pairs):
        cid = str(pair.get("id", f"case{n:03d}"))
        for key in ("mr", "ct"):
            if key not in pair:
                raise ConfigError(f"pair {cid!r} has no {key!r} path (keys: {', '.join(pair)})")
        mr_img, _ = _load(pair["mr"])
        ct_img, ct = _load(pair["ct"])
        if mr_img.shape[:3] != ct_img.shape[:3] or not np.allclose(mr_img.affine, ct_img.affine, atol=1e-3):
            raise DataError(pair["ct"], f"CT grid {ct_img.shape} differs from the MR grid {mr_img.shape} of "
                                        f"{pair['mr']} (shape or affine): register and resample the CT onto the MR first")
        check_ct_units(ct, pair["ct"])
        case = {"id": cid, "mr": str(Path(pair["mr"]).resolve()), "ct": str(Path(pair["ct"]).resolve())}
        if pair.get("mask"):
            case["mask"] = str(Path(pair["mask"]).resolve())
        else:
            mask_path = out_dir / f"{cid}_mask.nii.gz"
            img = nib.Nifti1Image(head_mask_from_ct(ct, mask_threshold_hu), ct_img.affine)
            img.set_data_dtype(np.uint8)
            atomic_write(mask_path, lambda tmp, img=img: nib.save(img, str(tmp)), fsync=False)
            case["mask"] = mask_path.name
        cases.append(case)
    ids = [c["id"] for c in cases]
    if splits is None:
        rng = np.random.default_rng(seed)
        order = [ids[i] for i in rng.permutation(len(ids))]
        n_test = int(round(test_fraction * len(ids))) if len(ids) > 2 else 0
        n_val = max(1 if len(ids) > 2 else 0, int(round(val_fraction * len(ids))))
        splits = {"test": order[:n_test], "validation": order[n_test:n_test + n_val],
                  "training": order[n_test + n_val:]}
    by_id = {c["id"]: c for c in cases}
    unknown = [i for s in splits.values() for i in s if i not in by_id]
    if unknown:
        raise ConfigError(f"splits name unknown case ids {unknown}")
    data = {"name": name, "description": "paired MR / CT (HU) written by medgen.data.ct",
            "keys": {"mr": "image", "ct": "image", "mask": "label"},
            **{s: [by_id[i] for i in splits.get(s, [])] for s in ("training", "validation", "test")}}
    return atomic_write(out_dir / "dataset.json", json.dumps(data, indent=1))
