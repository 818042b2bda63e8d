"""Benchmark unpaired_translation (CycleGAN) on the head phantoms, where the truth is known (trained on unpaired
halves: each training subject's source OR its target image; scored on held-out pairs), and on the real unpaired
head CTs and MRs of ../shared/data, where only distribution-level scores are possible.

    .venv/bin/python benchmarks/unpaired_translation.py [--part ct|paired|lesions|real|all] [--seeds 3 11 23]
        [--steps 640] [--schedule 2 2] [--train-seed N] [--lesion-identity 0] [--data ../shared/data]
        [--out benchmarks/results/unpaired_translation]

--steps with --schedule CONSTANT DECAY (epochs; scale them together, or the learning rate reaches 0 early);
--train-seed N trains every CycleGAN with train.seed N (results_<part>_train<N>.json, no pictures);
--lesion-identity: the identity-loss weight of the lesions part (the paper's 0.5 suits two MR contrasts).

- ct: T1 MR -> CT in HU, per phantom seed: CycleGAN against histogram matching and the floors (MAE, bone Dice,
  PSNR, histogram distance), means over the held-out pairs.
- lesions: the hallucination check (medgen.metrics.hallucination) on T2 -> FLAIR, where the target shows the
  lesions: once with a target domain whose subjects have lesions, once with a deliberately lesion-free target
  domain (other phantom subjects drawn with lesions=0), the failure the check exists to catch (Cohen et al.,
  MICCAI 2018). Lesions kept / lost / invented summed over the test cases.
- paired: the upper bound, the paired mr_to_ct model (Nie et al.) trained on the same training subjects with
  their pairs (its demo's narrow networks, --paired-steps per auto-context stage), on the same held-out pairs.
- real: T1 MR -> head CT on real unpaired data (--data; skipped, saying why, when absent): 4 skull-stripped T1s
  train domain A, the display-scaled CT_pitch domain B (window preset, levels 0-255), CT_AVM is held out; both
  domains cut to the inside of the skull, RAS, 2 mm, prepared in a temporary folder. 3 held-out T1s are translated
  by CycleGAN, histogram matching and the identity floor, and scored as sets against the held-out CT (and, marked
  as in training, the training CT): hist_w1 inside the masks, KID and Frechet distance on random-CNN features of
  axial slices (medgen.metrics.distribution), beside the real-vs-real reference (training CT vs held-out CT).

CPU budget (2 shared cores, one torch thread): about 1 min per phantom training at the defaults (48^3 phantoms,
2D networks ngf 16 / ndf 8 / 3 residual blocks, 640 steps, no identity loss, lr 2e-4 constant for 2 epochs then
decayed); the real part about 2 min. Writes results_<part>.json to --out, and the pictures phantom_mr_to_ct.png
(ct part: the first seed's first held-out pair) and real_mr_to_ct.png (real part).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SETTINGS = ["train.val_every=100000", "train.threads=1", "train.progress=off", "model.ngf=16", "model.ndf=8",
            "model.n_blocks=3", "model.pool_size=4", "model.lr=2e-4", "model.lambda_identity=0",
            "model.epochs_constant=2", "model.epochs_decay=2"]
CT_METRICS = ("mae", "bone_dice", "psnr", "hist_w1")
LESION_METRICS = ("lesions_kept", "lesions_lost", "lesions_invented")


def train_model(dataset: Path, root: Path, name: str, steps: int, overrides=()):
    """Train on `dataset` at the benchmark's settings; the trained pipeline (its last step) and its fitted
    histogram-matching baseline."""
    from medgen.baselines.registry import fit_baselines
    from medgen.engine.commands import build_config, load_trained, train_config

    cls, cfg = build_config("unpaired_translation", None, [f"data.dataset={dataset}", f"output.root={root}",
                                                          f"output.name={name}", "train.epochs=0",
                                                          f"train.iterations={steps}", *SETTINGS, *overrides])
    train_config(cls, cfg)
    _, _, stages, _ = load_trained(root / "unpaired_translation" / name, device="cpu")
    p = stages[0]
    return p, fit_baselines(p)["unpaired_histogram_matching"]


def method_values(p, hm, case) -> dict:
    """Each method's output values for one test case (domain B's units, the source grid); without gradients,
    as `medgen infer` predicts (the sliding-window path of images larger than the patch would keep them)."""
    import torch

    with torch.no_grad():
        return {"cyclegan": p.output_values(case, p.predict_case(case)), "histogram_matching": hm.values(case),
                **p.floors(case)}


def train_and_score(dataset: Path, root: Path, name: str, steps: int, overrides=(), figure: Path | None = None) -> dict:
    """Train on `dataset`, then score the model, histogram matching and the floors on its test cases; with
    `figure`, picture the first test case."""
    p, hm = train_model(dataset, root, name, steps, overrides)
    rows: dict[str, list[dict]] = {}
    for i, case in enumerate(p.data.load("test")):
        values = method_values(p, hm, case)
        for method, v in values.items():
            rows.setdefault(method, []).append(p.evaluate_case(v, case))
        if figure is not None and i == 0:
            save_phantom_figure(case, values, p, figure)
    return rows


def ct_part(seeds, steps: int, tmp: Path, figure: Path | None = None) -> dict:
    """MR -> CT per phantom seed; `figure`: a picture of the first seed's first held-out pair."""
    from medgen.data.phantoms import write_phantom_dataset

    out = {}
    for seed in seeds:
        head = write_phantom_dataset("head", tmp / f"ct{seed}", n_cases=12, seed=seed, shape=(48, 48, 48)).parent
        rows = train_and_score(head, tmp / "runs", f"ct{seed}", steps, figure=figure if seed == seeds[0] else None)
        out[seed] = {m: {k: float(np.nanmean([r[k] for r in rs])) for k in CT_METRICS} for m, rs in rows.items()}
        print(f"\nMR -> CT, phantom seed {seed} (means over {len(rows['cyclegan'])} held-out pairs)")
        print("| method | " + " | ".join(CT_METRICS) + " |\n|---|" + "---|" * len(CT_METRICS))
        for m, v in out[seed].items():
            print(f"| {m} | " + " | ".join(f"{v[k]:.3g}" for k in CT_METRICS) + " |")
    return out


def paired_part(seeds, steps: int, tmp: Path) -> dict:
    """The upper bound: the paired mr_to_ct model (Nie et al.) trained on the same training subjects WITH their
    pairs (its demo's narrow networks, `steps` per auto-context stage), scored on the same held-out pairs."""
    from importlib import resources

    import yaml

    from medgen.data.phantoms import write_phantom_dataset
    from medgen.engine.commands import build_config, evaluate, infer, train_config

    demo = yaml.safe_load((resources.files("medgen.pipelines.mr_to_ct") / "demo.yaml").read_text())
    common = [o for o in demo["common"] if not o.startswith(("train.iterations", "train.val_every"))]
    out = {}
    for seed in seeds:
        head = write_phantom_dataset("head", tmp / f"paired{seed}", n_cases=12, seed=seed, shape=(48, 48, 48)).parent
        cls, cfg = build_config("mr_to_ct", None, [*common, f"data.dataset={head}", f"output.root={tmp / 'runs'}",
                                                   f"output.name=paired{seed}", f"train.iterations={steps}",
                                                   "train.val_every=100000", "train.threads=1", "train.progress=off"])
        train_config(cls, cfg)
        run = tmp / "runs" / "mr_to_ct" / f"paired{seed}"
        summary = evaluate(infer(run, checkpoint="last")["out"], head, baselines=[])["summary"]
        out[seed] = {k: summary["metrics"][k]["mean"] for k in CT_METRICS if k in summary["metrics"]}
        print(f"\nMR -> CT, paired mr_to_ct upper bound, phantom seed {seed}: " +
              ", ".join(f"{k} {v:.3g}" for k, v in out[seed].items()))
    return out


def lesion_part(seed: int, steps: int, tmp: Path, identity: float = 0.0) -> dict:
    """T2 -> FLAIR; domain A: the T2 of lesioned subjects; domain B: the FLAIR of other subjects, with lesions
    (control) or without (the failure case); test: held-out lesioned pairs. `identity`: model.lambda_identity
    (the paper's 0.5 suits two MR contrasts on one normalised scale; the MR -> CT settings use 0)."""
    from medgen.data.phantoms import write_phantom_dataset

    source = write_phantom_dataset("head", tmp / "les_src", n_cases=12, seed=seed, shape=(48, 48, 48)).parent
    out = {}
    for target, lesions in (("lesioned_target", None), ("lesion_free_target", 0)):
        other = write_phantom_dataset("head", tmp / f"les_{target}", n_cases=12, seed=seed + 1000,
                                      shape=(48, 48, 48), lesions=lesions).parent
        src, oth = (json.loads((d / "dataset.json").read_text()) for d in (source, other))

        def entry(d, folder, keys, domain=None):
            e = {"id": f"{folder.name}_{d['id']}", **{k: str(folder / d[k]) for k in keys}}
            return {**e, "domain": domain} if domain else e

        data = {"name": target,
                "training": [entry(d, source, ("t2", "mask"), "a") for d in src["training"]]
                + [entry(d, other, ("flair", "mask"), "b") for d in oth["training"]],
                "validation": [], "test": [entry(d, source, ("t2", "flair", "mask", "lesion")) for d in src["test"]]}
        folder = tmp / f"ds_{target}"
        folder.mkdir()
        (folder / "dataset.json").write_text(json.dumps(data))
        rows = train_and_score(folder, tmp / "runs", target, steps,
                               ["data.key_a=t2", "data.key_b=flair", "data.preset_a=mr", "data.preset_b=mr",
                                f"model.lambda_identity={identity:g}"])
        out[target] = {m: {**{k: float(np.nansum([r[k] for r in rs])) for k in LESION_METRICS},
                           "lesion_contrast": float(np.nanmean([r["lesion_contrast"] for r in rs]))}
                       for m, rs in rows.items()}
        print(f"\nT2 -> FLAIR, {target.replace('_', ' ')} (lesions summed over {len(rows['cyclegan'])} test cases; "
              "contrast: translated / true, mean over the cases)")
        print("| method | kept | lost | invented | contrast |\n|---|---|---|---|---|")
        for m, v in out[target].items():
            print(f"| {m} | " + " | ".join(f"{v[k]:g}" for k in LESION_METRICS) + f" | {v['lesion_contrast']:.2f} |")
    return out


# ----- real unpaired data: T1 MRs of some subjects, head CTs of others (../shared/data) -------------------------
# T1 MRs (all skull-stripped), by subject: four train domain A, three are held out and translated.
REAL_MR = {"ms_patient07": "lesion_da/domainA_ms_ljubljana/patient07/T1.nii.gz",
           "ms_patient19": "lesion_da/domainA_ms_ljubljana/patient19/T1.nii.gz",
           "tcga_du_7294": "lesion_da/domainB_glioma_tcga/TCGA-DU-7294/t1.nii.gz",
           "cstar_stroke": "mr_synthesis/cstar_chronic_stroke/T1.nii.gz",
           "ms_patient26": "lesion_da/domainA_ms_ljubljana/patient26/T1.nii.gz",
           "tcga_fg_6692": "lesion_da/domainB_glioma_tcga/TCGA-FG-6692/t1.nii.gz",
           "brats_gli_00001": "mr_synthesis/brats2023_gli_00001_000/BraTS-GLI-00001-000-t1n.nii.gz"}
REAL_MR_TEST = ("ms_patient26", "tcga_fg_6692", "brats_gli_00001")
# The two display-scaled 8-bit head CTs: one trains domain B, the other is held out as the real reference.
REAL_CT_TRAIN, REAL_CT_HELD_OUT = ("ct_pitch", "mr_to_ct/unpaired_head_ct/CT_pitch.nii.gz"), \
    ("ct_avm", "mr_to_ct/unpaired_head_ct/CT_AVM.nii.gz")
REAL_SETTINGS = ["data.key_a=mr", "data.key_b=ct", "data.preset_b=window", "data.window_b=[0,255]",
                 "data.lesion_key="]
BONE_LEVEL = 180.0  # display level above which CT_pitch shows its skull (skull 230-255, inserts 140-160)
FEATURE_SIZE = 112  # axial slices padded to 112 x 112 voxels (224 mm at 2 mm) for the random-CNN features
MIN_SLICE_AREA = 0.25  # slices whose mask holds >= 25 % of the volume's largest slice area enter the slice sets


def load_ras(path: Path, spacing: float, stored_levels: bool = False):
    """A volume reoriented to RAS and resampled (linear) to `spacing` mm; the affine of the new grid.
    stored_levels: the file's stored integers (an 8-bit display image's levels 0-255), ignoring its scale."""
    import nibabel as nib
    from scipy import ndimage

    img = nib.as_closest_canonical(nib.load(str(path)))
    raw = np.asanyarray(img.dataobj.get_unscaled()) if stored_levels else np.asanyarray(img.dataobj)
    factor = np.asarray(img.header.get_zooms()[:3], float) / spacing
    vol = ndimage.zoom(np.clip(raw.astype(np.float32), 0, None), factor, order=1)
    affine = img.affine.copy()
    affine[:3, :3] = affine[:3, :3] / factor
    return vol.astype(np.float32), affine


def largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    return lab == 1 + int(np.argmax(ndimage.sum(mask, lab, range(1, n + 1))))


def brain_mask(mr: np.ndarray) -> np.ndarray:
    """A skull-stripped MR's brain: its nonzero region (largest component, holes filled)."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(largest_component(mr > 1e-3 * float(mr.max())))


def intracranial_mask(ct: np.ndarray, bone_level: float) -> np.ndarray:
    """Inside the skull of a CT, slice by slice across the last axis: the convex hull of the skull (voxels above
    `bone_level`, its largest 3D component: not the head holder; a hull, as the thin skull's ring is open in
    many 2 mm slices) less the skull itself, dilated by one voxel; largest component."""
    from scipy import ndimage
    from skimage.morphology import convex_hull_image

    bone = largest_component(ct > bone_level)
    inside = np.zeros(ct.shape, bool)
    for z in range(ct.shape[2]):
        if bone[:, :, z].sum() >= 50:
            inside[:, :, z] = convex_hull_image(bone[:, :, z]) & ~ndimage.binary_dilation(bone[:, :, z])
    return largest_component(inside)


def hull_mask(ct: np.ndarray, erode: int = 2) -> np.ndarray:
    """A CT whose display window leaves only vessels (and no skull ring): per axial slice the convex hull of
    its nonzero voxels, eroded by `erode` voxels (the scattered scalp / bone remnants at its edge)."""
    from scipy import ndimage
    from skimage.morphology import convex_hull_image

    mask = np.zeros(ct.shape, bool)
    for z in range(ct.shape[2]):
        held = ct[:, :, z] > 0
        if held.sum() >= 50:
            mask[:, :, z] = ndimage.binary_erosion(convex_hull_image(held), iterations=erode)
    return mask


def crop_to(mask: np.ndarray, affine: np.ndarray, margin: int = 2):
    """The box around `mask` (+ margin voxels) and the affine of its first voxel."""
    idx = np.argwhere(mask)
    if idx.size == 0:
        raise ValueError("empty mask: nothing to crop to")
    lo, hi = np.maximum(idx.min(0) - margin, 0), np.minimum(idx.max(0) + 1 + margin, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    out = affine.copy()
    out[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    return box, out


def write_volume(path: Path, array: np.ndarray, affine: np.ndarray) -> str:
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    nib.save(img, str(path))
    return path.name


def prepare_real(data: Path, out: Path, spacing: float = 2.0) -> dict:
    """A benchmark copy of the real unpaired data in `out` (a temporary folder): every volume in RAS at
    `spacing` mm, masked to the inside of the head's skull and cropped to it, and a dataset.json with domain A =
    the training T1 MRs, domain B = the training CT, test = the held-out MRs. The MRs are skull-stripped, so
    the CTs are stripped to the same region (inside the skull): a skull in B with none in A would reward a
    generator for drawing one. Returns {"dataset": folder, "held_out_ct": (image, mask) paths, "shapes": ...}."""
    out.mkdir(parents=True, exist_ok=True)
    shapes = {}

    def entry(cid: str, key: str, rel: str, make_mask, stored_levels: bool = False) -> dict:
        """One image, RAS at `spacing`, zero outside its mask, cropped to it; written with its mask."""
        image, affine = load_ras(data / rel, spacing, stored_levels=stored_levels)
        mask = make_mask(image)
        box, affine = crop_to(mask, affine)
        image, mask = np.where(mask, image, 0.0)[box].astype(np.float32), mask[box].astype(np.uint8)
        shapes[cid] = list(image.shape)
        return {"id": cid, key: write_volume(out / f"{cid}_{key}.nii.gz", image, affine),
                "mask": write_volume(out / f"{cid}_mask.nii.gz", mask, affine)}

    entries = {cid: entry(cid, "mr", rel, brain_mask) for cid, rel in REAL_MR.items()}
    cts = {cid: entry(cid, "ct", rel, make_mask, stored_levels=True)
           for (cid, rel), make_mask in ((REAL_CT_TRAIN, lambda v: intracranial_mask(v, BONE_LEVEL)),
                                         (REAL_CT_HELD_OUT, hull_mask))}
    dataset = {"name": "unpaired_translation_real", "description": f"benchmark copy: RAS, {spacing:g} mm, "
               "inside the skull", "keys": {"mr": "image", "ct": "image", "mask": "label"},
               "training": [{**entries[c], "domain": "a"} for c in REAL_MR if c not in REAL_MR_TEST]
               + [{**cts[REAL_CT_TRAIN[0]], "domain": "b"}],
               "validation": [], "test": [entries[c] for c in REAL_MR_TEST]}
    (out / "dataset.json").write_text(json.dumps(dataset, indent=1))
    held = cts[REAL_CT_HELD_OUT[0]]
    return {"dataset": out, "held_out_ct": (out / held["ct"], out / held["mask"]), "shapes": shapes}


def axial_slices(volume: np.ndarray, mask: np.ndarray, size: int = FEATURE_SIZE) -> np.ndarray:
    """(n, size, size) axial slices in [-1, 1] (display levels 0-255 mapped; outside the mask -1, the
    background), those whose mask holds >= MIN_SLICE_AREA of the largest slice's, centred and padded / cropped."""
    from medgen.metrics.distribution import region_slices

    v = np.clip(np.asarray(volume, np.float32) / 127.5 - 1.0, -1.0, 1.0)
    return region_slices(v, mask, axis=2, size=size, min_area=MIN_SLICE_AREA)


def set_distances(x: np.ndarray, y: np.ndarray, features) -> dict:
    from medgen.metrics.distribution import frechet_distance, kernel_distance

    fx, fy = features.features(x), features.features(y)
    kid = kernel_distance(fx, fy)
    return {"kid": kid["kid"], "fd": frechet_distance(fx, fy), "n_slices": [len(x), len(y)]}


def real_part(data: Path, steps: int, tmp: Path, figure: Path | None = None) -> dict | None:
    """Train on the real unpaired data (4 T1 MRs as domain A, one head CT as domain B), translate 3 held-out
    MRs and score every method's translations as a set against the held-out CT (and, marked, the training CT):
    hist_w1 inside the masks and KID / Frechet distance on random-CNN features of axial slices; the real-vs-real
    reference is the two real CTs' distance with the same features."""
    import nibabel as nib

    from medgen.metrics.distribution import RandomConvFeatures, wasserstein1

    if not data.is_dir():
        print(f"\nreal part skipped: the real data folder {data} is absent (it holds the public head CTs and MRs "
              "this part needs; give it with --data)")
        return None
    prep = prepare_real(data, tmp / "real")
    print("\nreal unpaired data (RAS, 2 mm, cropped inside the skull), shapes: "
          + ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in prep["shapes"].items()))
    p, hm = train_model(prep["dataset"], tmp / "runs", "real", steps, REAL_SETTINGS)
    features = RandomConvFeatures(seed=0)
    train_ct = next(c for c in p.data.load("training") if c["domain"] == "b")
    train_ct_values, train_ct_mask = train_ct.references["ct"][0], train_ct["mask"].numpy()[0]
    held_ct, held_mask = (np.asarray(nib.load(str(f)).dataobj, np.float32) for f in prep["held_out_ct"])
    real = {"train_ct": axial_slices(train_ct_values, train_ct_mask), "held_out_ct": axial_slices(held_ct, held_mask)}
    slices: dict[str, list] = {}
    per_case: dict[str, list] = {}
    for i, case in enumerate(p.data.load("test")):
        mask = case["mask"].numpy()[0]
        values = method_values(p, hm, case)
        for method, v in values.items():
            out = np.asarray(v["output"], np.float32)[0]
            slices.setdefault(method, []).append(axial_slices(out, mask))
            scores = p.evaluate_case(v, case)  # what medgen evaluate reports: hist_w1 and the per-case kid
            per_case.setdefault(method, []).append(
                {"id": case.id, "hist_w1": scores["hist_w1"], "kid_per_case": scores.get("kid"),
                 "hist_w1_held_out": wasserstein1(out[mask > 0], held_ct[held_mask > 0])})
        if figure is not None and i == 0:
            save_real_figure(case, values, (train_ct_values, train_ct_mask), (held_ct, held_mask), figure)
    rows = {}
    for method, parts in slices.items():
        cases = per_case[method]
        rows[method] = {"hist_w1": float(np.mean([c["hist_w1"] for c in cases])),
                        "hist_w1_held_out": float(np.mean([c["hist_w1_held_out"] for c in cases])),
                        "kid_per_case": float(np.mean([c["kid_per_case"] for c in cases])),
                        "held_out_ct": set_distances(np.concatenate(parts), real["held_out_ct"], features),
                        "train_ct": set_distances(np.concatenate(parts), real["train_ct"], features),
                        "per_case": cases}
    rows["real_ct_reference"] = {
        "hist_w1": wasserstein1(held_ct[held_mask > 0], p.b_stats()["quantiles"].numpy()),
        "hist_w1_held_out": None, "kid_per_case": p.case_kid(held_ct[None], held_mask),
        "held_out_ct": set_distances(real["train_ct"], real["held_out_ct"], features), "train_ct": None}
    print(f"\nreal T1 MR -> head CT (display levels 0-255): {len(per_case['cyclegan'])} held-out MRs "
          f"({', '.join(REAL_MR_TEST)}); domain B trained on {REAL_CT_TRAIN[0]}, {REAL_CT_HELD_OUT[0]} held out")
    print("| method | hist_w1 (train CT) | hist_w1 (held-out CT) | KID held-out | FD held-out | KID train CT "
          "(in training) | FD train CT | slices | per-case KID (medgen evaluate) |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for m, r in rows.items():
        t = r["train_ct"] or {"kid": float("nan"), "fd": float("nan")}
        held = "-" if r["hist_w1_held_out"] is None else f"{r['hist_w1_held_out']:.3g}"
        print(f"| {m} | {r['hist_w1']:.3g} | {held} | {r['held_out_ct']['kid']:.3g} | "
              f"{r['held_out_ct']['fd']:.3g} | {t['kid']:.3g} | {t['fd']:.3g} | {r['held_out_ct']['n_slices']} | "
              f"{r['kid_per_case']:.3g} |")
    return {"train_mr": [c for c in REAL_MR if c not in REAL_MR_TEST], "test_mr": list(REAL_MR_TEST),
            "train_ct": REAL_CT_TRAIN[0], "held_out_ct": REAL_CT_HELD_OUT[0], "shapes": prep["shapes"],
            "settings": REAL_SETTINGS, "features": "RandomConvFeatures(seed=0), axial slices "
            f"{FEATURE_SIZE}x{FEATURE_SIZE} in [-1, 1], outside the mask -1", "methods": rows}


# ----- pictures ------------------------------------------------------------------------------------------------
def save_panels(panels, path: Path, title: str, vmin: float, vmax: float, unit: str) -> None:
    """One row of axial slices (RAS arrays: x right, y anterior), a shared grey scale and its colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(1.9 * len(panels) + 0.6, 2.4))
    for ax, (name, image) in zip(axes, panels):
        shown = ax.imshow(np.asarray(image).T, cmap="gray", origin="lower", vmin=vmin, vmax=vmax)
        ax.set_title(name, fontsize=7)
        ax.axis("off")
    bar = fig.colorbar(shown, ax=list(axes), fraction=0.025, pad=0.02)
    bar.set_label(unit, fontsize=7)
    bar.ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def save_phantom_figure(case, values, p, path: Path) -> None:
    """Held-out phantom pair, middle axial slice: source T1, CycleGAN, histogram matching, true CT (HU)."""
    z = case["mr"].shape[-1] // 2
    mr = case["mr"][0].numpy()[:, :, z]
    mr_shown = (mr + 1.0) * 1000.0 - 1000.0  # the [-1, 1] T1 spread over the HU bar's range, for display only
    panels = [("source T1 MR (scaled)", mr_shown), ("CycleGAN", values["cyclegan"]["output"][0][:, :, z]),
              ("histogram matching", values["histogram_matching"]["output"][0][:, :, z]),
              ("true CT", case.references["ct"][0][:, :, z])]
    save_panels(panels, path, f"head phantom, held-out pair {case.id}: MR -> CT", -1000, 1000, "HU")


def save_real_figure(case, values, train_ct, held_ct, path: Path) -> None:
    """A held-out real MR, its translations, and each real CT's slice of largest mask ((image, mask) pairs), in
    display levels 0-255."""
    def middle(image_and_mask):
        image, mask = (np.asarray(a) for a in image_and_mask)
        return image[:, :, int(np.argmax((mask > 0).sum(axis=(0, 1))))]

    z = int(np.argmax(case["mask"].numpy()[0].sum(axis=(0, 1))))
    mr = (case["mr"][0].numpy()[:, :, z] + 1.0) * 127.5
    panels = [("held-out T1 MR (scaled)", mr), ("CycleGAN", values["cyclegan"]["output"][0][:, :, z]),
              ("histogram matching", values["histogram_matching"]["output"][0][:, :, z]),
              ("training CT (CT_pitch)", middle(train_ct)), ("held-out CT (CT_AVM)", middle(held_ct))]
    save_panels(panels, path, f"real data: {case.id} T1 -> CT (inside the skull)", 0, 255, "display level")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("ct", "paired", "lesions", "real", "all"), default="all")
    ap.add_argument("--paired-steps", type=int, default=300, help="mr_to_ct steps per auto-context stage")
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 11, 23])
    ap.add_argument("--steps", type=int, default=640)
    ap.add_argument("--schedule", type=float, nargs=2, default=None, metavar=("CONSTANT", "DECAY"),
                    help="epochs of constant then linearly decaying learning rate (default 2 2); scale them with "
                         "--steps, or the rate reaches 0 early and the rest of the run learns nothing")
    ap.add_argument("--dims", type=int, choices=(2, 3), default=2,
                    help="2: 2D networks on slices (default); 3: 3D networks on --patch^3 patches (an epoch is then "
                         "one pass over the larger domain's volumes: set --schedule for the run's length)")
    ap.add_argument("--patch", type=int, default=32, help="3D patch side (--dims 3)")
    ap.add_argument("--lesion-identity", type=float, default=0.0,
                    help="model.lambda_identity of the lesions part (T2 -> FLAIR; the paper's default is 0.5)")
    ap.add_argument("--train-seed", type=int, default=None,
                    help="train.seed of every CycleGAN (initialisation, slice stream, pools); the results file "
                         "gets a _train<N> suffix and no pictures")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                    help="the real public data folder (the real part is skipped when it is absent)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "unpaired_translation")
    args = ap.parse_args(argv)
    if args.schedule is not None:
        SETTINGS[:] = [o for o in SETTINGS if not o.startswith(("model.epochs_constant", "model.epochs_decay"))]
        SETTINGS.extend([f"model.epochs_constant={args.schedule[0]:g}", f"model.epochs_decay={args.schedule[1]:g}"])
    if args.train_seed is not None:
        SETTINGS.append(f"train.seed={args.train_seed}")
    if args.dims == 3:
        SETTINGS.extend(["model.spatial_dims=3", f"data.patch_size=[{args.patch},{args.patch},{args.patch}]"])
    pictures = args.train_seed is None and args.dims == 2
    results = {"steps": args.steps, "settings": SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("ct", "all"):
            results["ct"] = ct_part(args.seeds, args.steps, Path(tmp),
                                    figure=args.out / "phantom_mr_to_ct.png" if pictures else None)
        if args.part in ("paired", "all"):
            results["paired"] = paired_part(args.seeds, args.paired_steps, Path(tmp))
        if args.part in ("lesions", "all"):
            results["lesions"] = lesion_part(args.seeds[0], args.steps, Path(tmp), args.lesion_identity)
            results["lesion_identity"] = args.lesion_identity
        if args.part in ("real", "all"):
            results["real"] = real_part(args.data, args.steps, Path(tmp),
                                        figure=args.out / "real_mr_to_ct.png" if pictures else None)
    if args.part == "real" and results["real"] is None:
        return 0  # skipped, said why: nothing measured to write
    args.out.mkdir(parents=True, exist_ok=True)
    name = (f"results_{args.part}" + ("_3d" if args.dims == 3 else "")
            + (f"_train{args.train_seed}" if args.train_seed is not None else "") + ".json")
    (args.out / name).write_text(json.dumps(results, indent=1))
    print(f"\nwritten: {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
