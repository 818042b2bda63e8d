"""Held-out real-data protocol: each pipeline trained on some real subjects of ../shared/data and applied, as a new
user would, to a real subject it never saw; run once with the code before the real-data fixes and once after.

    python benchmarks/real_data_heldout.py prepare --work /tmp/heldout        # the data (with this checkout)
    PYTHONPATH=<checkout> python benchmarks/real_data_heldout.py run --work /tmp/heldout --label before|after
    python benchmarks/real_data_heldout.py table                              # docs/real_data.md's tables

`run` imports medgen from PYTHONPATH (or this checkout), so the same protocol scores any version of the code;
`prepare` writes every dataset once, so both versions read the same files. Results:
benchmarks/results/real_data_heldout/<label>.json.

Protocols (CPU-sized, one torch thread; every count below is tiny: per-case values, no clinical claim):
- lesion_uda: source domain A = the three MS patients of lesion_da (expert masks), target domain B = the TCGA
  gliomas (labels: fused MODEL pseudo-labels, any label > 0, not manual truth); leave one glioma out: train on
  the MS patients and one glioma (unlabelled), test on the other glioma. Scans as shared: skull-stripped, NO
  brain masks; resampled to 3 mm by `medgen preprocess --spacing 3 --method block` (the benchmark's copies).
  source_only and uda, a small DeepMedic (SMALL_DEEPMEDIC), --lesion-steps steps, batch 4, seed 0.
- expression_vae: TCGA BRCA miRNA (1207 samples of 1079 patients: 117 patients with a tumour and a normal or
  metastasis sample), log2 CPM, labels = sample type from the barcode; random 10 % test split (split seeds 0-2);
  Tybalt, 50 epochs; before: the default split by sample; after: data.group_by=tcga_patient. Reported: the test
  patients that also have a training sample, the cross-validated and held-out AUROC of the latent space and of
  PCA. Also: how many of the duplicated ids a patient-indexed matrix (BRCA indexed by patient) is refused with.
- pet_lowdose: the one amyloid subject (subj01), simulated 25 % dose, cut into disjoint slabs (training left,
  validation midline, test right: unseen anatomy of the SAME subject; no second amyloid subject is shared);
  2 stages x --pet-steps steps with the benchmark's CPU settings; medgen infer + medgen evaluate (every stage,
  the Gaussian and NLM baselines, the low-dose floor); check-data's problem count on the simulated dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("MEDGEN_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "benchmarks" / "results" / "real_data_heldout"
MS = ("patient07", "patient19", "patient26")
GLIOMAS = ("TCGA-DU-7294", "TCGA-FG-6692")
PET_COMMON = ["data.patch_size=[32,32,32]", "model.ngf=16", "model.ndf=16", "model.d_layers=2", "train.batch_size=2",
              "model.lr=1e-3", "model.lr_decay_fraction=0.5", "model.residual=true", "model.full_res_channels=8",
              "data.scale_smoothing_vox=2.0", "data.region_key=", "infer.window_batch=2", "model.stages=2"]


# ----- prepare: the datasets, written once ---------------------------------------------------------------------
def prepare(work: Path) -> None:
    import nibabel as nib
    import numpy as np

    from medgen.data.preprocess import preprocess_dataset

    work.mkdir(parents=True, exist_ok=True)
    # lesion_uda: the shared scans as they are (no brain masks), a binary lesion map per glioma
    src = work / "lesion_src"
    src.mkdir(exist_ok=True)
    cases = []
    for p in MS:
        d = SHARED / "lesion_da" / "domainA_ms_ljubljana" / p
        cases.append({"id": p, "domain": "A", "t1": str(d / "T1.nii.gz"), "t2": str(d / "T2.nii.gz"),
                      "flair": str(d / "FLAIR.nii.gz"), "lesion": str(d / "lesion_mask.nii.gz")})
    for g in GLIOMAS:
        d = SHARED / "lesion_da" / "domainB_glioma_tcga" / g
        seg = nib.load(d / "seg_fusion_simple_pseudoGT.nii.gz")
        binary = src / f"{g}_lesion.nii.gz"
        nib.save(nib.Nifti1Image((np.asarray(seg.dataobj) > 0).astype(np.uint8), seg.affine), str(binary))
        cases.append({"id": g, "domain": "B", "t1": str(d / "t1.nii.gz"), "t2": str(d / "t2.nii.gz"),
                      "flair": str(d / "flair.nii.gz"), "lesion": str(binary)})
    (src / "dataset.json").write_text(json.dumps({"name": "lesion_src", "training": cases}, indent=1))
    lesion_3mm = work / "lesion_3mm"
    if not (lesion_3mm / "dataset.json").exists():
        preprocess_dataset(src, lesion_3mm, spacing=3.0, method="block")
    all_cases = {c["id"]: c for c in json.loads((lesion_3mm / "dataset.json").read_text())["training"]}
    for held in GLIOMAS:
        other = [g for g in GLIOMAS if g != held]
        meta = {"name": f"lesion_heldout_{held}", "description": "MS (A, labelled) + one glioma (B, unlabelled); "
                "test: the other glioma (labels: fused model pseudo-labels)",
                "training": [all_cases[c] for c in (*MS, *other)], "validation": [], "test": [all_cases[held]]}
        folder = work / f"lesion_{held}"
        folder.mkdir(exist_ok=True)
        for c in meta["training"] + meta["test"]:  # paths relative to the 3 mm copy
            for k in ("t1", "t2", "flair", "lesion"):
                c[k] = str(lesion_3mm / c[k]) if not Path(c[k]).is_absolute() else c[k]
        (folder / "dataset.json").write_text(json.dumps(meta, indent=1))
    print(f"prepared {work}")


# ----- lesion_uda --------------------------------------------------------------------------------------------
def run_lesion(work: Path, steps: int) -> dict:
    import numpy as np
    import torch

    from medgen.engine.commands import build_config, load_trained, train_config
    from medgen.pipelines.lesion_uda import SMALL_DEEPMEDIC

    out = {"settings": {"steps": steps, "batch_size": 4, "overrides": SMALL_DEEPMEDIC, "spacing_mm": 3}, "rows": []}
    for held in GLIOMAS:
        for mode in ("source_only", "uda"):
            over = [f"data.dataset={work / f'lesion_{held}'}", f"output.root={work / 'runs'}",
                    f"output.name=lesion_{held}_{mode}_{LABEL}", "output.overwrite=true", f"model.mode={mode}",
                    f"train.iterations={steps}", "train.batch_size=4", "train.val_every=100000", "train.log_every=50",
                    "train.progress=off", "train.seed=0", "train.device=cpu", *SMALL_DEEPMEDIC]
            cls, cfg = build_config("lesion_uda", None, over)
            t0 = time.perf_counter()
            row = {"test_case": held, "mode": mode}
            try:
                run = train_config(cls, cfg, overwrite=True)["run_dir"]
            except Exception as exc:  # noqa: BLE001 - the protocol records what a user would see
                row["error"] = f"{type(exc).__name__}: {exc}"
                out["rows"].append(row)
                continue
            row["train_s"] = time.perf_counter() - t0
            _, _, stages, _ = load_trained(run, device="cpu")
            p = stages[-1]
            for net in p.networks.values():
                net.eval()
            with torch.no_grad():
                case = p.data.load("test")[0]
                pred = p.predict_case(case)
                m = p.evaluate_case(p.output_values(case, pred), case)
            row.update({k: float(m[k]) for k in ("dice", "hd95", "lesion_f1", "ref_volume_ml", "pred_volume_ml")
                        if k in m})
            row["mask"] = "derived" if case.fields.get("brain_mask_source") == "derived" else (
                "given" if p.config.data.mask_key in case else "none (whole volume)")
            out["rows"].append(row)
            print(f"  lesion_uda {held} {mode}: Dice {row.get('dice', float('nan')):.3f}, predicted "
                  f"{row.get('pred_volume_ml', float('nan')):.1f} ml for {row.get('ref_volume_ml', float('nan')):.1f} ml "
                  f"({row['mask']}), {row['train_s']:.0f} s", flush=True)
    for mode in ("source_only", "uda"):
        d = [r["dice"] for r in out["rows"] if r["mode"] == mode and "dice" in r]
        out[f"mean_dice_{mode}"] = float(np.mean(d)) if d else None
    return out


# ----- expression_vae ------------------------------------------------------------------------------------------
def _patient(barcode: str) -> str:
    return "-".join(barcode.replace(".", "-").split("-")[:3])


def run_expression(work: Path, grouped: bool, epochs: float, seeds) -> dict:
    import numpy as np
    import pandas as pd

    from medgen.data.tabular import load_matrix
    from medgen.engine.commands import build_config, load_trained, train_config
    from medgen.errors import DataError
    from medgen.metrics.latent_evaluation import evaluate_run

    matrix = SHARED / "expression_vae" / "tcga_mirna" / "BRCA.parquet"
    out = {"settings": {"matrix": "BRCA.parquet", "epochs": epochs, "transform": "log2_cpm", "test_fraction": 0.1,
                        "group_by": "tcga_patient" if grouped else "none (the default)"}, "rows": []}
    # a patient-indexed copy: how a matrix with several samples per patient is refused
    df = pd.read_parquet(matrix)
    df.index = [_patient(i) for i in df.index]
    dup_path = work / "brca_by_patient.parquet"
    df.to_parquet(dup_path)
    duplicated = sorted(set(df.index[df.index.duplicated()]))
    try:
        load_matrix(dup_path)
        named = 0
    except DataError as err:
        named = sum(1 for d in duplicated if d in str(err))
    out["duplicate_ids"] = {"duplicated": len(duplicated), "named_in_the_error": named}
    for seed in seeds:
        over = [f"data.dataset={matrix}", "data.transform=log2_cpm", "data.sample_type_from_barcode=true",
                f"data.split_seed={seed}", f"train.epochs={epochs}", "train.progress=off", "train.seed=0",
                "train.device=cpu", f"output.root={work / 'runs'}", f"output.name=expr_{seed}_{LABEL}",
                "output.overwrite=true"] + (["data.group_by=tcga_patient"] if grouped else [])
        cls, cfg = build_config("expression_vae", None, over)
        t0 = time.perf_counter()
        run = train_config(cls, cfg, overwrite=True)["run_dir"]
        train_s = time.perf_counter() - t0
        ev = evaluate_run(run, tsne=False, overwrite=True)
        _, _, stages, _ = load_trained(run, device="cpu")
        splits = stages[0].preprocessing.splits
        test_patients = {_patient(i) for i in splits["test"]}
        leaked = test_patients & {_patient(i) for i in splits["training"]}
        lab = next(r for r in ev["labels"] if r["label"] == "sample_type")
        row = {"split_seed": seed, "test_samples": len(splits["test"]), "test_patients": len(test_patients),
               "test_patients_in_training": len(leaked), "train_s": train_s,
               **{k: float(lab[k]) for k in ("auroc_latent", "auroc_pca", "auroc_diff", "auroc_heldout_latent",
                                             "auroc_heldout_pca")}}
        out["rows"].append(row)
        print(f"  expression_vae seed {seed}: {len(leaked)} of {len(test_patients)} test patients in training; "
              f"CV AUROC Tybalt {row['auroc_latent']:.3f} vs PCA {row['auroc_pca']:.3f}; held-out "
              f"{row['auroc_heldout_latent']:.3f} vs {row['auroc_heldout_pca']:.3f}", flush=True)
    for k in ("auroc_latent", "auroc_pca", "auroc_diff", "auroc_heldout_latent", "auroc_heldout_pca",
              "test_patients_in_training"):
        out[f"mean_{k}"] = float(np.mean([r[k] for r in out["rows"]]))
    return out


# ----- pet_lowdose -----------------------------------------------------------------------------------------------
def run_pet(work: Path, steps: int) -> dict:
    from medgen.data.check import check_dataset
    from medgen.data.simulate_pet import LEFT_RIGHT_PARTS, simulate_paired_dataset
    from medgen.engine.commands import build_config, evaluate, infer, train_config

    pet = SHARED / "pet_lowdose" / "amyloid_pet" / "subj01" / "pet.nii.gz"
    ds = simulate_paired_dataset({"subj01": pet}, work / f"pet_{LABEL}", fraction=0.25, seed=0,
                                 parts=LEFT_RIGHT_PARTS, part_axis=0, overwrite=True).parent
    report = check_dataset(ds)
    out = {"settings": {"steps_per_stage": steps, "overrides": PET_COMMON, "fraction": 0.25,
                        "split": "slabs of subj01 along axis 0 (LEFT_RIGHT_PARTS)"},
           "check_data_problems": len(report.problems)}
    over = [f"data.dataset={ds}", f"train.iterations={steps}", f"train.val_every={max(steps // 4, 1)}",
            "train.progress=off", f"train.log_every={max(steps // 10, 1)}", "train.seed=0", "train.device=cpu",
            f"output.root={work / 'runs'}", f"output.name=pet_{LABEL}", "output.overwrite=true", *PET_COMMON]
    cls, cfg = build_config("pet_lowdose", str(REPO / "configs" / "pet_lowdose.yaml"), over)
    t0 = time.perf_counter()
    run = Path(train_config(cls, cfg, overwrite=True)["run_dir"])
    out["train_s"] = time.perf_counter() - t0
    infer(run, out=run / "predictions", overwrite=True, device="cpu")
    ev = evaluate(run / "predictions", out=run / "eval", overwrite=True)
    psnr = lambda s: s["metrics"]["psnr"]["mean"]  # one test slab: the mean is its value
    for label, summary in ev["summaries"].items():
        out[label] = psnr(summary)
        for name, floor in summary.get("floors", {}).items():
            out[f"floor_{name}"] = psnr(floor)
        for name, base in summary.get("baselines", {}).items():
            out[f"baseline_{name}"] = psnr(base)
    print(f"  pet_lowdose: check-data {out['check_data_problems']} problem(s); PSNR "
          + ", ".join(f"{k} {v:.2f}" for k, v in out.items() if isinstance(v, float) and k != "train_s"), flush=True)
    return out


# ----- the table ------------------------------------------------------------------------------------------------
def table() -> str:
    got = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    labels = [x for x in ("before", "after") if x in got]
    lines = ["| pipeline | measure | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]

    def row(pipeline, measure, fn):
        vals = []
        for lab in labels:
            try:
                v = fn(got[lab])
                vals.append(f"{v:.3f}" if isinstance(v, float) else str(v))
            except (KeyError, TypeError, StopIteration):
                vals.append("-")
        lines.append(f"| {pipeline} | {measure} | " + " | ".join(vals) + " |")

    for held in GLIOMAS:
        for mode in ("source_only", "uda"):
            def pick(r, key, held=held, mode=mode):
                return next(x for x in r["lesion_uda"]["rows"] if x["test_case"] == held and x["mode"] == mode)[key]
            row("lesion_uda", f"{held} {mode}: Dice", lambda r, p=pick: p(r, "dice"))
            row("lesion_uda", f"{held} {mode}: predicted / reference ml",
                lambda r, p=pick: f"{p(r, 'pred_volume_ml'):.1f} / {p(r, 'ref_volume_ml'):.1f}")
            row("lesion_uda", f"{held} {mode}: brain mask", lambda r, p=pick: p(r, "mask"))
    for mode in ("source_only", "uda"):
        row("lesion_uda", f"mean Dice {mode} (2 test cases)", lambda r, m=mode: r["lesion_uda"][f"mean_dice_{m}"])
    row("expression_vae", "test patients with a training sample (mean of 3 splits)",
        lambda r: r["expression_vae"]["mean_test_patients_in_training"])
    row("expression_vae", "CV AUROC sample type, Tybalt - PCA", lambda r: r["expression_vae"]["mean_auroc_diff"])
    row("expression_vae", "CV AUROC Tybalt", lambda r: r["expression_vae"]["mean_auroc_latent"])
    row("expression_vae", "held-out AUROC Tybalt", lambda r: r["expression_vae"]["mean_auroc_heldout_latent"])
    row("expression_vae", "held-out AUROC PCA", lambda r: r["expression_vae"]["mean_auroc_heldout_pca"])
    for seed in (0, 1, 2):  # per split: a held-out AUROC is NaN when a class is absent from that split's test
        def seed_row(r, key, seed=seed):
            return next(x for x in r["expression_vae"]["rows"] if x["split_seed"] == seed)[key]
        row("expression_vae", f"split {seed}: test patients with a training sample",
            lambda r, p=seed_row: f"{p(r, 'test_patients_in_training')} of {p(r, 'test_patients')}")
        row("expression_vae", f"split {seed}: CV AUROC Tybalt - PCA", lambda r, p=seed_row: p(r, "auroc_diff"))
        row("expression_vae", f"split {seed}: held-out AUROC Tybalt / PCA",
            lambda r, p=seed_row: f"{p(r, 'auroc_heldout_latent'):.3f} / {p(r, 'auroc_heldout_pca'):.3f}")
    row("expression_vae", "duplicated ids named in the error",
        lambda r: "{named_in_the_error} of {duplicated}".format(**r["expression_vae"]["duplicate_ids"]))
    row("pet_lowdose", "check-data problems on the simulated dataset", lambda r: r["pet_lowdose"]["check_data_problems"])
    for key, name in (("floor_input", "low dose (input)"), ("baseline_gaussian", "Gaussian"), ("baseline_nlm", "NLM"),
                      ("output_stage1", "cGAN stage 1"), ("output_stage2", "cGAN stage 2")):
        row("pet_lowdose", f"PSNR dB, {name}", lambda r, k=key: r["pet_lowdose"][k])
    return "\n".join(lines)


LABEL = "run"


def main(argv=None) -> int:
    global LABEL
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("prepare", "run", "table"))
    ap.add_argument("--work", default="/tmp/real_data_heldout")
    ap.add_argument("--label", default="after", help="before | after (the results file's name)")
    ap.add_argument("--only", default="lesion_uda,expression_vae,pet_lowdose")
    ap.add_argument("--lesion-steps", type=int, default=200)
    ap.add_argument("--pet-steps", type=int, default=300)
    ap.add_argument("--expr-epochs", type=float, default=50.0)
    ap.add_argument("--expr-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--grouped", choices=("auto", "yes", "no"), default="auto",
                    help="expression split grouped by patient (auto: yes for --label after)")
    args = ap.parse_args(argv)
    work = Path(args.work)
    if args.what == "prepare":
        prepare(work)
        return 0
    if args.what == "table":
        print(table())
        return 0
    import torch

    import medgen

    torch.set_num_threads(1)
    LABEL = args.label
    print(f"medgen from {Path(medgen.__file__).parent}, label {LABEL}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{LABEL}.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results["medgen"] = str(Path(medgen.__file__).parent)
    only = args.only.split(",")
    if "lesion_uda" in only:
        results["lesion_uda"] = run_lesion(work, args.lesion_steps)
        path.write_text(json.dumps(results, indent=1))
    if "expression_vae" in only:
        grouped = args.grouped == "yes" or (args.grouped == "auto" and LABEL == "after")
        results["expression_vae"] = run_expression(work, grouped, args.expr_epochs, args.expr_seeds)
        path.write_text(json.dumps(results, indent=1))
    if "pet_lowdose" in only:
        results["pet_lowdose"] = run_pet(work, args.pet_steps)
        path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
