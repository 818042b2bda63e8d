"""Write phantom datasets to disk in the MSD / nnU-Net convention (a folder + dataset.json).

Why: the pipelines read datasets, not Python objects; writing the phantoms exactly like a user's data
(NIfTI with its affine, PNG, TSV) means the demo and the tests exercise the same loaders a user hits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medgen.errors import MedgenError
from medgen.files import atomic_write

GENERATOR = "medgen.data.phantoms"
PHANTOM_KINDS = {
    "head": "3D heads: T1/T2/PD/FLAIR MR, CT in HU, full- and simulated low-dose FDG-like PET, tissue/lesion labels",
    "lesion_domains": "3D MR (t1, t2, flair) with white-matter lesion masks from two simulated scanners A and B",
    "oct": "2D retinal OCT B-scans: normal for training, normal + abnormal (fluid, drusen, foci) with masks for test",
    "expression": "samples x genes expression matrix driven by latent programmes, with group / sex labels",
}
_OPTIONS = {
    "head": {"spacing": (4.0, 4.0, 4.0), "lesions": None, "dose_fraction": 0.25,
             "frame_duration_s": 600.0, "sensitivity": 1e-3},
    "lesion_domains": {"spacing": (4.0, 4.0, 4.0), "lesions": None},
    "oct": {"format": "png", "bit_depth": 8},
    "expression": {"n_genes": 1000, "n_programs": 5},
}
_DEFAULT_N = {"head": 8, "lesion_domains": 8, "oct": 60, "expression": 500}
_DEFAULT_SHAPE = {"head": (48, 48, 48), "lesion_domains": (48, 48, 48), "oct": (256, 256)}


def _case_seed(seed: int, *stream: int) -> int:
    return int(np.random.SeedSequence([int(seed), *stream]).generate_state(1)[0] & 0x7FFFFFFF)


def _split(n: int) -> tuple[int, int, int]:
    """(training, validation, test) sizes: about 70 / 10 / 20 %, at least one each from 3 cases."""
    if n <= 1:
        return n, 0, 0
    if n == 2:
        return 1, 0, 1
    n_test = max(1, round(0.2 * n))
    n_val = max(1, round(0.1 * n))
    return n - n_val - n_test, n_val, n_test


def _prepare_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise MedgenError(f"{out_dir} exists and is not a folder: choose another dataset folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise MedgenError(f"dataset folder {out_dir} exists and is not empty: "
                              "choose another folder or pass overwrite=True")
        # Only ever delete what we wrote ourselves.
        try:
            meta = json.loads((out_dir / "dataset.json").read_text())
        except (OSError, ValueError):
            meta = {}
        if not isinstance(meta, dict) or meta.get("generator") != GENERATOR:
            raise MedgenError(f"refusing to overwrite {out_dir}: it is not a medgen phantom dataset "
                              "(no dataset.json written by medgen.data.phantoms); empty it yourself")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)


def _save_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    atomic_write(path, lambda tmp: nib.save(img, str(tmp)), fsync=False)


def _save_png(path: Path, array: np.ndarray, bit_depth: int = 8, is_label: bool = False) -> None:
    from PIL import Image

    if is_label:
        picture = Image.fromarray(array.astype(np.uint8))
    elif bit_depth == 16:
        picture = Image.fromarray(np.round(np.clip(array, 0, 1) * 65535).astype(np.uint16))
    else:
        picture = Image.fromarray(np.round(np.clip(array, 0, 1) * 255).astype(np.uint8))
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"), fsync=False)


def _version() -> str:
    try:
        from medgen import __version__

        return __version__
    except ImportError:  # pragma: no cover
        return "unknown"


def _write_json(out_dir: Path, meta: dict) -> Path:
    return atomic_write(out_dir / "dataset.json", json.dumps(meta, indent=1))


def _head_cases(out_dir: Path, n: int, seed: int, shape, opts: dict) -> tuple[list[dict], dict]:
    from medgen.data.dose import simulate_dose_pair, voxel_volume_ml
    from medgen.data.phantoms.head import make_head

    vol = voxel_volume_ml(opts["spacing"])
    cases, dose_info = [], None
    for i in range(n):
        cid = f"case{i:03d}"
        cseed, dseed = _case_seed(seed, 0, i), _case_seed(seed, 1, i)
        h = make_head(cseed, shape, opts["spacing"], lesions=opts["lesions"])
        full, low, dose_info = simulate_dose_pair(
            h["pet"], opts["dose_fraction"], dseed, frame_duration_s=opts["frame_duration_s"],
            sensitivity=opts["sensitivity"], voxel_volume_ml=vol)
        arrays = {"t1": h["t1"], "t2": h["t2"], "pd": h["pd"], "flair": h["flair"], "ct": h["ct"],
                  "full_dose": full, "low_dose": low, "activity": h["pet"], "tissue": h["tissue"],
                  "mask": h["head_mask"], "brain_mask": h["brain_mask"], "lesion": h["lesion"]}
        case: dict[str, Any] = {"id": cid}
        for key, arr in arrays.items():
            rel = f"{cid}/{key}.nii.gz"
            _save_nifti(out_dir / rel, arr, h["affine"])
            case[key] = rel
        case["mr"] = case["t1"]
        case["seed"], case["dose_seed"] = cseed, dseed
        cases.append(case)
    dose_info = dict(dose_info or {}, seed="per case: dose_seed")
    return cases, dose_info


def _lesion_cases(out_dir: Path, n: int, seed: int, shape, opts: dict) -> list[list[dict]]:
    from medgen.data.phantoms.head import make_head

    per_domain = []
    for d, domain in enumerate(("A", "B")):
        cases = []
        for i in range(n):
            cid = f"case{domain}{i:03d}"
            cseed = _case_seed(seed, 10 + d, i)  # different subjects in each domain
            h = make_head(cseed, shape, opts["spacing"], lesions=opts["lesions"], domain=domain)
            case: dict[str, Any] = {"id": cid, "domain": domain, "seed": cseed}
            for key in ("t1", "t2", "flair", "lesion", "brain_mask"):
                rel = f"{cid}/{key}.nii.gz"
                _save_nifti(out_dir / rel, h[key], h["affine"])
                case[key] = rel
            cases.append(case)
        per_domain.append(cases)
    return per_domain


def _oct_cases(out_dir: Path, n: int, seed: int, shape, opts: dict) -> dict[str, list[dict]]:
    from medgen.data.phantoms.oct import ANOMALIES, make_oct_bscan

    fmt = str(opts["format"]).lower()
    if fmt not in ("png", "nifti"):
        raise MedgenError(f"oct format must be 'png' or 'nifti', got {opts['format']!r}")
    if int(opts["bit_depth"]) not in (8, 16):
        raise MedgenError(f"oct bit_depth must be 8 or 16, got {opts['bit_depth']!r}")
    n_test = max(2, round(n / 3)) if n >= 4 else 0
    n_abn = n_test // 2
    n_val = max(1, round(n / 6)) if n >= 4 else 0
    n_train = n - n_test - n_val
    rng = np.random.default_rng([int(seed), 30])
    kinds = sorted(ANOMALIES)
    ext = "png" if fmt == "png" else "nii.gz"
    out: dict[str, list[dict]] = {"training": [], "validation": [], "test": []}
    plan = [("training", 0)] * n_train + [("validation", 0)] * n_val + [("test", 0)] * (n_test - n_abn) \
        + [("test", 1)] * n_abn
    for i, (split, label) in enumerate(plan):
        cid = f"bscan{i:04d}"
        anomalies: list[str] = []
        if label:
            pick = rng.random(len(kinds)) < 0.5
            pick[rng.integers(len(kinds))] = True
            anomalies = [k for k, p in zip(kinds, pick) if p]
        cseed = _case_seed(seed, 31, i)
        o = make_oct_bscan(cseed, shape, anomalies)
        case: dict[str, Any] = {"id": cid, "label": label, "anomalies": anomalies, "seed": cseed}
        for key, arr, is_label in (("image", o["image"], False), ("mask", o["mask"], True)):
            rel = f"{key}s/{cid}.{ext}"
            if fmt == "png":
                _save_png(out_dir / rel, arr, int(opts["bit_depth"]), is_label)
            else:
                _save_nifti(out_dir / rel, arr if is_label else arr.astype(np.float32), np.eye(4))
            case[key] = rel
        out[split].append(case)
    return out


def write_phantom_dataset(
    kind: str,
    out_dir,
    n_cases: int | None = None,
    seed: int = 0,
    shape: Sequence[int] | None = None,
    overwrite: bool = False,
    **options,
) -> Path:
    """Write a phantom dataset folder and return the path of its ``dataset.json``.

    Kinds and defaults (``n_cases`` / ``shape`` / options):
      - "head": 8 cases of 48^3 at ``spacing`` (4, 4, 4) mm (a 192 mm field of view); per case t1, t2, pd,
        flair, ct (HU), full_dose and low_dose PET (Bq/mL; counts drawn from the noise-free ``activity``,
        low dose = binomial thinning at ``dose_fraction`` 0.25, ``frame_duration_s`` 600,
        ``sensitivity`` 1e-3), activity (noise-free truth), tissue, mask (head), brain_mask, lesion;
        ``mr`` points at the t1 file. ``lesions`` None draws 1-4 per case. Split ~70/10/20 %.
      - "lesion_domains": ``n_cases`` 8 subjects *per domain* (16 in all), 48^3 at 4 mm, keys t1, t2, flair,
        lesion, brain_mask, and ``domain`` "A" (source) or "B" (target) on every case; both domains in every
        split; target labels are written for evaluation (a UDA pipeline must not train on them).
      - "oct": 60 B-scans of 256 x 256: ~1/2 normal training, ~1/6 normal validation, ~1/3 test of which
        half are abnormal (random non-empty subset of fluid / drusen / foci). ``image`` and ``mask``
        (anomaly mask, 0/1) as PNG (``format`` "png", ``bit_depth`` 8 or 16) or NIfTI (``format`` "nifti");
        ``label`` 0 normal / 1 abnormal on every case.
      - "expression": 500 samples x ``n_genes`` 1000 with ``n_programs`` 5; expression.tsv, labels.tsv,
        programs.tsv, loadings.tsv; cases are sample ids split 80/10/10.
    Refuses to write into a non-empty folder unless ``overwrite=True``, and then only replaces a folder
    that holds a phantom dataset written by this function.
    """
    if kind not in PHANTOM_KINDS:
        raise MedgenError(f"unknown phantom kind {kind!r}; choose from {sorted(PHANTOM_KINDS)}")
    unknown = sorted(set(options) - set(_OPTIONS[kind]))
    if unknown:
        raise MedgenError(f"unknown options {unknown} for phantom '{kind}'; known: {sorted(_OPTIONS[kind])}")
    opts = {**_OPTIONS[kind], **options}
    if int(seed) != seed or seed < 0:
        raise MedgenError(f"phantom seed must be a non-negative integer, got {seed!r}")
    n = _DEFAULT_N[kind] if n_cases is None else int(n_cases)
    if n < 1:
        raise MedgenError(f"n_cases must be at least 1, got {n_cases!r}")
    if kind in _DEFAULT_SHAPE:
        shape = tuple(int(s) for s in (shape or _DEFAULT_SHAPE[kind]))
    elif shape is not None:
        raise MedgenError("shape does not apply to the expression phantom: use n_cases and n_genes")
    if "spacing" in opts:
        opts["spacing"] = tuple(float(s) for s in opts["spacing"])
    out_dir = Path(out_dir)
    _prepare_dir(out_dir, overwrite)

    meta: dict[str, Any] = {
        "name": f"phantom_{kind}",
        "description": PHANTOM_KINDS[kind],
        "reference": "procedural phantom written by medgen.data.phantoms (synthetic, no real subjects)",
        "licence": "generated data, no restrictions",
        "generator": GENERATOR,
        "medgen_version": _version(),
        "phantom": {"kind": kind, "seed": int(seed), "n_cases": n, "shape": list(shape) if shape else None,
                    "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()}},
    }
    if kind == "head":
        from medgen.data.phantoms.head import TISSUE_NAMES

        cases, dose_info = _head_cases(out_dir, n, seed, shape, opts)
        n_tr, n_va, _ = _split(n)
        meta["keys"] = {k: "image" for k in ("t1", "t2", "pd", "flair", "mr", "ct", "full_dose", "low_dose",
                                             "activity")}
        meta["keys"].update({k: "label" for k in ("tissue", "mask", "brain_mask", "lesion")})
        meta["labels"] = {str(k): v for k, v in TISSUE_NAMES.items()}
        meta["units"] = {"ct": "HU", "full_dose": "Bq/mL", "low_dose": "Bq/mL", "activity": "Bq/mL",
                         "t1": "a.u.", "t2": "a.u.", "pd": "a.u.", "flair": "a.u."}
        meta["simulated"] = {"phantom": True, "low_dose": dose_info}
        meta["training"], meta["validation"], meta["test"] = (
            cases[:n_tr], cases[n_tr:n_tr + n_va], cases[n_tr + n_va:])
    elif kind == "lesion_domains":
        dom_a, dom_b = _lesion_cases(out_dir, n, seed, shape, opts)
        n_tr, n_va, _ = _split(n)
        meta["keys"] = {"t1": "image", "t2": "image", "flair": "image", "lesion": "label", "brain_mask": "label"}
        meta["domains"] = {"A": "source: simulated scanner A (3T-like contrast, low noise, mild bias)",
                           "B": "target: simulated scanner B (flatter contrast, more noise, strong bias, "
                                "thick slices); labels present for evaluation only"}
        meta["simulated"] = {"phantom": True, "domain_shift": "constructed (contrast, noise, bias, resolution)"}
        meta["training"] = dom_a[:n_tr] + dom_b[:n_tr]
        meta["validation"] = dom_a[n_tr:n_tr + n_va] + dom_b[n_tr:n_tr + n_va]
        meta["test"] = dom_a[n_tr + n_va:] + dom_b[n_tr + n_va:]
    elif kind == "oct":
        splits = _oct_cases(out_dir, n, seed, shape, opts)
        meta["keys"] = {"image": "image", "mask": "label"}
        meta["labels"] = {"0": "normal", "1": "abnormal"}
        meta["simulated"] = {"phantom": True, "anomalies": ["fluid", "drusen", "foci"]}
        meta.update(splits)
    else:
        from medgen.data.phantoms.expression import make_expression

        e = make_expression(seed, n_samples=n, n_genes=int(opts["n_genes"]), n_programs=int(opts["n_programs"]))
        tables = {"expression": "expression.tsv", "labels": "labels.tsv", "programs": "programs.tsv",
                  "loadings": "loadings.tsv"}
        for key, frame in zip(tables, (e["matrix"], e["labels"], e["programs"], e["loadings"])):
            atomic_write(out_dir / tables[key], lambda tmp, f=frame: f.to_csv(tmp, sep="\t", float_format="%.6g"),
                         fsync=False)
        meta["keys"] = {}
        meta["tables"] = tables
        meta["simulated"] = {"phantom": True, "label_programs": {"group": ["program0", "program1"],
                                                                 "sex": ["program2"]}}
        ids = list(e["matrix"].index)
        order = np.random.default_rng([int(seed), 40]).permutation(len(ids))
        n_te = max(1, round(0.1 * len(ids))) if len(ids) >= 3 else 0
        n_va = n_te
        sel = [ids[i] for i in order]
        meta["test"] = [{"id": s} for s in sel[:n_te]]
        meta["validation"] = [{"id": s} for s in sel[n_te:n_te + n_va]]
        meta["training"] = [{"id": s} for s in sel[n_te + n_va:]]
    return _write_json(out_dir, meta)
