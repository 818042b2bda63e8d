"""THE one NIfTI writer for predictions: output geometry always equals the source geometry.

Why one writer: geometry bugs (a flipped axis, a lost oblique rotation, a file written in the
network's RAS/resampled grid) are silent and fatal for downstream analysis. Every pipeline writes
through `write_prediction`, and its test asserts the source affine and shape come back exactly.

How the source geometry is restored:
- a MetaTensor whose affine / shape differ from the source (it went through Orientation, Spacing,
  crops ...) is resampled back with MONAI's `SpatialResample` from its current affine onto the source
  affine and shape (bilinear; nearest for uint8 masks) (this is what MONAI's own Orientation/Spacing `inverse` do, without needing the
  transform objects); with `transform=` given, MONAI's `inverse` of that transform is used first;
- a plain array / tensor must already be in source voxel space and is written with the source affine.
The header's qform/sform matrices and codes are copied from the source file when it can be read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medgen.errors import ConfigError, DataError, MedgenError
from medgen.files import atomic_write

_DTYPES = {"float32": np.float32, "float64": np.float64, "int16": np.int16, "uint8": np.uint8,
           "int32": np.int32, "uint16": np.uint16}


class _Reference:
    """Target geometry: affine, spatial shape and (when known) the source header."""

    def __init__(self, affine, spatial_shape, header=None, qform=None, sform=None):
        self.affine = np.asarray(affine, dtype=np.float64)
        self.spatial_shape = tuple(int(s) for s in spatial_shape)
        self.header = header
        self.qform = qform  # (matrix, code) or None
        self.sform = sform


def _reference_from_path(path) -> _Reference:
    import nibabel as nib

    path = Path(path)
    from medgen.data.io import ITK_SUFFIXES, image_suffix, is_dicom, load_header

    if image_suffix(path) in ITK_SUFFIXES or is_dicom(path):  # no NIfTI header to copy: geometry only
        h = load_header(path)
        return _Reference(h.affine, h.spatial_shape)
    if not path.exists():
        raise DataError(path, "reference image does not exist")
    try:
        img = nib.load(str(path))
        header = img.header.copy()
        qform, qcode = img.get_qform(coded=False), int(img.header["qform_code"])
        sform, scode = img.get_sform(coded=False), int(img.header["sform_code"])
        spatial = img.shape[: min(3, len(img.shape))]
        affine = img.affine
    except Exception as err:
        raise DataError(path, f"cannot read the reference image header ({type(err).__name__}: {err})") from err
    return _Reference(affine, spatial, header, (qform, qcode), (sform, scode))


def _reference_from_meta(meta: dict) -> _Reference:
    fname = meta.get("filename_or_obj")
    if isinstance(fname, (list, tuple)):
        fname = fname[0] if len(fname) == 1 else None
    if fname and Path(str(fname)).exists():
        try:
            return _reference_from_path(fname)
        except DataError:
            pass  # fall back to what the meta-dict holds
    affine = meta.get("original_affine", meta.get("affine"))
    shape = meta.get("spatial_shape")
    if affine is None or shape is None:
        raise MedgenError("reference meta-dict has no 'original_affine'/'affine' or no 'spatial_shape': "
                          "pass the source image path instead")
    affine = np.asarray(_to_numpy(affine), dtype=np.float64)
    if affine.ndim == 3:  # collated batch of one
        affine = affine[0]
    shape = np.asarray(_to_numpy(shape)).reshape(-1)
    aff4 = np.eye(4)
    n = affine.shape[0] - 1
    aff4[:n, :n], aff4[:n, 3] = affine[:n, :n], affine[:n, n]
    codes = {}
    for key in ("qform_code", "sform_code"):
        if key in meta:
            codes[key] = int(np.asarray(_to_numpy(meta[key])).reshape(-1)[0])
    qc, sc = codes.get("qform_code", 1), codes.get("sform_code", 1)
    return _Reference(aff4, shape, None, (aff4, qc), (aff4, sc))


def _to_numpy(x) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(x)


def resolve_reference(reference) -> _Reference:
    """Path / MetaTensor / meta-dict -> target geometry."""
    if isinstance(reference, (str, os.PathLike)):
        return _reference_from_path(reference)
    meta = getattr(reference, "meta", None)
    if meta is not None:
        return _reference_from_meta(dict(meta))
    if isinstance(reference, dict):
        return _reference_from_meta(reference)
    raise MedgenError(f"reference must be the source image path, a MetaTensor or a meta-dict, "
                      f"got {type(reference).__name__}")


def restore_geometry(prediction, reference, transform=None, mode: str = "bilinear"):
    """Return `(array (C, *spatial) float64-or-native numpy, _Reference)` in the source voxel grid."""
    import torch
    from monai.data import MetaTensor

    ref = resolve_reference(reference)
    nd = len(ref.spatial_shape)
    if isinstance(prediction, MetaTensor):
        pred = prediction.detach().cpu()
        if transform is not None and pred.applied_operations:
            try:
                pred = transform.inverse(pred)
            except Exception as err:
                raise MedgenError(f"could not invert the given transform on the prediction: {err}") from err
        if pred.ndim == nd + 2 and pred.shape[0] == 1:  # a collated batch of one
            pred = pred[0]
        if pred.ndim == nd:
            pred = pred[None]
        if pred.ndim != nd + 1:
            raise MedgenError(f"prediction has shape {tuple(pred.shape)}, expected (C, *spatial) with "
                              f"{nd} spatial dims like the source {ref.spatial_shape}")
        cur = np.asarray(_to_numpy(pred.affine), dtype=np.float64)
        same_shape = tuple(pred.shape[1:]) == ref.spatial_shape
        same_grid = same_shape and cur.shape == (4, 4) and np.allclose(cur, ref.affine, atol=1e-5)
        if same_shape and not pred.applied_operations and cur.shape == (4, 4) and np.array_equal(cur, np.eye(4)):
            same_grid = True  # a MetaTensor with MONAI's default identity affine carries no geometry
        if not same_grid:
            from monai.transforms import SpatialResample

            resample = SpatialResample(mode=mode, padding_mode="border", align_corners=False,
                                       dtype=torch.float64)
            pred = resample(pred.float() if not pred.is_floating_point() else pred,
                            dst_affine=torch.as_tensor(ref.affine), spatial_size=ref.spatial_shape)
        return np.asarray(pred.as_tensor().numpy()), ref
    arr = _to_numpy(prediction)
    if arr.ndim == nd:
        arr = arr[None]
    if arr.ndim != nd + 1 or tuple(arr.shape[1:]) != ref.spatial_shape:
        raise MedgenError(f"prediction has shape {tuple(arr.shape)} but the source image has spatial shape "
                          f"{ref.spatial_shape}: a plain array must be in the source voxel grid "
                          "(pass a MetaTensor with its affine to have it resampled back)")
    return arr, ref


def _cast(arr: np.ndarray, dtype: str) -> np.ndarray:
    if dtype not in _DTYPES:
        raise ConfigError(f"unknown output dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
    target = np.dtype(_DTYPES[dtype])
    if target.kind in "iu":
        info = np.iinfo(target)
        arr = np.clip(np.rint(np.nan_to_num(arr.astype(np.float64))), info.min, info.max)
    return arr.astype(target)


def write_prediction(
    prediction: Any,
    reference: Any,
    path: str | os.PathLike,
    dtype: str = "float32",
    overwrite: bool = False,
    transform: Any = None,
    mode: str | None = None,
) -> Path:
    """Write `prediction` as NIfTI at `path` in exactly the source geometry of `reference`.

    prediction: (C, *spatial) or (*spatial) numpy array / tensor / MetaTensor (C > 1 is stored as a 4D
    image with channels last). reference: the source image path (best: its header is copied), a
    MetaTensor loaded from it, or its meta-dict. dtype: 'float32', 'int16' (rounded, e.g. HU) or
    'uint8' (masks) - integer types are rounded and clipped to their range. mode: interpolation used
    when resampling back ('bilinear' default, 'nearest' default for integer dtypes). The file is
    written to a temporary file in the same folder and moved into place (no half-written outputs).
    """
    import nibabel as nib

    path = Path(path)
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise ConfigError(f"prediction output {path} must end in .nii or .nii.gz")
    if path.exists() and not overwrite:
        raise MedgenError(f"{path} already exists; refusing to overwrite it (pass overwrite=True)")
    if mode is None:
        mode = "nearest" if dtype == "uint8" else "bilinear"
    arr, ref = restore_geometry(prediction, reference, transform=transform, mode=mode)
    data = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    data = _cast(data, dtype)

    header = ref.header.copy() if ref.header is not None else None
    img = nib.Nifti1Image(data, ref.affine, header=header)
    img.set_data_dtype(data.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    if ref.sform is not None:
        img.set_sform(ref.sform[0], code=int(ref.sform[1]))
    if ref.qform is not None:
        img.set_qform(ref.qform[0], code=int(ref.qform[1]))
    return atomic_write(path, lambda tmp: nib.save(img, str(tmp)), overwrite=overwrite, fsync=False)
