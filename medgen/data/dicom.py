"""DICOM series: find them, read their geometry and voxels, with errors that name the folder or file.

A DICOM "image" in medgen is one series: a folder holding exactly one series, or the path of any one
`.dcm` file of a series (the rest of the series is found beside it). `medgen.data.io.load_header` /
`load_image` call into this module, so check-data, make-dataset, training and inference read DICOM
wherever they read NIfTI; predictions are still written as NIfTI in the series' geometry.

Why SimpleITK (not MONAI's readers): MONAI's `PydicomReader` needs pydicom and its `ITKReader` the
`itk` package, neither of which medgen depends on, while SimpleITK already is a dependency (it reads
MetaImage / NRRD here). Its `ImageSeriesReader` sorts the slices by position along the slice normal
with GDCM, applies the rescale slope / intercept, and returns the geometry in ITK's LPS world, which
`io._itk_affine` turns into nibabel's RAS affine exactly as for the other ITK formats (DICOM PS3.3
C.7.6.2.1.1: Image Position / Orientation (Patient) are LPS).

What is refused rather than read wrongly: a folder with several series (which one?), slices of
different sizes, and slices that are not evenly spaced (a missing slice, or a gantry tilt), because
ITK would read those with one constant spacing and a silently wrong geometry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medgen.errors import DataError

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")

# Tags read from the first file of a series (DICOM PS3.6 data dictionary).
TAG_SERIES_UID = "0020|000e"
TAG_SERIES_DESCRIPTION = "0008|103e"
TAG_PATIENT_ID = "0010|0020"
TAG_MODALITY = "0008|0060"
TAG_STUDY_DATE = "0008|0020"
TAG_PROTOCOL = "0018|1030"

# Relative deviation of one slice gap from the mean gap above which the series counts as unevenly spaced.
_GAP_TOLERANCE = 0.01


def sitk_module(path=None):
    """SimpleITK, imported only when a DICOM series or a MetaImage / NRRD file is read: everything else
    (NIfTI, 2D images, tables, training, inference) works without it, e.g. on GPU machines lacking it."""
    try:
        import SimpleITK as sitk
    except ImportError:
        raise DataError(path, "reading DICOM series and MetaImage / NRRD files needs SimpleITK, which is not "
                              "installed (pip install SimpleITK); or convert the file to NIfTI") from None
    return sitk


def looks_like_dicom_file(path: Path) -> bool:
    """A .dcm / .dicom / .ima name, or the 'DICM' preamble marker at byte 128 (PS3.10 7.1)."""
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_path(path: str | os.PathLike) -> bool:
    """True for a DICOM file, or a folder that directly holds at least one DICOM file."""
    p = Path(path)
    try:
        if p.is_file():
            return looks_like_dicom_file(p)
        if p.is_dir():
            return any(f.is_file() and looks_like_dicom_file(f) for f in _files_in(p))
    except OSError:
        return False
    return False


def _files_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if not f.name.startswith("."))


@dataclass
class DicomSeries:
    """One series: its files sorted by slice position, and the tags medgen reports."""

    folder: Path
    uid: str
    files: list[str]
    description: str = ""
    patient_id: str = ""
    modality: str = ""
    study_date: str = ""
    protocol: str = ""
    tags: dict = field(default_factory=dict)

    @property
    def first(self) -> Path:
        return Path(self.files[0])


def _series_ids(folder: Path) -> tuple[str, ...]:
    sitk = sitk_module()
    try:
        return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except Exception as err:  # GDCM errors surface as RuntimeError
        raise DataError(folder, f"cannot scan the folder for DICOM series ({type(err).__name__}: {err})") from err


def _series_files(folder: Path, uid: str) -> list[str]:
    sitk = sitk_module()
    try:
        return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
    except Exception as err:
        raise DataError(folder, f"cannot list the files of DICOM series {uid} ({type(err).__name__}: {err})") from err


def _file_reader(path: str):
    sitk = sitk_module()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
    except Exception as err:
        raise DataError(path, f"cannot read the DICOM header ({type(err).__name__}: {err})") from err
    return reader


def _tag(reader, tag: str) -> str:
    try:
        return reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""
    except Exception:  # undecodable value
        return ""


def _describe(folder: Path, uid: str, files: list[str]) -> DicomSeries:
    reader = _file_reader(files[0])
    return DicomSeries(folder, uid, files, _tag(reader, TAG_SERIES_DESCRIPTION), _tag(reader, TAG_PATIENT_ID),
                       _tag(reader, TAG_MODALITY), _tag(reader, TAG_STUDY_DATE), _tag(reader, TAG_PROTOCOL))


def series_in_folder(folder: str | os.PathLike) -> list[DicomSeries]:
    """Every series whose files lie directly in `folder` (not in its subfolders)."""
    folder = Path(folder)
    return [_describe(folder, uid, _series_files(folder, uid)) for uid in _series_ids(folder)]


def find_series(root: str | os.PathLike) -> list[DicomSeries]:
    """Every DICOM series under `root` (recursively), sorted by folder and description."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder = Path(dirpath)
        if any(looks_like_dicom_file(folder / f) for f in filenames if not f.startswith(".")):
            out.extend(series_in_folder(folder))
    return sorted(out, key=lambda s: (str(s.folder), s.description, s.uid))


def resolve_series(path: str | os.PathLike) -> DicomSeries:
    """The one series a path names: a folder holding exactly one series, or one file of a series."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file does not exist")
    if path.is_dir():
        uids = _series_ids(path)
        if not uids:
            raise DataError(path, "is a folder without a DICOM series (expected an image file, or a folder "
                                  "holding the .dcm files of one series)")
        if len(uids) > 1:
            found = [_describe(path, u, _series_files(path, u)) for u in uids]
            listing = "; ".join(f"{s.description or '(no description)'}: {len(s.files)} file(s), "
                                f"e.g. {Path(s.files[0]).name}" for s in found)
            raise DataError(path, f"folder holds {len(uids)} DICOM series ({listing}); give each series its "
                                  "own folder, or point at one .dcm file of the series you want")
        return _describe(path, uids[0], _series_files(path, uids[0]))
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty (0 bytes)")
    reader = _file_reader(str(path))
    uid = _tag(reader, TAG_SERIES_UID)
    files = _series_files(path.parent, uid) if uid else []
    if str(path) not in files and str(path.resolve()) not in [str(Path(f).resolve()) for f in files]:
        files = [str(path)]  # no series UID, or GDCM grouped it differently: read the file alone
    return _describe(path.parent, uid, files)


@dataclass
class SeriesGeometry:
    size: tuple[int, ...]  # ITK order (x, y[, z])
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    pixel_id: str
    components: int


def series_geometry(series: DicomSeries) -> SeriesGeometry:
    """Geometry of a series as SimpleITK's series reader will produce it, from the file headers only.

    Slices are sorted by GDCM along the slice normal; the reader takes the first slice's origin and
    orientation and the slice spacing from the first-to-last distance. That is only right when every
    gap is equal and the slices stack along their normal, so both are checked here (DataError otherwise).
    """
    files = series.files
    first = _file_reader(files[0])
    size = tuple(int(s) for s in first.GetSize())
    spacing = tuple(float(s) for s in first.GetSpacing())
    origin = tuple(float(s) for s in first.GetOrigin())
    direction = tuple(float(d) for d in first.GetDirection())
    sitk = sitk_module()
    pixel = sitk.GetPixelIDValueAsString(first.GetPixelID())
    ncomp = int(first.GetNumberOfComponents())
    if len(files) == 1:
        return SeriesGeometry(size, spacing, origin, direction, pixel, ncomp)
    if len(size) == 3 and size[2] != 1:
        raise DataError(series.folder, f"series {series.uid} mixes multi-frame files ({files[0]} has {size[2]} "
                                       "frames) with other files; point at the multi-frame file itself")
    positions = []
    for f in files:
        r = first if f == files[0] else _file_reader(f)
        if tuple(int(s) for s in r.GetSize())[:2] != size[:2]:
            raise DataError(f, f"slice size {tuple(r.GetSize())[:2]} differs from the series' first slice "
                               f"{size[:2]} ({files[0]})")
        positions.append(np.asarray(r.GetOrigin(), dtype=np.float64))
    pos = np.stack(positions)
    steps = np.diff(pos, axis=0)
    gaps = np.linalg.norm(steps, axis=1)
    mean_gap = float(gaps.mean())
    if mean_gap <= 0 or np.any(np.abs(gaps - mean_gap) > _GAP_TOLERANCE * mean_gap):
        raise DataError(series.folder, f"the {len(files)} slices of series '{series.description or series.uid}' "
                                       f"are not evenly spaced (gaps from {gaps.min():.4g} to {gaps.max():.4g} mm): "
                                       "a missing or duplicated slice? medgen reads evenly spaced series only")
    normal = np.asarray(direction, dtype=np.float64).reshape(3, 3)[:, 2]
    along = (pos[-1] - pos[0]) / np.linalg.norm(pos[-1] - pos[0])
    if abs(float(np.dot(normal, along))) < 1 - 1e-3:
        angle = float(np.degrees(np.arccos(np.clip(abs(np.dot(normal, along)), -1, 1))))
        raise DataError(series.folder, f"the slices of series '{series.description or series.uid}' do not stack "
                                       f"along their normal ({angle:.2f} degrees off: a gantry tilt?); resample it "
                                       "to a regular grid first (e.g. dcm2niix corrects gantry tilt)")
    spacing = spacing[:2] + (float(np.linalg.norm(pos[-1] - pos[0])) / (len(files) - 1),)
    return SeriesGeometry(size[:2] + (len(files),), spacing, origin, direction, pixel, ncomp)


def read_series(series: DicomSeries):
    """The series as a SimpleITK image (voxels + geometry)."""
    sitk = sitk_module()
    try:
        if len(series.files) == 1:
            return sitk.ReadImage(series.files[0])
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(series.files)
        return reader.Execute()
    except Exception as err:
        raise DataError(series.folder if len(series.files) > 1 else series.files[0],
                        f"cannot read the DICOM series ({type(err).__name__}: {err})") from err
