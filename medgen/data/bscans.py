"""2D OCT B-scan cases: the B-scan counterpart of `medgen.data.cases.load_image_case` (which reads volumes).

A B-scan file may be (H, W), (H, W, C) channel-last or (C, H, W) channel-first (NIfTI), PNG / TIFF or DICOM
(`medgen.data.io.load_bscan` reads them all as one (H, W) grey image). A case holds the B-scan normalised
by the OCT preset, its anomaly mask when the entry has one, and the geometry a (H, W) map needs to be
written back in the source file's layout and affine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medgen.data.cases import Case
from medgen.errors import DataError

IMAGE_KEY = "image"  # the dataset.json key of the B-scan
STORED_KEY = "stored_image"  # with keep_stored: the B-scan as stored, for detectors that need raw values


def bscan_geometry(path, shape_2d: tuple[int, int]) -> dict:
    """Where a (H, W) map of the B-scan at `path` goes, as a reference for `medgen.data.writer`:
    NIfTI channel-last (H, W, C) -> (H, W), channel-first (C, H, W) -> (1, H, W), both with the source affine;
    PNG / TIFF / DICOM -> (H, W) with the identity. `spatial_shape` is the written map's shape."""
    from medgen.data.io import NIFTI_SUFFIXES, image_suffix, load_header

    if image_suffix(path) not in NIFTI_SUFFIXES:
        return {"original_affine": np.eye(4), "spatial_shape": tuple(shape_2d)}
    h = load_header(path)
    shape = tuple(int(s) for s in h.shape)
    if len(shape) == 3 and shape[1:] == tuple(shape_2d) and shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4):
        out = (1, *shape_2d)
    else:
        out = tuple(shape_2d)
    return {"original_affine": np.asarray(h.affine, np.float64), "spatial_shape": out}


def load_bscan_case(entry: dict, split: str, source: Path | None, mask_key: str = "mask",
                    out_range=(-1.0, 1.0), keep_stored: bool = False) -> Case:
    """Read one dataset entry into a Case: `image` (1, H, W) normalised to `out_range` by the OCT preset
    (`case.norm["image"]` inverts it), `mask` (1, H, W) in {0, 1} when the entry has `mask_key`, the write
    geometry in `case.meta["image"]` (see `bscan_geometry`), and the entry's other values as fields.
    With `keep_stored` the B-scan as stored is kept too, under STORED_KEY (1, H, W)."""
    import torch

    from medgen.data.io import load_bscan
    from medgen.data.presets import OCTPreset

    cid = str(entry.get("id"))
    if IMAGE_KEY not in entry:
        present = ", ".join(k for k in entry if k != "id") or "none"
        raise DataError(source, f"case '{cid}' ({split}) has no key '{IMAGE_KEY}' (the B-scan); keys present: "
                                f"{present}")
    path = entry[IMAGE_KEY]
    stored = load_bscan(path)
    x, params = OCTPreset(out_range=out_range).forward(stored)
    case = Case(id=cid, split=split, norm={IMAGE_KEY: params}, paths={IMAGE_KEY: path},
                meta={IMAGE_KEY: bscan_geometry(path, stored.shape)},
                fields={k: v for k, v in entry.items() if k not in ("id", IMAGE_KEY, mask_key)})
    case.arrays[IMAGE_KEY] = torch.from_numpy(np.asarray(x, np.float32)[None])
    if keep_stored:
        case.arrays[STORED_KEY] = torch.from_numpy(stored[None])
    if mask_key and entry.get(mask_key):
        mask = load_bscan(entry[mask_key]) > 0
        if mask.shape != stored.shape:
            raise DataError(entry[mask_key], f"mask of case '{cid}' has shape {mask.shape}, its B-scan {path} has "
                                             f"{stored.shape}")
        case.arrays["mask"] = torch.from_numpy(mask[None].astype(np.float32))
        case.paths["mask"] = entry[mask_key]
    return case
