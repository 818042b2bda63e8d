"""The one way a pipeline's cases are read: dataset resolution, a typed case record, the one grid check, and
a source that hands out a split's cases one at a time or all at once.

- `resolve_dataset(data_cfg, phantom)`: the folder a run reads (the config's `data.dataset`, or the embedded
  phantom written on first use) and the SHA-256 of its `dataset.json`, recorded in the run and the manifest.
- `CaseKey`: one dataset key a pipeline reads, how (its intensity preset) and when it must be there.
- `Case`: a loaded case: arrays (channel first, normalised), their inverse parameters, their source geometry
  and paths, and the entry's other fields (a domain, a label).
- `check_same_grid(headers)`: every file of a case on one voxel grid: the same spatial shape, and affines
  equal within `GRID_TOLERANCE` (one tolerance, everywhere medgen compares grids).
- `CaseSource`: a split's case ids, its cases one by one (a case that cannot be read is reported with its
  error, the others go on) or all at once (cached), and what each case is made of (for provenance).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np

from medgen.errors import DataError, MedgenError

# Affine entries (mm, and the direction cosines scaled by the spacing) may differ by this much between the
# files of one case: float32 storage in NIfTI headers rounds them by ~1e-5; a real misregistration is
# millimetres. Used by the loader, `medgen evaluate` and check-data.
GRID_TOLERANCE = 1e-3

Role = Literal["input", "target", "mask", "label", "extra"]


@dataclass(frozen=True)
class DatasetRef:
    """The dataset a run reads: its folder (or table file) and the SHA-256 of its description."""

    path: Path
    sha256: str

    def as_dict(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256}


def dataset_digest(path: Path) -> str:
    """SHA-256 of `dataset.json` (or of a table file given as the dataset); for images given directly (a file,
    a DICOM series folder, a folder of images), of their names, sizes and modification times."""
    p = Path(path)
    if p.is_dir() and not (p / "dataset.json").exists():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        listing = [(str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
        return hashlib.sha256(repr(listing).encode()).hexdigest()
    target = p / "dataset.json" if p.is_dir() else p
    try:
        if target.suffix.lower() != ".json" and target.stat().st_size > 2**26:  # a large image: its identity
            st = target.stat()
            return hashlib.sha256(repr((target.name, st.st_size, st.st_mtime_ns)).encode()).hexdigest()
        return hashlib.sha256(target.read_bytes()).hexdigest()
    except OSError as exc:
        raise DataError(target, f"cannot read the dataset description ({exc.strerror or exc})") from None


def images_datalist(path: Path, key: str | None):
    """A test-only Datalist for images given without a dataset.json: one image file, one DICOM series (a
    folder of slices, or a .dcm file of it), or a folder of images / series; each becomes a case whose `key`
    (the pipeline's one input) is that image. Cases are named after the files."""
    from medgen.data.datalist import Datalist, check_case_id
    from medgen.data.io import IMAGE_SUFFIXES, image_suffix, is_dicom, strip_image_suffix

    p = Path(path)
    if key is None:
        raise DataError(p, "is not a dataset folder (no dataset.json), and this pipeline reads several keys per "
                           "case: give a dataset folder (medgen make-dataset builds one)")

    def is_series(folder: Path) -> bool:
        return folder.is_dir() and any(is_dicom(f) for f in folder.iterdir() if f.is_file())

    if p.is_file() or is_series(p):
        images = [p]
    elif p.is_dir():
        images = sorted(f for f in p.iterdir() if (f.is_file() and image_suffix(f) in IMAGE_SUFFIXES) or is_series(f))
        if not images:
            raise DataError(p, "holds no dataset.json and no images (NIfTI, MetaImage, NRRD, PNG / TIFF, DICOM series)")
    else:
        raise DataError(p, "dataset folder or image file does not exist")
    cases, seen = [], set()
    for image in images:
        cid = image.name if image.is_dir() else strip_image_suffix(image.name)
        cid = "".join(c if c.isalnum() or c in "-_." else "_" for c in cid).strip(".") or "image"
        while cid in seen:
            cid += "_"
        seen.add(cid)
        check_case_id(cid, p)
        cases.append({"id": cid, key: str(image.resolve())})
    return Datalist(root=(p if p.is_dir() else p.parent).resolve(), keys={key: "image"}, test=cases,
                    metadata={"name": p.name, "images_given_directly": True}, source=p)


def resolve_dataset(data_cfg, phantom: str | None, seed: int = 0) -> DatasetRef:
    """`data.dataset` when set, else the embedded phantom of kind `phantom` (written once under
    `data.phantom_dir`, sized by the config's `phantom_*` fields)."""
    if data_cfg.dataset:
        path = Path(data_cfg.dataset)
        if not path.exists():
            raise DataError(path, "dataset folder or file does not exist")
    elif phantom:
        from medgen.data.phantoms import phantom_dataset

        path = phantom_dataset(phantom, data_cfg, seed=seed)
    else:
        raise MedgenError("data.dataset is empty and this pipeline has no embedded phantom dataset: set "
                          "data.dataset to a folder holding dataset.json")
    path = path.resolve()
    return DatasetRef(path, dataset_digest(path))


@dataclass(frozen=True)
class CaseKey:
    """One dataset key of a pipeline.

    preset: how intensities are normalised (`medgen.data.presets`: pet, mr, zscore, ct, oct, label ... or a
    Preset object). role: input / target / mask (restricts the MR statistics, checked non-empty) / label /
    extra. required: "always" (every case), "labelled" (training and validation cases; test cases may lack
    it), or "optional" (read when the case has it).
    """

    name: str
    preset: Any = "label"
    role: Role = "input"
    required: Literal["always", "labelled", "optional"] = "always"
    channels: int = 1

    def needed(self, split: str) -> bool:
        return self.required == "always" or (self.required == "labelled" and split != "test")


@dataclass
class Case:
    """A loaded case. `case[key]` is the array of a dataset key (or a field of the entry, e.g. its domain);
    `case.norm[key]` the parameters that map it back to its source units."""

    id: str
    split: str
    arrays: dict = field(default_factory=dict)  # key -> (C, *spatial) float32 tensor
    norm: dict = field(default_factory=dict)  # key -> preset parameters (the stored inverse)
    meta: dict = field(default_factory=dict)  # key -> filename_or_obj, original_affine, affine, spatial_shape
    paths: dict = field(default_factory=dict)  # key -> source file
    fields: dict = field(default_factory=dict)  # other values of the entry (domain, label, ...) and derived ones
    references: dict = field(default_factory=dict)  # target key -> (C, *spatial) float32 as stored (evaluation)

    def __getitem__(self, key: str):
        if key in self.arrays:
            return self.arrays[key]
        if key in self.fields:
            return self.fields[key]
        raise KeyError(f"case '{self.id}' has no array or field {key!r}")

    def __setitem__(self, key: str, value) -> None:
        if hasattr(value, "shape") and getattr(value, "ndim", 0) >= 1:
            self.arrays[key] = value
            self.fields.pop(key, None)
        else:
            self.fields[key] = value
            self.arrays.pop(key, None)

    def __contains__(self, key: str) -> bool:
        return key in self.arrays or key in self.fields

    def get(self, key: str, default=None):
        return self[key] if key in self else default

    def pop(self, key: str, default=None):
        if key in self.arrays:
            return self.arrays.pop(key)
        return self.fields.pop(key, default)

    def with_arrays(self, **arrays) -> "Case":
        """A shallow copy with more (or replaced) arrays, e.g. a cascade stage's previous estimate."""
        return replace(self, arrays={**self.arrays, **arrays}, fields=dict(self.fields),
                       references=dict(self.references))

    @property
    def reference_path(self) -> str:
        """The file whose geometry outputs are written in: the first input key's."""
        return next(iter(self.paths.values()))


@dataclass
class CaseError:
    """A case that could not be read: inference reports it and goes on."""

    id: str
    split: str
    error: str


def case_error_text(exc: BaseException) -> str:
    """A failure as one line: medgen's own message, or the exception's type and text."""
    return str(exc) if isinstance(exc, MedgenError) else f"{type(exc).__name__}: {exc}"


def check_same_grid(headers: dict, case_id: str, spatial_dims: int = 3) -> None:
    """Every file of a case on one grid: `spatial_dims` spatial axes, one shape, affines within
    GRID_TOLERANCE. `headers`: key -> `medgen.data.io.ImageHeader`, in key order (the first is the reference)."""
    ref_key, ref = next(iter(headers.items()))
    for key, h in headers.items():
        if len(h.spatial_shape) != spatial_dims:
            raise DataError(h.path, f"key {key!r} of case '{case_id}': expected a {spatial_dims}D image, got shape "
                                    f"{tuple(h.shape)}")
        if key == ref_key:
            continue
        if tuple(h.spatial_shape) != tuple(ref.spatial_shape):
            raise DataError(h.path, f"key {key!r} has shape {tuple(h.spatial_shape)} but {ref_key!r} ({ref.path}) "
                                    f"has {tuple(ref.spatial_shape)} (case '{case_id}'): resample them onto one grid")
        if not np.allclose(np.asarray(h.affine), np.asarray(ref.affine), atol=GRID_TOLERANCE):
            raise DataError(h.path, f"key {key!r}: its affine differs from {ref_key!r}'s ({ref.path}) in case "
                                    f"'{case_id}': the files of a case must share one voxel grid (co-register first)")


def load_image_case(entry: dict, split: str, keys: Sequence[CaseKey], source: Path | None,
                    spatial_dims: int = 3) -> Case:
    """Read one dataset entry into a Case: check keys, headers (dimensions, channels, one grid) before reading
    voxels, then a mask for being empty before anything is normalised with it, then normalise each key with
    its preset (MR statistics inside the case's mask), keeping each preset's inverse parameters."""
    from medgen.data.io import load_header, load_image
    from medgen.data.presets import get_preset

    import torch

    cid = str(entry.get("id"))
    missing = [k.name for k in keys if k.needed(split) and k.name not in entry]
    if missing:
        present = ", ".join(k for k in entry if k != "id") or "none"
        raise DataError(source, f"case '{cid}' ({split}) has no key(s) {missing}; keys present: {present}")
    chosen = [k for k in keys if k.name in entry]
    for k in chosen:  # one file per key: a list (or a number) is a dataset.json mistake, not an unreadable file
        value = entry[k.name]
        if not isinstance(value, (str, os.PathLike)):
            what = f"a list of {len(value)}" if isinstance(value, list) else f"{type(value).__name__} {value!r:.80}"
            raise DataError(source, f"case '{cid}' ({split}) key {k.name!r}: expected one file path, got {what}")
    headers = {k.name: load_header(entry[k.name]) for k in chosen}
    for k in chosen:
        h = headers[k.name]
        channels = int(np.prod(h.shape[spatial_dims:])) if len(h.shape) > spatial_dims else 1
        if channels != k.channels:
            raise DataError(h.path, f"key {k.name!r} of case '{cid}' has shape {tuple(h.shape)} ({channels} "
                                    f"channels or frames); expected {k.channels} {spatial_dims}D image(s) per file")
    check_same_grid(headers, cid, spatial_dims)
    loaded = {k.name: load_image(entry[k.name]) for k in chosen}
    mask_key = next((k.name for k in chosen if k.role == "mask"), None)
    mask = loaded.get(mask_key) if mask_key else None
    if mask is not None and not bool((mask > 0).any()):
        raise DataError(entry[mask_key], f"empty mask (key '{mask_key}', case '{cid}')")
    case = Case(id=cid, split=split, paths={k.name: entry[k.name] for k in chosen},
                fields={k: v for k, v in entry.items() if k != "id" and k not in loaded})
    for k in chosen:
        x = loaded[k.name]
        meta = dict(getattr(x, "meta", {}) or {})
        if k.role == "target":  # the reference as stored: metrics compare against it, not its normalised copy
            case.references[k.name] = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x,
                                                 dtype=np.float32)
        preset = get_preset(k.preset)
        x, case.norm[k.name] = preset.forward(x, meta, mask if k.name != mask_key else None)
        arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
        case.arrays[k.name] = torch.as_tensor(np.ascontiguousarray(arr), dtype=torch.float32)
        case.meta[k.name] = {m: meta[m] for m in ("filename_or_obj", "original_affine", "affine", "spatial_shape")
                             if m in meta}
    return case


class CaseSource:
    """A dataset's cases for one pipeline (stage): ids, entries, one-at-a-time iteration and cached splits.

    `load_entry(entry, split) -> Case` reads one entry; `skip_bad_cases` leaves an unreadable case out of
    `load()` with a warning (listed in `skipped`) instead of stopping."""

    def __init__(self, ref: DatasetRef, load_entry: Callable[[dict, str], Case], skip_bad_cases: bool = False,
                 image_key: str | None = None):
        from medgen.data.datalist import load_datalist

        self.ref = ref
        p = Path(ref.path)
        if (p.is_dir() and (p / "dataset.json").exists()) or p.suffix.lower() == ".json":
            self.datalist = load_datalist(p)
        else:  # images given directly (medgen infer RUN scan.nii.gz): test cases of the one input key
            self.datalist = images_datalist(p, image_key)
        self._load_entry = load_entry
        self.skip_bad_cases = skip_bad_cases
        self.skipped: list[CaseError] = []
        self._cache: dict[str, list] = {}

    def entries(self, split: str) -> list[dict]:
        return self.datalist.split(split)

    def ids(self, split: str) -> list[str]:
        return [str(e.get("id")) for e in self.entries(split)]

    def inputs(self, split: str) -> dict[str, dict]:
        """Case id -> its entry (paths and values): what a prediction of the case is made from."""
        return {str(e.get("id")): {k: v for k, v in e.items() if k != "id"} for e in self.entries(split)}

    def iter(self, split: str, skip=()) -> Iterator[Case | CaseError]:
        for entry in self.entries(split):
            cid = str(entry.get("id"))
            if cid in skip:
                continue
            try:
                case = self._load_entry(entry, split)
            except Exception as exc:  # noqa: BLE001 - one case's failure is reported with it
                yield CaseError(cid, split, case_error_text(exc))
                continue
            yield case

    def load(self, split: str) -> list:
        """Every case of a split, loaded once (cached). An unreadable case stops with its error, or with
        data.skip_bad_cases is left out with a warning."""
        if split not in self._cache:
            cases = []
            for case in self.iter(split):
                if isinstance(case, CaseError):
                    if not self.skip_bad_cases:
                        raise DataError(None, case.error)
                    warnings.warn(f"skipping case '{case.id}' ({split}): {case.error}", stacklevel=2)
                    self.skipped.append(case)
                    continue
                cases.append(case)
            self._cache[split] = cases
        return self._cache[split]
