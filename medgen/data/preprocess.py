"""`medgen preprocess`: the preprocessing the benchmarks apply to real scans, as a command on any dataset.

A new dataset folder is written beside the source (never over it): every case's images and label maps resampled
to a common voxel size, optionally cropped to the bounding box of one key, and optionally given a brain mask
derived by the rule lesion_uda and mr_synthesis use (`medgen.data.brain_mask`); dataset.json keeps the ids,
splits and plain fields, and records what was done under "preprocessing".

Resampling, per case, on the grid of its first image key:
- "linear" (default): a grid of exactly `spacing` mm with the same orientation and the same first voxel centre,
  images by trilinear interpolation, label maps by nearest neighbour (`scipy.ndimage.affine_transform`);
- "block": integer block averages (factor = spacing / voxel size, which must be a whole number on every axis):
  images by their mean, label maps by the majority label of the block (a binary map: block mean >= 0.5), the
  new voxel centred on its block. The lesion_uda benchmark's 3 mm copies of 1 mm scans are made this way.

What each benchmark used (docs/datasets.md, "medgen preprocess"):
- lesion_uda: `--spacing 3 --method block --brain-mask brain_mask` (benchmarks/lesion_uda.py; its masks took
  the voxels where both T1 and FLAIR were above 1e-3: `--mask-rule all --mask-threshold 1e-3`);
- mr_synthesis: `--crop-to t1 --spacing 2 --method linear` (benchmarks/mr_synthesis.py, which cropped with a
  2-voxel margin and let the pipeline derive the brain mask).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from medgen.errors import DataError, MedgenError

METHODS = ("linear", "block")


def _spacing(affine) -> np.ndarray:
    return np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(0))


def crop_box(array: np.ndarray, margin: int = 2) -> tuple[slice, ...]:
    """The bounding box of the voxels above zero, widened by `margin` voxels (clipped to the volume)."""
    nz = np.argwhere(array > 0)
    if nz.size == 0:
        raise ValueError("no voxel above zero to crop to")
    lo = np.maximum(nz.min(0) - margin, 0)
    hi = np.minimum(nz.max(0) + 1 + margin, array.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def crop_affine(affine: np.ndarray, box: Sequence[slice]) -> np.ndarray:
    out = np.array(affine, dtype=float)
    out[:3, 3] = out[:3, :3] @ np.array([b.start for b in box], dtype=float) + out[:3, 3]
    return out


def resample_linear(array: np.ndarray, affine: np.ndarray, spacing: float, label: bool) -> tuple[np.ndarray, np.ndarray]:
    """`array` on a grid of `spacing` mm (same axes and first voxel centre); trilinear, or nearest for labels."""
    from scipy import ndimage

    old = _spacing(affine)
    step = spacing / old  # input voxels per output voxel, per axis
    shape = tuple(int(np.floor((n - 1) / s)) + 1 for n, s in zip(array.shape, step))
    out = ndimage.affine_transform(np.asarray(array, dtype=np.float32), np.diag(step), output_shape=shape,
                                   order=0 if label else 1, mode="nearest")
    new = np.array(affine, dtype=float)
    new[:3, :3] = new[:3, :3] * step
    return out, new


def resample_block(array: np.ndarray, affine: np.ndarray, spacing: float, label: bool) -> tuple[np.ndarray, np.ndarray]:
    """Integer block averages (images) or block majorities (label maps); the new voxel centred on its block."""
    old = _spacing(affine)
    factors = spacing / old
    f = np.rint(factors).astype(int)
    if np.any(np.abs(factors - f) > 1e-3) or np.any(f < 1):
        raise MedgenError(f"--method block needs a whole-number factor on every axis: {spacing} mm over voxels of "
                          f"{np.round(old, 4).tolist()} mm gives {np.round(factors, 3).tolist()}; use --method linear")
    crop = tuple(slice(0, n // k * k) for n, k in zip(array.shape, f))
    a = np.asarray(array)[crop]
    shape = [n // k for n, k in zip(a.shape, f)]
    blocks = a.reshape(shape[0], f[0], shape[1], f[1], shape[2], f[2])
    if not label:
        out = blocks.astype(np.float32).mean((1, 3, 5))
    else:
        values = np.unique(a)
        if set(values.tolist()) <= {0, 1}:
            out = (blocks.astype(np.float32).mean((1, 3, 5)) >= 0.5).astype(np.uint8)
        else:  # the most frequent label of each block (ties: the smaller label)
            counts = np.stack([(blocks == v).sum((1, 3, 5)) for v in values])
            out = values[np.argmax(counts, axis=0)].astype(a.dtype)
    new = np.array(affine, dtype=float)
    new[:3, 3] = affine[:3, :3] @ ((f - 1) / 2.0) + affine[:3, 3]
    new[:3, :3] = affine[:3, :3] * f
    return out, new


def preprocess_dataset(src, out, spacing: float | None = None, method: str = "linear", crop_to: str | None = None,
                       margin: int = 2, brain_mask: str | None = None, mask_rule: str = "any",
                       mask_threshold: float = 0.0, mask_keys: Sequence[str] | None = None,
                       overwrite: bool = False) -> Path:
    """Write `out`/dataset.json with every case of `src` preprocessed (see the module docstring); returns its path.

    brain_mask: the key of a derived brain mask, added to cases that lack it (a case that does not look
    skull-stripped is an error naming it); mask_rule "any" (any of `mask_keys`, default every image key, above
    `mask_threshold`) or "all" (every one of them above it)."""
    import nibabel as nib

    from medgen.data.brain_mask import skull_stripped_problem
    from medgen.data.datalist import _is_path_value, guess_kind, load_datalist, read_dataset_json

    if method not in METHODS:
        raise MedgenError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if mask_rule not in ("any", "all"):
        raise MedgenError(f"--mask-rule must be 'any' or 'all', got {mask_rule!r}")
    if spacing is not None and not spacing > 0:
        raise MedgenError(f"--spacing must be a positive size in mm, got {spacing}")
    dl = load_datalist(src)
    out = Path(out)
    if out.resolve() == dl.root.resolve():
        raise MedgenError(f"{out} is the source dataset: write the preprocessed copy to another folder")
    if (out / "dataset.json").exists():
        previous = json.loads((out / "dataset.json").read_text())
        if not overwrite or "preprocessing" not in previous:
            raise MedgenError(f"{out}/dataset.json exists: pass --overwrite to replace a copy this command wrote"
                              if "preprocessing" in previous else f"refusing to overwrite {out}: not written by "
                              "medgen preprocess")
        shutil.rmtree(out)
    elif out.exists() and any(out.iterdir()):
        raise MedgenError(f"{out} exists and is not empty: choose a new folder")
    declared = {str(k): str(v) for k, v in read_dataset_json(src)[0].get("keys", {}).items()}
    kinds = {k: declared.get(k, guess_kind(k)) for c in dl.all_cases for k, v in c.items()
             if _is_path_value(k, v, declared)}  # the keys that name files (others are fields: a domain, a label)
    resample = resample_block if method == "block" else resample_linear
    meta = {**{k: v for k, v in dl.metadata.items() if k != "preprocessing"}, "name": out.name, "keys": dict(declared)}
    splits = {}
    for split in ("training", "validation", "test"):
        cases = []
        for entry in dl.split(split):
            cid = str(entry["id"])
            files = {k: v for k, v in entry.items() if kinds.get(k) in ("image", "label") and isinstance(v, str)}
            images = [k for k in files if kinds[k] == "image"]
            if not images:
                raise DataError(dl.source, f"case '{cid}' has no image key to preprocess")
            loaded = {k: nib.load(files[k]) for k in files}
            ref = loaded[images[0]]
            arrays = {k: np.asarray(im.dataobj, dtype=np.float32) for k, im in loaded.items()}
            for k, a in arrays.items():
                if a.shape != ref.shape or not np.allclose(loaded[k].affine, ref.affine, atol=1e-3):
                    raise DataError(files[k], f"key {k!r} of case '{cid}' is not on the grid of {images[0]!r}: "
                                              "co-register the case first")
            affine = np.array(ref.affine, dtype=float)
            if crop_to:
                if crop_to not in arrays:
                    raise DataError(dl.source, f"case '{cid}' has no key {crop_to!r} to crop to")
                try:
                    box = crop_box(arrays[crop_to], margin)
                except ValueError:
                    raise DataError(files[crop_to], f"case '{cid}': nothing above zero to crop to") from None
                arrays = {k: a[box] for k, a in arrays.items()}
                affine = crop_affine(affine, box)
            new_affine = affine
            if spacing is not None:
                done = {k: resample(a, affine, spacing, kinds[k] == "label") for k, a in arrays.items()}
                arrays = {k: v[0] for k, v in done.items()}
                new_affine = next(iter(done.values()))[1]
            new = {k: v for k, v in entry.items() if k not in files}
            if brain_mask and brain_mask not in arrays:
                sources = list(mask_keys or images)
                absent = [k for k in sources if k not in arrays]
                if absent:
                    raise DataError(dl.source, f"case '{cid}' has no {absent} to derive '{brain_mask}' from")
                above = np.stack([arrays[k] > mask_threshold for k in sources])
                mask = above.all(0) if mask_rule == "all" else above.any(0)
                problem = "no voxel is above the threshold" if not mask.any() else skull_stripped_problem(mask, new_affine)
                if problem:
                    raise DataError(files[images[0]], f"case '{cid}': cannot derive '{brain_mask}': {problem}. Give "
                                                      "brain masks (e.g. from HD-BET or SynthStrip) or skull-strip "
                                                      "the scans first")
                arrays[brain_mask] = mask.astype(np.uint8)
                kinds[brain_mask] = "label"
                meta["keys"][brain_mask] = "label"
            for k, a in arrays.items():
                rel = f"{cid}/{k}.nii.gz"
                (out / cid).mkdir(parents=True, exist_ok=True)
                dtype = np.uint8 if kinds[k] == "label" and a.min() >= 0 and a.max() <= 255 else np.float32
                img = nib.Nifti1Image(np.ascontiguousarray(a.astype(dtype)), new_affine)
                img.set_qform(new_affine, code=1)
                img.set_sform(new_affine, code=1)
                nib.save(img, str(out / rel))
                new[k] = rel
            cases.append(new)
        splits[split] = cases
    meta.update(splits)
    meta["preprocessing"] = {"source": str(dl.source), "spacing_mm": spacing, "method": method,
                             "crop_to": crop_to, "margin": margin if crop_to else None,
                             "brain_mask": ({"key": brain_mask, "rule": mask_rule, "threshold": mask_threshold,
                                             "from": list(mask_keys) if mask_keys else "every image key"}
                                            if brain_mask else None)}
    path = out / "dataset.json"
    out.mkdir(parents=True, exist_ok=True)
    from medgen.files import write_json_atomic

    write_json_atomic(path, meta)
    return path
