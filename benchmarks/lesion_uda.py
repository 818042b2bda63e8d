"""lesion_uda benchmark: source_only vs uda vs uda_last_layer vs target_supervised on the target domain.

Settings (every one says whether its domain shift is real or constructed):
  phantom : lesion_domains phantoms, scanner A -> scanner B (constructed shift, truth known); held-out B test cases;
            every mode trained with 3 seeds (--phantom-seeds), the target judged on the mean over seeds.
  ms_shift: the three MS patients of ../shared/data/lesion_da/domainA_ms_ljubljana (expert masks); target = the same
            patients under a constructed protocol shift (medgen.data.protocol_shift.protocol_shift: contrast,
            bias field, noise, thick slices); leave-one-patient-out (train on 2 patients, test the shifted 3rd).
  glioma  : source = the 3 MS patients (original), target = the 2 TCGA gliomas of domainB; label = the FLAIR
            abnormality (any label > 0 of the fused pseudo-labels: MODEL PREDICTIONS, not manual ground truth);
            leave-one-glioma-out (target_supervised trains on the other glioma).
Real volumes are block-averaged to 3 mm (masks: block mean >= 0.5) for the CPU run. Networks are a small DeepMedic
(4 layers, one x3 pathway) trained for a few hundred steps: a GPU run with the paper's settings would be far longer.

    python benchmarks/lesion_uda.py [--quick] [--work /tmp/lesion_uda_bench]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medgen.engine.commands import build_config, load_trained, train_config  # noqa: E402
from medgen.metrics import format_table  # noqa: E402
from medgen.metrics.domain_adaptation import gap_closed  # noqa: E402
from medgen.pipelines.lesion_uda import SMALL_DEEPMEDIC  # noqa: E402

MODES = ("source_only", "uda", "uda_last_layer", "target_supervised")
OUT = REPO / "benchmarks" / "results" / "lesion_uda"
SHARED = REPO.parent / "shared" / "data" / "lesion_da"
COLS = ("dice", "hd95", "lesion_f1", "abs_volume_error_ml", "ref_volume_ml", "pred_volume_ml")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def evaluate_run(run_dir, domain: str | None = None, split: str = "test", dataset: str | None = None) -> list[dict]:
    """Predict the labelled cases of a split with a trained run and return per-case segmentation metrics
    (optionally only cases of one domain), each row with the prediction under "_pred" (for the previews)."""
    _, _, stages, _ = load_trained(run_dir, device="cpu", dataset=dataset)
    p = stages[-1]
    for net in p.networks.values():
        net.eval()
    rows = []
    with torch.no_grad():
        for case in p.data.load(split):
            if (domain is not None and case["domain"] != domain) or p.config.data.lesion_key not in case:
                continue
            pred = p.predict_case(case)
            scores = p.evaluate_case(p.output_values(case, pred), case)
            rows.append({"id": case.id, "domain": case["domain"], **scores, "_pred": pred})
    return rows


def run_modes(name, dataset, work, steps, extra=(), target="B", seed=0):
    """Train every mode on one dataset and evaluate on its target-domain test cases."""
    results = {}
    for mode in MODES:
        over = [f"data.dataset={dataset}", f"output.root={work}/runs", f"output.name={name}_{mode}", "output.overwrite=true",
                f"model.mode={mode}", f"train.iterations={steps}", "train.batch_size=4", "train.val_every=100000",
                "train.log_every=50", "train.progress=off", f"train.seed={seed}", *SMALL_DEEPMEDIC, *extra]
        cls, cfg = build_config("lesion_uda", None, over)
        t0 = time.perf_counter()
        run = train_config(cls, cfg)["run_dir"]
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = evaluate_run(run, domain=cfg.data.target_domain)
        t_inf = (time.perf_counter() - t0) / max(len(rows), 1)
        per_domain = 2 if mode in ("uda", "uda_last_layer") else 1
        results[mode] = {"rows": rows, "train_s": t_train, "steps_per_s": steps / t_train,
                         "patches_per_s": steps * 4 * per_domain / t_train, "infer_s_per_volume": t_inf}
        print(f"  [{name}] {mode}: {steps} steps in {t_train:.0f} s ({steps / t_train:.1f} steps/s), "
              f"mean target Dice {np.mean([r['dice'] for r in rows]):.3f}, {t_inf:.1f} s per volume", flush=True)
    return results


def table(name, results):
    rows = []
    for mode, res in results.items():
        for r in res["rows"]:
            rows.append({"id": f"{mode}:{r['id']}", **{k: r[k] for k in COLS}})
    means = {m: float(np.mean([r["dice"] for r in res["rows"]])) for m, res in results.items()}
    frac = gap_closed(means["source_only"], means["uda"], means["target_supervised"])
    frac_last = gap_closed(means["source_only"], means["uda_last_layer"], means["target_supervised"])
    text = (f"\n### {name}\n\n" + format_table(rows) + "\n\nmean target Dice: "
            + ", ".join(f"{m} {v:.3f}" for m, v in means.items())
            + f"\nfraction of the source_only -> target_supervised gap closed: uda {frac:.3f}, uda_last_layer {frac_last:.3f}\n")
    return text, {"mean_dice": means, "gap_closed_uda": frac, "gap_closed_uda_last_layer": frac_last}


def seed_table(per_seed):
    """Mean target Dice per mode and seed, their mean over seeds and the gap closed by that mean (the target)."""
    seeds = sorted(per_seed)
    rows = [{"id": m, **{f"seed{s}": per_seed[s]["mean_dice"][m] for s in seeds},
             "mean": float(np.mean([per_seed[s]["mean_dice"][m] for s in seeds]))} for m in MODES]
    mean = {r["id"]: r["mean"] for r in rows}
    frac = gap_closed(mean["source_only"], mean["uda"], mean["target_supervised"])
    frac_last = gap_closed(mean["source_only"], mean["uda_last_layer"], mean["target_supervised"])
    per = ", ".join(f"seed {s}: uda {per_seed[s]['gap_closed_uda']:.3f} / last layer "
                    f"{per_seed[s]['gap_closed_uda_last_layer']:.3f}" for s in seeds)
    text = (f"\n### phantoms, mean target Dice over training seeds {seeds}\n\n" + format_table(rows)
            + f"\n\nfraction of the gap closed by the seed means: uda {frac:.3f}, uda_last_layer {frac_last:.3f}"
            + f"\nper seed: {per}\n")
    return text, {"mean_dice": mean, "gap_closed_uda": frac, "gap_closed_uda_last_layer": frac_last, "seeds": seeds}


# ----- real data: downsampled copies written outside the repository --------------------------------------------------
def _block(arr, f, label=False):
    s = [n // f * f for n in arr.shape]
    a = arr[: s[0], : s[1], : s[2]].astype(np.float32)
    a = a.reshape(s[0] // f, f, s[1] // f, f, s[2] // f, f).mean((1, 3, 5))
    return (a >= 0.5).astype(np.uint8) if label else a.astype(np.float32)


def _save(path, arr, affine):
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(arr, affine)
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    nib.save(img, str(path))


def _down_affine(affine, f):
    a = affine.copy()
    a[:3, :3] = affine[:3, :3] * f
    a[:3, 3] = affine[:3, :3] @ np.full(3, (f - 1) / 2.0) + affine[:3, 3]
    return a


def prepare_real(work: Path, factor: int = 3) -> dict:
    """Down-sampled MS (original + protocol-shifted) and glioma cases: {id: {key: path, ...}}."""
    import nibabel as nib

    from medgen.data.protocol_shift import protocol_shift

    out = work / "real"
    cases = {}
    for p in sorted((SHARED / "domainA_ms_ljubljana").glob("patient*")):
        imgs = {k: nib.load(p / f"{f}.nii.gz") for k, f in (("t1", "T1"), ("t2", "T2"), ("flair", "FLAIR"))}
        aff = _down_affine(imgs["t1"].affine, factor)
        arrs = {k: _block(np.asarray(v.dataobj, dtype=np.float32), factor) for k, v in imgs.items()}
        lesion = _block(np.asarray(nib.load(p / "lesion_mask.nii.gz").dataobj) > 0, factor, label=True)
        brain = ((arrs["t1"] > 1e-3) & (arrs["flair"] > 1e-3)).astype(np.uint8)
        shifted, info = protocol_shift(arrs, brain > 0, (3.0, 3.0, 3.0), seed=int(p.name[-2:]))
        for tag, images in (("orig", arrs), ("shift", shifted)):
            cid = f"{p.name}_{tag}"
            entry = {"id": cid}
            for k, a in {**images, "lesion": lesion, "brain_mask": brain}.items():
                _save(out / cid / f"{k}.nii.gz", a, aff)
                entry[k] = str(out / cid / f"{k}.nii.gz")
            cases[cid] = entry
        cases[f"{p.name}_shift"]["shift"] = info
    for p in sorted((SHARED / "domainB_glioma_tcga").glob("TCGA-*")):
        imgs = {k: nib.load(p / f"{k}.nii.gz") for k in ("t1", "t2", "flair")}
        aff = _down_affine(imgs["t1"].affine, factor)
        arrs = {k: _block(np.asarray(v.dataobj, dtype=np.float32), factor) for k, v in imgs.items()}
        lesion = _block(np.asarray(nib.load(p / "seg_fusion_simple_pseudoGT.nii.gz").dataobj) > 0, factor, label=True)
        brain = (arrs["t1"] > 1e-3).astype(np.uint8)
        entry = {"id": p.name}
        for k, a in {**arrs, "lesion": lesion, "brain_mask": brain}.items():
            _save(out / p.name / f"{k}.nii.gz", a, aff)
            entry[k] = str(out / p.name / f"{k}.nii.gz")
        cases[p.name] = entry
    return cases


def write_dataset(folder: Path, training, validation, test, note: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"name": folder.name, "description": note,
            "keys": {"t1": "image", "t2": "image", "flair": "image", "lesion": "label", "brain_mask": "label"},
            "training": training, "validation": validation, "test": test}
    (folder / "dataset.json").write_text(json.dumps(meta, indent=1, default=str))
    return folder


def _dom(entry, d):
    return {k: v for k, v in entry.items() if k != "shift"} | {"domain": d}


def preview(path, case_paths, preds, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    flair = np.asarray(nib.load(case_paths["flair"]).dataobj)
    ref = np.asarray(nib.load(case_paths["lesion"]).dataobj)
    z = int(np.argmax(ref.sum((0, 1)))) if ref.any() else flair.shape[2] // 2
    panels = [("FLAIR", flair[:, :, z]), ("reference", ref[:, :, z])] + [(m, p[:, :, z]) for m, p in preds.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.0 * len(panels), 2.3))
    for ax, (name, img) in zip(axes, panels):
        ax.imshow(np.rot90(img), cmap="gray")
        ax.set_title(name, fontsize=7)
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/lesion_uda_bench")
    ap.add_argument("--phantom-steps", type=int, default=400)
    ap.add_argument("--real-steps", type=int, default=150)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--phantom-seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="training seeds on the phantoms (initialisation and segment streams; same data): with 2 test "
                         "cases one seed is too noisy to rank the modes, so the target is judged on the mean over seeds")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    OUT.mkdir(parents=True, exist_ok=True)
    report, summary, t_start = [], {}, time.perf_counter()
    print(f"lesion_uda benchmark on {'cuda' if torch.cuda.is_available() else 'cpu'} ({args.threads} thread(s))")

    # --- phantoms ---
    from medgen.data.phantoms import write_phantom_dataset

    ph = work / "phantom"
    if not (ph / "dataset.json").exists():
        write_phantom_dataset("lesion_domains", ph, n_cases=10, seed=0, shape=(48, 48, 48), spacing=(3.0, 3.0, 3.0),
                              lesions=5, overwrite=True)
    per_seed = {}
    for seed in args.phantom_seeds:
        res = run_modes("phantom" if seed == 0 else f"phantom_seed{seed}", ph, work, args.phantom_steps, seed=seed)
        text, s = table(f"phantoms, training seed {seed} (constructed scanner shift A -> B; 7 training, 1 validation, "
                        "2 test cases per domain)", res)
        print(text)
        report.append(text)
        per_seed[seed] = s | {"timing": {m: {k: v for k, v in r.items() if k != "rows"} for m, r in res.items()}}
        if seed == args.phantom_seeds[0]:
            case0 = res["uda"]["rows"][0]["id"]
            meta = json.loads((ph / "dataset.json").read_text())
            paths = {k: str(ph / v) for k, v in next(c for c in meta["test"] if c["id"] == case0).items()
                     if isinstance(v, str) and v.endswith(".nii.gz")}
            preview(OUT / "phantom_preview.png", paths, {m: r["rows"][0]["_pred"]["lesion"][0].numpy()
                                                         for m, r in res.items()}, f"phantom target case {case0}")
    text, s = seed_table(per_seed)
    print(text)
    report.append(text)
    summary["phantom"] = s | {"per_seed": per_seed}

    if not args.skip_real and SHARED.is_dir():
        cases = prepare_real(work)
        ms = sorted({c.rsplit("_", 1)[0] for c in cases if c.startswith("patient")})
        gli = sorted(c for c in cases if c.startswith("TCGA"))
        # (a) MS patients under the constructed protocol shift, leave one patient out
        all_rows = {m: [] for m in MODES}
        for held in ms:
            train_ids = [p for p in ms if p != held]
            training = [_dom(cases[f"{p}_orig"], "A") for p in train_ids] + [_dom(cases[f"{p}_shift"], "B") for p in train_ids]
            ds = write_dataset(work / f"ms_shift_{held}", training, [], [_dom(cases[f"{held}_shift"], "B")],
                               "MS patients (Ljubljana), constructed protocol shift as target")
            res = run_modes(f"ms_{held}", ds, work, args.real_steps)
            for m in MODES:
                all_rows[m] += res[m]["rows"]
            summary.setdefault("ms_shift_timing", {})[held] = {m: {k: v for k, v in r.items() if k != "rows"} for m, r in res.items()}
            if held == ms[-1]:
                preview(OUT / "ms_shift_preview.png", cases[f"{held}_shift"],
                        {m: r["rows"][0]["_pred"]["lesion"][0].numpy() for m, r in res.items()}, f"{held}, shifted protocol")
        text, s = table("MS patients, constructed protocol shift (leave-one-patient-out, 3 mm)", {m: {"rows": r} for m, r in all_rows.items()})
        print(text)
        report.append(text)
        summary["ms_shift"] = s
        # (b) gliomas as the target domain, leave one glioma out
        all_rows = {m: [] for m in MODES}
        for held in gli:
            other = [g for g in gli if g != held]
            training = [_dom(cases[f"{p}_orig"], "A") for p in ms] + [_dom(cases[g], "B") for g in other]
            ds = write_dataset(work / f"glioma_{held}", training, [], [_dom(cases[held], "B")],
                               "source: MS (Ljubljana); target: TCGA glioma, FLAIR abnormality of fused pseudo-labels")
            res = run_modes(f"glioma_{held}", ds, work, args.real_steps)
            for m in MODES:
                all_rows[m] += res[m]["rows"]
            if held == gli[-1]:
                preview(OUT / "glioma_preview.png", cases[held],
                        {m: r["rows"][0]["_pred"]["lesion"][0].numpy() for m, r in res.items()}, f"{held} (pseudo-labels)")
        text, s = table("TCGA gliomas as target (leave-one-glioma-out, 3 mm; reference = fused MODEL pseudo-labels)",
                        {m: {"rows": r} for m, r in all_rows.items()})
        print(text)
        report.append(text)
        summary["glioma"] = s
    summary["peak_rss_mb"] = peak_rss_mb()
    summary["wall_s"] = time.perf_counter() - t_start
    if torch.cuda.is_available():
        summary["max_cuda_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(f"peak RSS {summary['peak_rss_mb']:.0f} MB, total wall {summary['wall_s']:.0f} s")
    (OUT / "results.json").write_text(json.dumps(summary, indent=1, default=float))
    (OUT / "report.md").write_text("".join(report) + f"\npeak RSS {summary['peak_rss_mb']:.0f} MB, wall {summary['wall_s']:.0f} s\n")
    return summary


if __name__ == "__main__":
    main()
