"""The folder layouts `medgen make-dataset` reads, each turned into the same list of found images.

A scanner walks one layout and returns a `Scan`: every image it assigned to (case, key), what it left
over, and what it knows about keys (kinds, optional keys, label values). `make_dataset` does the rest
(missing keys, split, dataset.json) the same way for all of them.

| layout | what it looks like | case / subject |
|---|---|---|
| nnunet | imagesTr/<case>_0000.nii.gz (one file per channel), labelsTr/<case>.nii.gz, imagesTs/ | case |
| bids | sub-<s>/[ses-<t>/]anat/sub-<s>[_ses-<t>]_..._T1w.nii.gz (+ derivatives masks) | sub-s[_ses-t] / sub-s |
| subjects | <subject>/[<session>/]T1.nii.gz, FLAIR.nii.gz, lesion_mask.nii.gz | subject[_session] / subject |
| flat | any tree, keys by file-name patterns (`--key t1='*_t1.nii.gz'`) | what '*' matched |
| dicom | <subject>/[<session>/]<series folder>/*.dcm | subject[_session] / subject |
| oct | normal/ and / or abnormal/ B-scans (+ masks/ or abnormal_masks/) | file name |
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from medgen.data.io import IMAGE_SUFFIXES, image_suffix, strip_image_suffix
from medgen.data.keynames import key_for_name, key_from_text, sanitize_key
from medgen.errors import ConfigError, DataError

LAYOUTS = ("nnunet", "bids", "subjects", "flat", "dicom", "oct")
_SKIP_DIRS = {".git", "code", "sourcedata", "__pycache__", ".ipynb_checkpoints"}


@dataclass
class Found:
    """One image (file or DICOM series) assigned to a key of a case."""

    case: str
    key: str
    path: Path
    rule: str  # what matched, for the report ("*_T1w.nii.gz", "channel 0 'T1'", ...)
    subject: str = ""  # the split group (default: the case)
    values: dict = field(default_factory=dict)  # non-file fields of the case (e.g. OCT label 0 / 1)
    split: str | None = None  # a split the layout fixes (nnU-Net imagesTs -> test)


@dataclass
class Scan:
    layout: str
    found: list[Found] = field(default_factory=list)
    leftovers: list[tuple[str, str]] = field(default_factory=list)  # (path, why not used)
    kinds: dict[str, str] = field(default_factory=dict)  # key -> image | label | value
    optional: set[str] = field(default_factory=set)  # keys a case may lack (nnU-Net test labels, OCT masks)
    spatial_dims: int | None = None
    metadata: dict = field(default_factory=dict)
    strata: dict[str, str] = field(default_factory=dict)  # case -> label for a stratified split
    stratum_fractions: dict[str, tuple] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


_DICOM_NAMES = (".dcm", ".ima")


def is_image_name(name: str, dicom: bool = True) -> bool:
    low = name.lower()
    return image_suffix(low) in IMAGE_SUFFIXES or (dicom and low.endswith(_DICOM_NAMES))


def image_files(root: Path, dicom: bool = False) -> list[Path]:
    """Image files under root (recursively; .dcm files only with `dicom`: elsewhere a DICOM file is a
    slice of a series, read by the dicom layout), hidden files and code / sourcedata folders skipped."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        out += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".") and is_image_name(f, dicom)]
    return out


def _dicom_leftovers(scan: Scan, root: Path) -> None:
    n = sum(1 for f in image_files(root, dicom=True) if f.name.lower().endswith(_DICOM_NAMES))
    if n:
        scan.leftovers.append((f"{n} DICOM file(s)", "DICOM series are read with --layout dicom"))


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _glob_match(text: str, pattern: str, ignore_case: bool = False) -> bool:
    if ignore_case:  # free text such as a DICOM SeriesDescription ('T1 MPRAGE' / 't1_mprage')
        return fnmatch.fnmatchcase(text.lower(), pattern.lower())
    return fnmatch.fnmatchcase(text, pattern)


# ----- detection -----------------------------------------------------------------------------------------


def _has_dicom(root: Path, limit: int = 2000) -> bool:
    from medgen.data.dicom import looks_like_dicom_file

    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            n += 1
            if looks_like_dicom_file(Path(dirpath) / f):
                return True
            if n > limit:
                return False
    return False


def detect_layout(root: Path, patterns: dict | None = None) -> str:
    """The layout of `root`, from its folder structure (see the module table)."""
    children = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    if "imagestr" in children:
        return "nnunet"
    if "normal" in children or "abnormal" in children:
        return "oct"
    if any(name.startswith("sub-") for name in children):
        return "bids"
    non_dicom = image_files(root)
    if not non_dicom and _has_dicom(root):
        return "dicom"
    if patterns:
        return "flat"
    if any(f.parent != root for f in non_dicom):
        return "subjects"
    if non_dicom:
        return "flat"
    raise DataError(root, "found no images (NIfTI, MetaImage, NRRD, PNG / TIFF or DICOM) in this folder")


# ----- nnU-Net -------------------------------------------------------------------------------------------

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


def scan_nnunet(root: Path, patterns: dict | None = None) -> Scan:
    """nnU-Net raw data: imagesTr/<case>_<XXXX>.<ext> (channel XXXX), labelsTr/<case>.<ext>, imagesTs/ for
    test cases (and labelsTs/ when present). Channel keys come from dataset.json's channel_names (v2) or
    modality (v1), mapped to medgen keys ('T1' -> t1, 'CT' -> ct); the labels are the key 'seg'."""
    if patterns:
        raise ConfigError("--key does not apply to the nnU-Net layout: the channels name the keys; "
                          "rename them with --rename OLD=NEW (e.g. --rename ch0=t1)")
    scan = Scan("nnunet", spatial_dims=3)
    dirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    meta = {}
    if (root / "dataset.json").is_file():
        try:
            meta = json.loads((root / "dataset.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(root / "dataset.json", f"cannot parse nnU-Net's dataset.json ({err})") from err
    names = meta.get("channel_names") or meta.get("modality") or {}
    names = {str(k): str(v) for k, v in names.items()} if isinstance(names, dict) else {}
    channel_key = _channel_keys(names)
    labels = meta.get("labels")
    if isinstance(labels, dict):
        values = set()
        for k, v in labels.items():  # v2: name -> int or [ints] (regions); v1: "int" -> name
            for x in (v if isinstance(v, list) else [v, k]):
                if isinstance(x, int) or (isinstance(x, str) and x.isdigit()):
                    values.add(int(x))
        if values:
            scan.metadata["label_values"] = {"seg": sorted(values)}
        scan.metadata["nnunet_labels"] = labels
    scan.kinds["seg"] = "label"
    for split_dir, label_dir, split in (("imagestr", "labelstr", None), ("imagests", "labelsts", "test")):
        if split_dir not in dirs:
            continue
        for f in sorted(p for p in dirs[split_dir].iterdir() if p.is_file() and is_image_name(p.name)):
            stem = strip_image_suffix(f.name)
            m = _CHANNEL.match(stem)
            case, ch = (m["case"], m["ch"]) if m else (stem, None)
            key = channel_key(ch)
            name = names.get(str(int(ch))) if ch is not None else None
            rule = (f"channel {ch}" + (f" '{name}'" if name else "")) if ch is not None else "file without a channel suffix"
            scan.kinds[key] = "image"
            scan.found.append(Found(case, key, f, rule, split=split))
        if label_dir in dirs:
            for f in sorted(p for p in dirs[label_dir].iterdir() if p.is_file() and is_image_name(p.name)):
                scan.found.append(Found(strip_image_suffix(f.name), "seg", f, f"{dirs[label_dir].name}/", split=split))
    if not scan.found:
        raise DataError(root, "nnU-Net layout without images in imagesTr/ or imagesTs/")
    scan.optional.add("seg")  # test cases often come without labels
    tr_cases = {f.case for f in scan.found if f.split is None and f.key != "seg"}
    missing_labels = sorted(c for c in tr_cases if not any(f.case == c and f.key == "seg" for f in scan.found))
    if "labelstr" in dirs and missing_labels:
        scan.notes.append(f"{len(missing_labels)} training case(s) have no file in labelsTr: {', '.join(missing_labels[:5])}")
    for name in sorted(set(dirs) - {"imagestr", "labelstr", "imagests", "labelsts"}):
        for f in image_files(dirs[name]):
            scan.leftovers.append((_rel(f, root), "outside imagesTr / labelsTr / imagesTs"))
    return scan


def _channel_keys(names: dict):
    """channel '0000' -> key: the channel's name mapped to a medgen key, else ch0, ch1 ..."""
    mapped = {}
    for ch, name in names.items():
        try:
            idx = int(ch)
        except (TypeError, ValueError):
            continue
        mapped[idx] = key_for_name(str(name)) or sanitize_key(str(name))
    counts = {}
    for k in mapped.values():
        counts[k] = counts.get(k, 0) + 1
    mapped = {i: (k if counts[k] == 1 else f"{k}_{i}") for i, k in mapped.items()}

    def key(ch: str | None) -> str:
        if ch is None:
            return mapped.get(0, "image") if len(mapped) <= 1 else "image"
        return mapped.get(int(ch), f"ch{int(ch)}")

    return key


# ----- BIDS ----------------------------------------------------------------------------------------------

_BIDS_DEFAULT = {"T1w": "t1", "T2w": "t2", "FLAIR": "flair", "PDw": "pd", "PD": "pd", "T2starw": "t2star",
                 "ct": "ct", "CT": "ct", "pet": "pet", "dseg": "seg"}


def _bids_entities(name: str) -> tuple[dict[str, str], str]:
    stem = strip_image_suffix(name)
    parts = stem.split("_")
    entities = dict(p.split("-", 1) for p in parts[:-1] if "-" in p)
    return entities, parts[-1]


def _bids_key(entities: dict, suffix: str) -> str | None:
    if suffix == "mask":
        label = entities.get("label") or entities.get("desc") or ""
        if not label:
            return "mask"
        return key_for_name(label + "mask") or key_for_name(label) or f"{sanitize_key(label)}_mask"
    key = _BIDS_DEFAULT.get(suffix)
    if key == "t1" and "ce" in entities:
        return "t1c"
    return key


def scan_bids(root: Path, patterns: dict | None = None) -> Scan:
    """BIDS-like: sub-<s>/[ses-<t>/]<datatype>/sub-<s>[_ses-<t>]_<entities>_<suffix>.nii.gz, masks anywhere
    (derivatives/ too) as *_mask / *_dseg. Keys by suffix (T1w -> t1, T2w -> t2, FLAIR -> flair, PDw -> pd,
    ct, pet, dseg -> seg, label-lesion_mask -> lesion, mask -> mask; T1w with ce-<agent> -> t1c), or by
    --key patterns on the file name. sourcedata/ and code/ are skipped."""
    scan = Scan("bids", spatial_dims=3)
    for f in image_files(root):
        entities, suffix = _bids_entities(f.name)
        sub = entities.get("sub")
        if not sub:
            scan.leftovers.append((_rel(f, root), "no sub-<label> in the file name"))
            continue
        if patterns:
            key, rule = _match_any(f.name, patterns)
        else:
            key = _bids_key(entities, suffix)
            rule = f"*_{suffix}" if key else ""
        if key is None:
            why = "matches no --key pattern" if patterns else f"suffix '{suffix}' is not an anatomical image or mask (use --key)"
            scan.leftovers.append((_rel(f, root), why))
            continue
        ses = entities.get("ses")
        case = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
        scan.found.append(Found(case, key, f, rule, subject=f"sub-{sub}"))
    _dicom_leftovers(scan, root)
    return scan


def _match_any(text: str, patterns: dict, ignore_case: bool = False) -> tuple[str | None, str]:
    for key, pats in patterns.items():
        for p in pats:
            if _glob_match(text, p, ignore_case):
                return key, p
    return None, ""


# ----- subject folders -----------------------------------------------------------------------------------


def scan_subjects(root: Path, patterns: dict | None = None) -> Scan:
    """One folder per subject (optionally a session folder inside), files named by what they are:
    T1.nii.gz -> t1, FLAIR -> flair, lesion_mask -> lesion, T1POST -> t1c, other names -> the name."""
    scan = Scan("subjects", spatial_dims=3)
    for f in image_files(root):
        parts = f.relative_to(root).parts
        if len(parts) not in (2, 3):
            scan.leftovers.append((_rel(f, root), "not in a <subject>/[<session>/] folder"))
            continue
        subject = parts[0]
        case = subject if len(parts) == 2 else f"{subject}_{parts[1]}"
        stem = strip_image_suffix(f.name)
        if patterns:
            key, rule = _match_any(f.name, patterns)
            if key is None:
                scan.leftovers.append((_rel(f, root), "matches no --key pattern"))
                continue
        else:
            key, rule = key_for_name(stem) or sanitize_key(stem), f.name
        scan.found.append(Found(case, key, f, rule, subject=subject))
    _dicom_leftovers(scan, root)
    return scan


# ----- flat folders with name patterns ------------------------------------------------------------------


def scan_flat(root: Path, patterns: dict | None = None) -> Scan:
    """Keys by file-name patterns: the case id is what '*' matched (several '*': joined by '_', the first
    naming the subject); a pattern with '/' is matched against the path below root. Without patterns,
    files named <case>_<key>.<ext> whose <key> is a known name (t1, T2w, flair, mask ...) are used."""
    from medgen.data.datalist import match_patterns

    scan = Scan("flat")
    files = image_files(root)
    if patterns:
        matched, used = match_patterns(root, files, patterns)
        for (case, key), (rel, rule, captures) in sorted(matched.items()):
            subject = captures[0] if len(captures) > 1 else _bids_subject(case)
            scan.found.append(Found(case, key, root / rel, rule, subject=subject))
        for f in files:
            if f not in used:
                scan.leftovers.append((_rel(f, root), "matches no --key pattern"))
        _dicom_leftovers(scan, root)
        return scan
    for f in files:
        stem = strip_image_suffix(f.name)
        m = re.match(r"^(?P<case>.+?)[_-](?P<word>[^_-]+)$", stem)
        key = key_for_name(m["word"]) if m else None
        if key is None:
            scan.leftovers.append((_rel(f, root), "name is not <case>_<key> with a known key (give --key patterns)"))
            continue
        case = m["case"] if f.parent == root else f"{f.parent.name}_{m['case']}"
        scan.found.append(Found(case, key, f, f"*_{m['word']}{image_suffix(f.name)}", subject=_bids_subject(case)))
    if not scan.found:
        raise DataError(root, "cannot tell the keys from the file names; give one pattern per key, e.g. "
                              "--key t1='*_t1.nii.gz' --key mask='*_mask.nii.gz'")
    return scan


def _bids_subject(case: str) -> str:
    m = re.match(r"^(sub-[A-Za-z0-9]+)", case)
    return m.group(1) if m else case


# ----- DICOM series --------------------------------------------------------------------------------------


def scan_dicom(root: Path, patterns: dict | None = None) -> Scan:
    """Every DICOM series under root: <subject>/[<session>/]<series folder>/ (series directly in root are
    grouped by PatientID). The key comes from --key patterns matched against the SeriesDescription
    (ignoring case), then the folder path below root and the folder name, or else from the
    SeriesDescription / folder name ('T1 MPRAGE' -> t1)."""
    from medgen.data.dicom import find_series

    scan = Scan("dicom", spatial_dims=3)
    series = find_series(root)
    if not series:
        raise DataError(root, "found no DICOM series")
    per_folder: dict[Path, int] = {}
    for s in series:
        per_folder[s.folder] = per_folder.get(s.folder, 0) + 1
    for s in series:
        rel = _rel(s.folder, root)
        parts = [] if rel in (".", "") else rel.split("/")
        label = f"series '{s.description or s.uid}' in {rel or '.'} ({len(s.files)} file(s))"
        if patterns:
            key, rule = _match_any(s.description, patterns, ignore_case=True)
            if key is None:
                key, rule = _match_any(rel, patterns)
            if key is None:
                key, rule = _match_any(s.folder.name, patterns)
            rule = f"{rule!r}" if key else ""
        else:
            key = key_from_text(s.description) or key_from_text(s.folder.name)
            rule = f"description '{s.description}'" if key_from_text(s.description) else f"folder '{s.folder.name}'"
        if key is None:
            why = "matches no --key pattern" if patterns else "its description / folder names no known key (use --key)"
            scan.leftovers.append((label, why))
            continue
        if len(parts) >= 2:
            subject = parts[0]
            case = subject if len(parts) == 2 else f"{subject}_{parts[1]}"
        elif len(parts) == 1 and per_folder[s.folder] > 1:  # several series in one subject folder
            subject = case = parts[0]
        else:
            subject = case = sanitize_key(s.patient_id) if s.patient_id else (parts[0] if parts else root.name)
        # a folder with one series is the series; otherwise one of its files names it
        path = s.folder if per_folder[s.folder] == 1 else Path(s.files[0])
        scan.found.append(Found(case, key, path, rule, subject=subject))
    return scan


# ----- OCT B-scans ---------------------------------------------------------------------------------------

_MASK_DIRS = ("masks", "mask", "abnormal_masks", "normal_masks", "labels")


def scan_oct(root: Path, patterns: dict | None = None) -> Scan:
    """OCT: normal/ and abnormal/ B-scans -> key 'image' with 'label' 0 / 1; a mask with the same file
    name (or <name>_mask) in masks/, abnormal_masks/ or normal_masks/ -> key 'mask'. Abnormal scans all
    go to the test split: oct_anogan trains and sets its threshold on normal scans only."""
    if patterns:
        raise ConfigError("--key does not apply to the OCT layout (normal/, abnormal/, masks/): the folders name "
                          "the keys")
    scan = Scan("oct", spatial_dims=2)
    dirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    if "normal" not in dirs and "abnormal" not in dirs:
        raise DataError(root, "the OCT layout needs a normal/ and / or an abnormal/ folder of B-scans")
    masks: dict[str, Path] = {}
    for name in _MASK_DIRS:
        if name in dirs:
            for f in image_files(dirs[name], dicom=True):
                stem = strip_image_suffix(f.name)
                masks.setdefault(stem, f)
                if stem.endswith("_mask"):
                    masks.setdefault(stem[: -len("_mask")], f)
    stems: dict[str, list[str]] = {}
    for folder in ("normal", "abnormal"):
        for f in image_files(dirs[folder], dicom=True) if folder in dirs else []:
            stems.setdefault(strip_image_suffix(f.name), []).append(folder)
    used_masks = set()
    for folder, label in (("normal", 0), ("abnormal", 1)):
        for f in image_files(dirs[folder], dicom=True) if folder in dirs else []:
            stem = strip_image_suffix(f.name)
            case = stem if len(stems[stem]) == 1 else f"{folder}_{stem}"
            scan.found.append(Found(case, "image", f, f"{folder}/", values={"label": label}))
            scan.strata[case] = str(label)
            if stem in masks:
                scan.found.append(Found(case, "mask", masks[stem], f"{masks[stem].parent.name}/"))
                used_masks.add(masks[stem])
    scan.kinds.update(image="image", mask="label", label="value")
    scan.optional.add("mask")
    scan.stratum_fractions["1"] = (0.0, 0.0, 1.0)
    scan.metadata["labels"] = {"0": "normal", "1": "abnormal"}
    for name, folder in sorted(dirs.items()):
        if name in ("normal", "abnormal"):
            continue
        for f in image_files(folder, dicom=True):
            if f not in used_masks:
                why = "mask without a B-scan of the same name" if name in _MASK_DIRS else "not in normal/ or abnormal/"
                scan.leftovers.append((_rel(f, root), why))
    return scan


SCANNERS = {"nnunet": scan_nnunet, "bids": scan_bids, "subjects": scan_subjects, "flat": scan_flat,
            "dicom": scan_dicom, "oct": scan_oct}
