"""Build a paired low / full-dose dataset from full-dose-only PET, so `pet_lowdose` runs on it like on real pairs.

Why a dataset on disk (not an on-the-fly transform): the low-dose draw must be fixed, recorded and the same
for every method compared (the baselines, the L1-only U-Net and both cGAN stages see the same noisy input),
and the outputs must be able to say that the low dose was simulated. Each written case holds:

- `full_dose`: the source image (Bq/mL, unchanged, a copy in NIfTI with the source affine),
- `low_dose`: Poisson thinning of its counts at `fraction` (`medgen.data.dose.simulate_low_dose`, input_is
  "measured": the source already carries full-dose counting noise), seeded per case,
- `mask`: a head mask by thresholding the full-dose image (largest component, holes filled),

and dataset.json records `simulated.low_dose` (method, fraction, seed, frame duration, decay factor,
sensitivity and where each value came from: the JSON sidecar beside the image, or a default / argument).

How the cases are split (`medgen simulate-pet --split-by`, `split_mode`):
- "subject": each source image is one case; whole subjects go to training / validation / test, by explicit
  id lists (`splits`) or by seeded fractions (`subject_splits`, `medgen.data.splitting.split_cases`);
- "slabs": ONE subject cut along one axis into disjoint slabs used as the training, validation and test
  "cases" (`parts`, `slab_parts`) - the model is then tested on a part of the brain it never saw, not on a
  new subject; reports must say so;
- "test": every case in the test split, to apply a model trained elsewhere.

The written dataset passes `medgen check-data` as it is: provenance fields that name files (`source`) are
declared as values in dataset.json's "keys", so they are not checked as images of the case.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from medgen.errors import DataError, MedgenError
from medgen.files import atomic_write

GENERATOR = "medgen.data.simulate_pet"
# The amyloid split used by the benchmark: left slab trains, a thin midline slab validates, right slab tests.
LEFT_RIGHT_PARTS = {"training": (0.0, 0.4375), "validation": (0.4375, 0.5625), "test": (0.5625, 1.0)}
SPLIT_MODES = ("subject", "slabs", "test")


def slab_parts(bounds) -> dict[str, tuple[float, float]]:
    """Two cut points "a,b" (fractions of the axis, 0 < a < b < 1) -> training [0, a), validation [a, b),
    test [b, 1]; a == b gives no validation slab."""
    try:
        a, b = (float(x) for x in (bounds.split(",") if isinstance(bounds, str) else bounds))
    except (TypeError, ValueError):
        raise MedgenError(f"slab bounds must be two fractions 'a,b' with 0 < a <= b < 1, got {bounds!r}") from None
    if not 0.0 < a <= b < 1.0:
        raise MedgenError(f"slab bounds must be two fractions 'a,b' with 0 < a <= b < 1, got {bounds!r}")
    parts = {"training": (0.0, a), "validation": (a, b), "test": (b, 1.0)}
    return {k: v for k, v in parts.items() if v[1] > v[0]}


def subject_splits(ids, fractions=(0.6, 0.2, 0.2), seed: int = 0) -> dict[str, list[str]]:
    """Whole subjects per split by seeded fractions (`medgen.data.splitting.split_cases`: every split that a
    non-zero fraction asks for gets a subject when there are enough of them)."""
    from medgen.data.splitting import split_cases

    return split_cases(list(ids), fractions, seed=seed)


def _sidecar_for(path: Path) -> Path | None:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            cand = path.with_name(name[: -len(ext)] + ".json")
            return cand if cand.exists() else None
    return None


def head_mask(image: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """Voxels above `threshold` x the 99.5th percentile of the positive voxels, the largest connected
    component, holes filled and one voxel of closing: a head / brain mask for PET without a segmentation."""
    from scipy import ndimage

    pos = image[image > 0]
    if pos.size == 0:
        return np.zeros(image.shape, dtype=np.uint8)
    m = image > threshold * float(np.percentile(pos, 99.5))
    lab, n = ndimage.label(m)
    if n > 1:
        sizes = ndimage.sum(m, lab, index=range(1, n + 1))
        m = lab == (int(np.argmax(sizes)) + 1)
    m = ndimage.binary_closing(m, iterations=1)
    m = ndimage.binary_fill_holes(m)
    return m.astype(np.uint8)


def _crop_affine(affine: np.ndarray, axis: int, start: int) -> np.ndarray:
    shift = np.zeros(4)
    shift[axis] = start
    shift[3] = 1.0
    out = affine.copy()
    out[:3, 3] = (affine @ shift)[:3]
    return out


def _save(path: Path, array: np.ndarray, affine: np.ndarray, header=None) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    if header is not None:
        img.header.set_xyzt_units(*header.get_xyzt_units())
    atomic_write(path, lambda tmp: nib.save(img, str(tmp)), fsync=False)


def simulate_paired_dataset(
    sources: Mapping[str, str | Path] | Sequence[str | Path],
    out_dir,
    fraction: float = 0.25,
    seed: int = 0,
    splits: Mapping[str, Sequence[str]] | None = None,
    split_fractions: Sequence[float] | str | None = None,
    parts: Mapping[str, tuple[float, float]] | None = None,
    part_axis: int = 0,
    frame_duration_s: float | None = None,
    decay_factor: float | None = None,
    sensitivity: float | None = None,
    mask_threshold: float = 0.1,
    input_is: str = "measured",
    overwrite: bool = False,
) -> Path:
    """Write `out_dir/dataset.json` with `low_dose` (simulated), `full_dose` and `mask` per case; returns its path.

    Args:
        sources: {case id: full-dose NIfTI} (or a list of paths; ids from the file / folder names).
        fraction: dose fraction f of the simulated low dose (0.25, 0.1, 0.05 ...).
        seed: case i's draw uses numpy seed [seed, i]; recorded per case as `dose_seed`.
        splits: {split: [ids]}; default: all cases in "test" (e.g. to apply a trained model).
        split_fractions: instead of `splits`, whole subjects split by these training / validation / test
            fractions (seeded by `seed`, `subject_splits`).
        parts: one subject cut into slabs {split: (start, stop) fractions along `part_axis`}; needs exactly one
            source. Use `LEFT_RIGHT_PARTS` for the benchmark's split, `slab_parts("a,b")` for others.
        frame_duration_s / decay_factor: None reads them from the JSON sidecar beside each image
            (`<name>.json`, dcm2niix), falling back to `medgen.data.dose`'s defaults (600 s, 1.0).
        sensitivity: effective counts per decay (None: medgen.data.dose.DEFAULT_SENSITIVITY); it sets the
            noise level (see docs/phantoms.md).
        input_is: "measured" (a real reconstruction, default) or "expected" (a noise-free mean, e.g. a template).
    """
    from medgen.data.dose import DEFAULT_SENSITIVITY, read_pet_sidecar, simulate_low_dose, voxel_volume_ml
    from medgen.data.io import load_array

    if isinstance(sources, Mapping):
        items = [(str(k), Path(v)) for k, v in sources.items()]
    else:
        items = []
        for p in sources:
            p = Path(p)
            stem = p.name.split(".")[0]
            items.append((p.parent.name if stem in ("pet", "image", "full_dose") else stem, p))
    if not items:
        raise MedgenError("simulate_paired_dataset needs at least one full-dose image")
    if parts is not None and len(items) != 1:
        raise MedgenError(f"`parts` cuts ONE subject into slabs; got {len(items)} sources")
    if splits is not None and split_fractions is not None:
        raise MedgenError("give either `splits` (id lists) or `split_fractions`, not both")
    ids = [cid for cid, _ in items]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise MedgenError(f"two sources get the same case id {dup} (ids come from the file or folder names): "
                          "give {id: path} pairs instead")
    if split_fractions is not None and parts is None:
        splits = subject_splits(ids, split_fractions, seed)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        meta_path = out_dir / "dataset.json"
        ours = False
        if meta_path.exists():
            try:
                # the module's earlier name counts too: datasets written before it moved are still ours
                ours = json.loads(meta_path.read_text()).get("generator") in (GENERATOR, "medgen.pipelines.pet_lowdose_data")
            except (OSError, ValueError, AttributeError):
                ours = False
        if not overwrite:
            raise MedgenError(f"{out_dir} exists and is not empty: choose another folder or pass overwrite=True")
        if not ours:
            raise MedgenError(f"refusing to overwrite {out_dir}: it was not written by {GENERATOR}")
        import shutil

        shutil.rmtree(out_dir)
    sens = float(sensitivity) if sensitivity is not None else DEFAULT_SENSITIVITY
    cases: list[dict] = []
    infos = {}
    for i, (cid, path) in enumerate(items):
        import nibabel as nib

        arr, affine = load_array(path)
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 3:
            raise DataError(path, f"expected one 3D PET volume (a static frame), got shape {arr.shape}")
        if not (arr > 0).any():
            raise DataError(path, "full-dose image has no positive voxels: nothing to simulate from")
        sidecar = _sidecar_for(path)
        side = read_pet_sidecar(sidecar) if sidecar is not None else None
        sources_used = {}
        frame = frame_duration_s if frame_duration_s is not None else (side["frame_duration_s"] if side else None)
        decay = decay_factor if decay_factor is not None else (side["decay_factor"] if side else None)
        sources_used["frame_duration_s"] = ("argument" if frame_duration_s is not None else
                                            ("sidecar" if side and "frame_duration_s" not in side["defaults_used"]
                                             else "default"))
        sources_used["decay_factor"] = ("argument" if decay_factor is not None else
                                        ("sidecar" if side and "decay_factor" not in side["defaults_used"]
                                         else "default"))
        sources_used["sensitivity"] = "argument" if sensitivity is not None else "default"
        kw = {}
        if frame is not None:
            kw["frame_duration_s"] = float(frame)
        if decay is not None:
            kw["decay_factor"] = float(decay)
        spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))
        rng = np.random.default_rng([int(seed), i])
        low, info = simulate_low_dose(arr, fraction, rng, sensitivity=sens, voxel_volume_ml=voxel_volume_ml(spacing),
                                      input_is=input_is, **kw)
        info.update(seed=[int(seed), i], parameter_sources=sources_used,
                    sidecar=str(sidecar) if sidecar else None, sidecar_notes=(side or {}).get("notes", []))
        infos[cid] = info
        mask = head_mask(arr, mask_threshold)
        header = nib.load(str(path)).header
        arrays = {"full_dose": arr, "low_dose": low, "mask": mask}
        if parts is None:
            entry = {"id": cid, "dose_seed": [int(seed), i], "source": str(path)}
            for key, a in arrays.items():
                rel = f"{cid}/{key}.nii.gz"
                _save(out_dir / rel, a, affine, header)
                entry[key] = rel
            cases.append(entry)
        else:
            n = arr.shape[part_axis]
            for split, (lo, hi) in parts.items():
                start, stop = int(round(lo * n)), int(round(hi * n))
                if stop - start < 1:
                    raise MedgenError(f"part {split!r} ({lo}, {hi}) of an axis of {n} voxels is empty")
                pid = f"{cid}_{split}"
                entry = {"id": pid, "dose_seed": [int(seed), i], "source": str(path), "split_part": split,
                         "part": {"axis": part_axis, "start": start, "stop": stop}}
                sl = [slice(None)] * 3
                sl[part_axis] = slice(start, stop)
                for key, a in arrays.items():
                    rel = f"{pid}/{key}.nii.gz"
                    _save(out_dir / rel, np.ascontiguousarray(a[tuple(sl)]), _crop_affine(affine, part_axis, start),
                          header)
                    entry[key] = rel
                entry["_split"] = split
                cases.append(entry)
    if parts is not None:
        tags = [c.pop("_split") for c in cases]
        by_split = {s: [c for c, t in zip(cases, tags) if t == s] for s in list(parts)}
    else:
        ids = [c["id"] for c in cases]
        wanted = splits or {"test": ids}
        unknown = [x for v in wanted.values() for x in v if x not in ids]
        if unknown:
            raise MedgenError(f"splits name unknown case ids {unknown}; ids are {ids}")
        by_split = {s: [c for c in cases if c["id"] in set(v)] for s, v in wanted.items()}
    meta = {
        "name": out_dir.name, "generator": GENERATOR,
        "description": f"full-dose PET with SIMULATED low dose (fraction {fraction})",
        # `source` names the original file (provenance), not an image of the case: a value for check-data
        "keys": {"full_dose": "image", "low_dose": "image", "mask": "label", "source": "value"},
        "units": {"full_dose": "Bq/mL", "low_dose": "Bq/mL"},
        "simulated": {"low_dose": {"simulated": True, "fraction": float(fraction), "seed": int(seed),
                                   "per_case": infos},
                      "mask": f"threshold {mask_threshold} x p99.5 of full_dose, largest component, filled"},
    }
    if parts is not None:
        meta["split_note"] = (f"one subject cut into disjoint slabs along voxel axis {part_axis}: "
                              + ", ".join(f"{s} {lo:.3f}-{hi:.3f}" for s, (lo, hi) in parts.items())
                              + "; the test part is unseen anatomy of the SAME subject")
    for s in ("training", "validation", "test"):
        meta[s] = by_split.get(s, [])
    out_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write(out_dir / "dataset.json", json.dumps(meta, indent=1))


def simulate_pet_command(args) -> int:
    """`medgen simulate-pet`: the dataset, one line per split, then check-data's summary (exit 1 on a problem)."""
    from medgen.data.check import main as check_main

    mode = args.split_by or ("slabs" if len(args.sources) == 1 else "subject")
    if mode not in SPLIT_MODES:
        raise MedgenError(f"--split-by must be one of {', '.join(SPLIT_MODES)}, got {mode!r}")
    lists = {s: getattr(args, s) for s in ("training", "validation", "test")}
    given = {s: [x.strip() for x in v.split(",") if x.strip()] for s, v in lists.items() if v}
    kw = {}
    if mode == "slabs":
        if len(args.sources) != 1:
            raise MedgenError(f"--split-by slabs cuts ONE subject into slabs; got {len(args.sources)} sources "
                              "(use --split-by subject)")
        if given:
            raise MedgenError("--training / --validation / --test name subjects: use them with --split-by subject")
        kw["parts"], kw["part_axis"] = slab_parts(args.slabs), args.axis
    elif mode == "subject":
        if given:
            kw["splits"] = given
        else:
            from medgen.data.splitting import parse_fractions

            kw["split_fractions"] = parse_fractions(args.split)
    path = simulate_paired_dataset(
        args.sources, args.out, fraction=args.fraction, seed=args.seed, frame_duration_s=args.frame_duration,
        decay_factor=args.decay_factor, sensitivity=args.sensitivity, input_is=args.input_is,
        overwrite=args.overwrite, **kw)
    meta = json.loads(Path(path).read_text())
    print(f"wrote {path} (simulated {meta['simulated']['low_dose']['fraction']:g} dose, split by {mode})")
    for split in ("training", "validation", "test"):
        ids = [c["id"] for c in meta.get(split, [])]
        print(f"  {split:10s} {len(ids)} case(s): {', '.join(ids) if ids else '-'}")
    if meta.get("split_note"):
        print(f"  note: {meta['split_note']}")
    return 0 if args.no_check else check_main(path, summary=True)
