"""Reading medical images with errors a user can act on.

Every loader here turns library errors (nibabel, SimpleITK, gzip, PIL) into a
`DataError(path, problem)` so that a bad file never surfaces as a deep traceback.

- `load_image`: NIfTI (MONAI `LoadImage` + nibabel reader, so the MetaTensor carries exactly the
  metadata MONAI transforms expect), MetaImage/NRRD and DICOM series (SimpleITK, converted to nibabel's
  RAS world and (i, j, k) voxel order; see `medgen.data.dicom`) and 2D PNG/TIFF (scikit-image).
- `load_header`: shape / affine / dtype without reading voxels (for check-data).
- `load_bscan`: one OCT B-scan as an (H, W) float32 array from any of the layouts found in practice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medgen.errors import DataError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
IMAGE2D_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES + IMAGE2D_SUFFIXES

# LPS (ITK / DICOM world) <-> RAS (nibabel / MONAI world): flip the first two world axes.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def is_dicom(path: str | os.PathLike) -> bool:
    """Is `path` read as a DICOM series? A folder (only a DICOM series can be a folder image), or a file
    without a known image suffix that is a DICOM file (.dcm / .ima / 'DICM' marker)."""
    from medgen.data.dicom import looks_like_dicom_file

    p = Path(path)
    if p.is_dir():
        return True
    return p.is_file() and image_suffix(p) not in IMAGE_SUFFIXES and looks_like_dicom_file(p)


def image_suffix(path: str | os.PathLike) -> str:
    """The image type suffix of a file name ('.nii.gz' counts as one suffix), lower case."""
    name = Path(path).name.lower()
    for suffix in (".nii.gz", ".nhdr", ".nrrd"):
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


def strip_image_suffix(name: str) -> str:
    """'case01_t1.nii.gz' -> 'case01_t1'."""
    suffix = image_suffix(name)
    return name[: -len(suffix)] if suffix and name.lower().endswith(suffix) else name


@dataclass
class ImageHeader:
    """What `load_header` reads: enough for check-data without touching the voxels."""

    path: str
    shape: tuple[int, ...]  # full array shape as stored (spatial first for NIfTI)
    spatial_shape: tuple[int, ...]
    affine: np.ndarray  # voxel -> RAS world (mm), 4x4
    dtype: str
    spacing: tuple[float, ...]
    axcodes: tuple[str, ...]
    qform_code: int | None = None
    sform_code: int | None = None

    @property
    def spatial_dims(self) -> int:
        return len(self.spatial_shape)


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DataError(path, "file does not exist")
    if path.is_dir():
        raise DataError(path, "is a folder, expected an image file")
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty (0 bytes)")


def _spacing_from_affine(affine: np.ndarray, ndim: int) -> tuple[float, ...]:
    return tuple(float(v) for v in np.sqrt((np.asarray(affine)[:3, :ndim] ** 2).sum(axis=0)))


def _axcodes(affine: np.ndarray) -> tuple[str, ...]:
    import nibabel as nib

    try:
        return tuple(str(c) for c in nib.aff2axcodes(np.asarray(affine)))
    except Exception:  # degenerate affine
        return ("?", "?", "?")


def load_header(path: str | os.PathLike) -> ImageHeader:
    """Read shape, affine, spacing, orientation and dtype without loading voxel data."""
    path = Path(path)
    if is_dicom(path):
        return _dicom_header(path)
    _check_exists(path)
    suffix = image_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        import nibabel as nib

        try:
            img = nib.load(str(path))
            shape = tuple(int(s) for s in img.shape)
            affine = np.asarray(img.affine, dtype=np.float64)
            dtype = str(img.get_data_dtype())
            qcode, scode = int(img.header["qform_code"]), int(img.header["sform_code"])
            # Both orientation matrices, not only the one `affine` comes from: predictions are written with
            # the source's header (medgen.data.writer), qform and sform, so a file whose unused qform cannot
            # be computed (quaternion out of range) or holds NaN / Inf is refused here, before any work.
            forms = {"qform": img.get_qform(coded=False), "sform": img.get_sform(coded=False), "affine": affine}
        except Exception as err:
            raise DataError(path, f"cannot read the NIfTI header ({type(err).__name__}: {err})") from err
        bad = [name for name, m in forms.items() if not np.isfinite(np.asarray(m, dtype=np.float64)).all()]
        if bad:
            raise DataError(path, f"the header's {' and '.join(bad)} {'hold' if len(bad) > 1 else 'holds'} NaN or "
                                  "Inf values (pixdim, quatern_*, qoffset_* or srow_* fields): the image has no "
                                  "usable voxel-to-world geometry")
        spatial = shape[: min(len(shape), 3)]
        return ImageHeader(str(path), shape, spatial, affine, dtype,
                           _spacing_from_affine(affine, len(spatial)), _axcodes(affine), qcode, scode)
    if suffix in ITK_SUFFIXES:
        sitk = _simpleitk(path)
        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            size = tuple(int(s) for s in reader.GetSize())
            affine = _itk_affine(reader.GetDirection(), reader.GetSpacing(), reader.GetOrigin())
            dtype = sitk.GetPixelIDValueAsString(reader.GetPixelID())
            ncomp = reader.GetNumberOfComponents()
        except Exception as err:
            raise DataError(path, f"cannot read the image header ({type(err).__name__}: {err})") from err
        shape = size + ((ncomp,) if ncomp > 1 else ())
        return ImageHeader(str(path), shape, size, affine, dtype,
                           _spacing_from_affine(affine, len(size)), _axcodes(affine))
    if suffix in IMAGE2D_SUFFIXES:
        arr = _read_2d(path)  # 2D files are small: reading them is the header check
        spatial = arr.shape[:2]
        return ImageHeader(str(path), tuple(arr.shape), tuple(spatial), np.eye(4), str(arr.dtype),
                           (1.0, 1.0), _axcodes(np.eye(4)))
    raise DataError(path, f"unsupported image type {suffix!r} (expected one of {', '.join(IMAGE_SUFFIXES)})")


def _dicom_header(path: Path) -> ImageHeader:
    from medgen.data.dicom import resolve_series, series_geometry

    g = series_geometry(resolve_series(path))
    affine = _itk_affine(g.direction, g.spacing, g.origin)
    shape = g.size + ((g.components,) if g.components > 1 else ())
    return ImageHeader(str(path), shape, g.size, affine, g.pixel_id,
                       _spacing_from_affine(affine, len(g.size)), _axcodes(affine))


def _simpleitk(path):
    from medgen.data.dicom import sitk_module

    return sitk_module(path)


def _itk_affine(direction, spacing, origin) -> np.ndarray:
    """SimpleITK geometry (LPS world) -> 4x4 voxel-to-RAS affine; 2D images get a 4x4 with z=1."""
    ndim = len(spacing)
    aff = np.eye(4)
    d = np.asarray(direction, dtype=np.float64).reshape(ndim, ndim)
    aff[:ndim, :ndim] = d @ np.diag(spacing)
    aff[:ndim, 3] = origin
    return _LPS_TO_RAS @ aff


def _read_2d(path: Path) -> np.ndarray:
    try:
        import skimage.io

        arr = np.asarray(skimage.io.imread(str(path)))
    except Exception as err:
        raise DataError(path, f"cannot read the 2D image ({type(err).__name__}: {err})") from err
    if arr.ndim not in (2, 3) or 0 in arr.shape:
        raise DataError(path, f"expected a 2D image (H, W) or (H, W, C), got shape {arr.shape}")
    return arr


def _read_itk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """-> (array in (i, j, k[, C]) order, RAS affine). MetaImage / NRRD files and DICOM series."""
    sitk = _simpleitk(path)
    try:
        if is_dicom(path):
            from medgen.data.dicom import read_series, resolve_series

            img = read_series(resolve_series(path))
        else:
            img = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(img)  # (z, y, x[, C])
    except DataError:
        raise
    except Exception as err:
        raise DataError(path, f"cannot read the image ({type(err).__name__}: {err})") from err
    ndim = img.GetDimension()
    ncomp = img.GetNumberOfComponentsPerPixel()
    axes = list(range(ndim))[::-1] + ([ndim] if ncomp > 1 else [])
    arr = np.transpose(arr, axes)
    return arr, _itk_affine(img.GetDirection(), img.GetSpacing(), img.GetOrigin())


def _plain_number(dtype: str) -> bool:
    """A NIfTI header's voxel type (as `load_header` gives it) is a bool, integer or float."""
    try:
        return np.dtype(dtype).kind in "biuf"
    except TypeError:  # a structured type such as RGB: '[('R', 'u1'), ...]'
        return False


def _wrong_dims(path, expect_dims: int, spatial_shape) -> DataError:
    return DataError(path, f"expected a {expect_dims}D image, got {len(spatial_shape)}D shape "
                           f"{tuple(int(s) for s in spatial_shape)}")


def load_image(
    path: str | os.PathLike,
    ensure_channel_first: bool = True,
    expect_dims: int | None = None,
    allow_nonfinite: bool = False,
    dtype: Any = np.float32,
):
    """Load one image as a `monai.data.MetaTensor` (channel first by default).

    Meta keys: `affine` (current), `original_affine` (as stored), `spatial_shape`, `spacing` (mm),
    `filename_or_obj`, plus the NIfTI header fields MONAI's reader adds (qform_code, sform_code, ...).
    Raises `DataError` for a missing/unreadable/truncated file, zero-size axes, NaN/Inf voxels (unless
    `allow_nonfinite`) and, with `expect_dims`, the wrong number of spatial dimensions.
    """
    import torch
    from monai.data import MetaTensor

    path = Path(path)
    header = load_header(path)
    if any(s == 0 for s in header.shape):
        raise DataError(path, f"image has a zero-size axis, shape {header.shape}")
    dicom = is_dicom(path)
    suffix = "" if dicom else image_suffix(path)
    if expect_dims is not None and suffix not in IMAGE2D_SUFFIXES and header.spatial_dims != expect_dims:
        raise _wrong_dims(path, expect_dims, header.spatial_shape)

    if suffix in NIFTI_SUFFIXES:
        from monai.transforms import LoadImage

        if not _plain_number(header.dtype):  # MONAI would fail on RGB, and keep only the real part of complex
            raise DataError(path, f"voxel type {header.dtype} is not a plain number (e.g. RGB or complex NIfTI); "
                                  "store scalar voxels")

        # NIfTI keeps time in dim 4 and vector components in dim 5 (NIfTI-1 header, dim[]): MONAI turns
        # the one trailing axis into channels, and would leave any further axis as an extra "spatial" one.
        extra = header.shape[3:]
        if sum(s != 1 for s in extra) > 1:
            raise DataError(path, f"image has shape {header.shape}: {len(extra)} axes beyond the 3 spatial ones "
                                  "(e.g. time and components); medgen reads one volume with at most one channel axis")
        try:
            img = LoadImage(reader="NibabelReader", image_only=True, dtype=dtype,
                            ensure_channel_first=ensure_channel_first,
                            squeeze_non_spatial_dims=len(extra) > 1)(str(path))
        except Exception as err:
            cause = err.__cause__ or err
            raise DataError(path, f"cannot read the image data, the file may be truncated or corrupt "
                                  f"({type(cause).__name__}: {cause})") from err
        img.meta["spacing"] = np.asarray(_spacing_from_affine(img.meta["original_affine"], header.spatial_dims))
    else:
        if dicom or suffix in ITK_SUFFIXES:
            arr, affine = _read_itk(path)
            spatial = arr.shape[: header.spatial_dims]
        else:
            arr, affine = _read_2d(path), np.eye(4)
            spatial = arr.shape[:2]
        if expect_dims is not None and len(spatial) != expect_dims:
            raise _wrong_dims(path, expect_dims, spatial)
        has_channel = arr.ndim > len(spatial)
        if ensure_channel_first:
            arr = np.moveaxis(arr, -1, 0) if has_channel else arr[None]
        arr = np.ascontiguousarray(arr).astype(dtype, copy=False)
        meta = {
            "affine": torch.as_tensor(affine, dtype=torch.float64),
            "original_affine": affine.copy(),
            "spatial_shape": np.asarray(spatial),
            "spacing": np.asarray(_spacing_from_affine(affine, len(spatial))),
            "filename_or_obj": str(path),
            "original_channel_dim": -1 if has_channel else float("nan"),
        }
        img = MetaTensor(torch.from_numpy(arr), meta=meta)

    if ensure_channel_first and img.ndim - 1 != header.spatial_dims:  # never more (or fewer) axes than the header says
        raise DataError(path, f"image loaded with shape {tuple(img.shape)}, not (channels, *{header.spatial_shape}); "
                              f"stored shape {header.shape}")
    if not allow_nonfinite:
        finite = torch.isfinite(img)
        if not bool(finite.all()):
            n_nan = int(torch.isnan(img).sum())
            n_inf = int((~finite).sum()) - n_nan
            raise DataError(path, f"image has {n_nan} NaN and {n_inf} Inf voxels "
                                  "(fix the file or pass allow_nonfinite=True)")
    return img


def load_array(path: str | os.PathLike, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """(array without channel axis added, 4x4 RAS affine): a convenience for numpy users."""
    img = load_image(path, ensure_channel_first=False, **kwargs)
    return np.asarray(img.numpy()), np.asarray(img.meta["original_affine"], dtype=np.float64)


def bscan_layout(shape) -> tuple[tuple[int, ...], int | None]:
    """How `load_bscan` reads an array of `shape`: (shape with singleton axes beyond the first two
    dropped, the channel axis in it or None). ValueError when it is not a B-scan layout.

    (H, W); (H, W, C) channel-last and (C, H, W) channel-first with C in {1, 3, 4}, the channel axis
    being the short one; extra singleton axes (e.g. NIfTI's (H, W, 1, 3)) are dropped.
    """
    s = tuple(int(x) for x in shape)
    if len(s) > 2 and 1 in s[2:]:
        s = tuple(x for x in s if x != 1)
    if len(s) == 3:
        first, last = s[0], s[-1]
        if last in (1, 3, 4) and first not in (1, 3, 4):
            return s, 2
        if first in (1, 3, 4) and last not in (1, 3, 4):
            return s, 0
        raise ValueError(f"cannot tell the channel axis of shape {s}")
    if len(s) != 2:
        raise ValueError(f"expected a 2D B-scan, got shape {s}")
    return s, None


def bscan_shape(shape) -> tuple[int, int]:
    """(H, W) of a B-scan stored with `shape` (see `bscan_layout`)."""
    s, axis = bscan_layout(shape)
    return tuple(x for i, x in enumerate(s) if i != axis)  # type: ignore[return-value]


def load_bscan(path: str | os.PathLike, channel_tol: float = 0.02) -> np.ndarray:
    """One OCT B-scan as an (H, W) float32 array, values as stored.

    Accepts (H, W), (H, W, C) channel-last and (C, H, W) channel-first layouts with C in {1, 3, 4}
    (both NIfTI layouts occur in the public OCT data), and PNG/TIFF. Grey images saved as RGB are
    collapsed by averaging the channels; if the channels differ materially (mean absolute difference
    from their mean above `channel_tol` of the intensity range) it is a colour image and a DataError
    is raised rather than silently mixing colours. A few percent of stray pixels (annotations, JPEG
    history) stay below that threshold.
    """
    path = Path(path)
    dicom = is_dicom(path)
    if not dicom:
        _check_exists(path)
    suffix = "" if dicom else image_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        import nibabel as nib

        try:
            arr = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
        except Exception as err:
            raise DataError(path, f"cannot read the image data, the file may be truncated or corrupt "
                                  f"({type(err).__name__}: {err})") from err
    elif dicom or suffix in ITK_SUFFIXES:
        arr = _read_itk(path)[0].astype(np.float32)
    elif suffix in IMAGE2D_SUFFIXES:
        arr = _read_2d(path).astype(np.float32)
    else:
        raise DataError(path, f"unsupported image type {suffix!r} for an OCT B-scan")

    try:
        shape, channel_axis = bscan_layout(arr.shape)
    except ValueError as err:
        raise DataError(path, str(err)) from None
    arr = arr.reshape(shape)
    if channel_axis is not None:
        channels = np.moveaxis(arr, channel_axis, 0)
        if channels.shape[0] == 4:  # RGBA: drop alpha
            channels = channels[:3]
        grey = channels.mean(axis=0)
        value_range = float(np.ptp(grey)) or 1.0
        spread = float(np.abs(channels - grey[None]).mean()) / value_range
        if spread > channel_tol:
            raise DataError(path, f"channels differ materially (mean difference {spread:.3f} of the range): "
                                  "this looks like a colour image, not a grey B-scan")
        arr = grey
    if 0 in arr.shape:
        raise DataError(path, f"image has a zero-size axis, shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataError(path, f"image has {int((~np.isfinite(arr)).sum())} NaN/Inf pixels")
    return np.ascontiguousarray(arr, dtype=np.float32)
