"""Benchmark of oct_anogan: f-AnoGAN vs AnoGAN vs the convolutional autoencoder baseline, on the OCT
phantoms and on the real B-scans of ../shared/data/oct_anogan (normals for training / validation / test,
abnormal scans for test only).

CPU-shortened on purpose (the machine is shared by several jobs): 32 x 32 patches, small networks and a few
hundred base steps; see SETTINGS and docs/pipelines/oct_anogan.md. A GPU run with the paper's settings
(64 x 64 patches, dim 64, 100k+ steps, 500 mapping steps) takes hours, not minutes. Every ROC AUC is printed
with its DeLong 95 % interval, and the methods are compared pairwise on the same test scans.

    python benchmarks/oct_anogan.py --steps-scale 5     # the run in the docs (300 phantom scans, about 1 hour)
    python benchmarks/oct_anogan.py [--work /tmp/oct_bench] [--out benchmarks/results/oct_anogan] [--skip-real]
        [--phantom-cases 60] [--steps-scale 5 --mapping-steps 500]   # the earlier 20-test-scan runs
    python benchmarks/oct_anogan.py --paired-only benchmarks/results/oct_anogan/results.json
    python benchmarks/oct_anogan.py --demo      # the quick demo comparison (medgen/pipelines/oct_anogan/demo.yaml)
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "oct_anogan"
METHODS = ("fanogan", "anogan", "autoencoder")
DEMO_YAML = REPO / "medgen" / "pipelines" / "oct_anogan" / "demo.yaml"

COMMON = ["data.patch_size=[32,32]", "train.batch_size=32", "train.log_every=25", "train.progress=lines"]
SETTINGS = {
    "phantom": {
        "common": COMMON + ["data.phantom_shape=[128,128]", "infer.overlap=0.5"],  # + data.phantom_cases
        "fanogan": ["model.dim=8", "model.latent_dim=64", "train.iterations=300", "model.encoder_iterations=150",
                    "train.val_every=50"],
        "anogan": ["model.dcgan_ngf=16", "train.iterations=600", "model.mapping_steps=100",
                   "model.val_mapping_steps=20", "train.val_every=200"],
        "autoencoder": ["model.ae_channels=[16,32,64]", "model.ae_latent_dim=64", "train.iterations=600",
                        "train.val_every=200"],
    },
    "real": {
        "common": COMMON + ["infer.overlap=0.0"],
        "fanogan": ["model.dim=8", "model.latent_dim=64", "train.iterations=200", "model.encoder_iterations=100",
                    "train.val_every=50"],
        "anogan": ["model.dcgan_ngf=16", "train.iterations=400", "model.mapping_steps=100",
                   "model.val_mapping_steps=10", "train.val_every=200"],
        "autoencoder": ["model.ae_channels=[16,32,64]", "model.ae_latent_dim=64", "train.iterations=400",
                        "train.val_every=200"],
    },
}


def real_dataset(folder: Path) -> Path:
    """dataset.json over ../shared/data/oct_anogan: 8 normals split 4 / 2 / 2, all 9 abnormal scans in test."""
    normals = sorted((SHARED / "normal").glob("*.nii.gz"))
    abnormal = sorted((SHARED / "abnormal").glob("*.nii.gz"))
    def case(p, label):
        c = {"id": p.name.replace(".nii.gz", ""), "image": str(p), "label": label}
        m = SHARED / "abnormal_masks" / p.name
        if m.exists():
            c["mask"] = str(m)
        return c
    data = {"name": "oct_anogan_real", "keys": {"image": "image", "mask": "label"},
            "reference": "Keshav0781/OCT-Biomarker-Segmentation (MIT), via ../shared/data/oct_anogan",
            "training": [case(p, 0) for p in normals[:4]], "validation": [case(p, 0) for p in normals[4:6]],
            "test": [case(p, 0) for p in normals[6:]] + [case(p, 1) for p in abnormal]}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps(data, indent=1))
    return folder


def throughput(run_dir: str, split: str = "test", max_images: int = 20) -> dict:
    """Whole-B-scan scoring speed (images/s) of a trained run on the first `max_images` test scans (threshold
    not included)."""
    from medgen.engine.commands import load_trained

    _, _, stages, _ = load_trained(run_dir, device="cpu")
    p = stages[-1]
    cases = p.data.load(split)[:max_images]
    with torch.no_grad():
        p.predict_case(cases[0])  # warm-up
        t0 = time.perf_counter()
        n_patches = 0
        for c in cases:
            n_patches += int(p.predict_case(c)["patch_scores"].numel())
        dt = time.perf_counter() - t0
    return {"images": len(cases), "seconds": dt, "images_per_s": len(cases) / dt, "patches": n_patches,
            "patches_per_s": n_patches / dt}


def scaled(settings: list[str], factor: float, mapping_steps: int | None = None) -> list[str]:
    """The settings with every step count (iterations, encoder iterations, validation interval) times `factor`
    and, when given, AnoGAN's test-time mapping steps replaced."""
    out = []
    for s in settings:
        key, _, value = s.partition("=")
        if key in ("train.iterations", "model.encoder_iterations", "train.val_every"):
            s = f"{key}={max(1, int(round(int(value) * factor)))}"
        elif key == "model.mapping_steps" and mapping_steps:
            s = f"{key}={mapping_steps}"
        out.append(s)
    return out


def run_dataset(tag: str, dataset: Path | None, work: Path, out: Path, seed: int = 0) -> dict:
    from medgen.engine.commands import build_config, infer, train_config
    from medgen.metrics.anomaly_evaluation import evaluate_anomaly, read_values

    s = SETTINGS[tag]
    results = {}
    per_case: dict[str, dict] = {}
    for method in METHODS:
        overrides = [f"model.method={method}", f"train.seed={seed}", f"output.root={work / 'runs' / tag}",
                     f"output.name={method}", "output.overwrite=true", *s["common"], *s[method]]
        overrides.append(f"data.dataset={dataset}" if dataset else f"data.phantom_dir={work / 'data'}")
        cls, cfg = build_config("oct_anogan", None, overrides)
        print(f"\n== {tag}: {method}", flush=True)
        t0 = time.perf_counter()
        summary = train_config(cls, cfg, overwrite=True)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        inf = infer(summary["run_dir"], split="test", overwrite=True, device="cpu")
        t_infer = time.perf_counter() - t0
        ds = dataset or predicted_dataset(inf["out"])  # the folder the pipeline wrote its phantoms to
        metrics = evaluate_anomaly(inf["out"], ds, out=Path(summary["run_dir"]) / "eval")
        tp = throughput(summary["run_dir"])
        steps = cfg.train.iterations
        crit = cfg.model.critic_steps if method == "fanogan" else 0
        enc = cfg.model.encoder_iterations if method == "fanogan" else 0
        patches_seen = ((steps - enc) * (crit + 1) + enc) * cfg.train.batch_size
        results[method] = {
            "metrics": {k: v for k, v in metrics.items() if k not in ("plots", "cases")},
            "train_s": t_train, "train_steps": steps, "train_patches_per_s": patches_seen / t_train,
            "infer_s_incl_threshold": t_infer, "throughput": tp, "run_dir": summary["run_dir"],
            "settings": s["common"] + s[method],
        }
        for r in read_values(inf["out"]):
            row = per_case.setdefault(r["id"], {"id": r["id"], "label": r.get("label")})
            row[f"{method}_score"] = float(r["score"])
            row[f"{method}_called"] = r.get("abnormal")
        # previews: ROC / PR and the overlay of the first abnormal test scan
        for name in ("roc", "pr"):
            src = Path(summary["run_dir"]) / "eval" / f"{name}.png"
            if src.exists():
                shutil.copy(src, out / f"{tag}_{method}_{name}.png")
        abn = [r for r in read_values(inf["out"]) if r.get("label") == 1]
        for r in abn[:2]:
            src = Path(r["overlay"])
            if src.exists() and src.stat().st_size < 200_000:
                shutil.copy(src, out / f"{tag}_{method}_{r['id']}_overlay.png")
        print(f"{tag} {method}: roc_auc={metrics.get('roc_auc', float('nan')):.3f} "
              f"pr_auc={metrics.get('pr_auc', float('nan')):.3f} pixel_auc={metrics.get('pixel_auc', float('nan')):.3f} "
              f"sens={metrics.get('sensitivity', float('nan')):.2f} spec={metrics.get('specificity', float('nan')):.2f} "
              f"train {t_train:.0f} s, {tp['images_per_s']:.3g} images/s", flush=True)
    return {"methods": results, "per_case": sorted(per_case.values(), key=lambda r: (r["label"], r["id"]))}


def predicted_dataset(predictions) -> Path:
    """The dataset folder a `medgen infer` output was predicted from (its manifest records it)."""
    return Path(json.loads((Path(predictions) / "manifest.json").read_text())["dataset"])


def demo_settings(path: Path = DEMO_YAML) -> dict:
    """The quick demo's overrides: {"common": [...], <run name>: [...]} from the pipeline's demo.yaml."""
    spec = yaml.safe_load(Path(path).read_text())
    return {"common": list(spec.get("common") or []), **{r["name"]: list(r["overrides"]) for r in spec["runs"]}}


def run_comparison(dataset, runs_root: Path, seed: int = 0, methods=None, settings=None, extra=()) -> dict:
    """Train, infer (test split) and evaluate each method on one dataset; returns a table and results.
    `settings` (default: the demo's, `demo_settings()`) gives each method's overrides; `methods` defaults to
    the methods it has. An empty or missing `dataset` folder gets the embedded OCT phantoms (written under
    its parent folder)."""
    from medgen.engine.commands import build_config, infer, train_config
    from medgen.errors import MedgenError
    from medgen.metrics import format_table
    from medgen.metrics.anomaly_evaluation import evaluate_anomaly

    settings = settings if settings is not None else demo_settings()
    methods = tuple(methods) if methods is not None else tuple(k for k in settings if k != "common")
    missing = [m for m in methods if m not in settings]
    if missing:
        raise MedgenError(f"no settings for method(s) {missing}: a run with the paper's defaults takes hours")
    dataset = Path(dataset)
    results, rows = {}, []
    for method in methods:
        overrides = [f"model.method={method}", f"train.seed={seed}", f"output.root={runs_root}",
                     f"output.name={method}_seed{seed}", "output.overwrite=true",
                     *settings.get("common", []), *settings.get(method, []), *extra]
        if (dataset / "dataset.json").exists():
            overrides.append(f"data.dataset={dataset}")
        else:
            overrides += [f"data.phantom_dir={dataset.parent}"]
        cls, cfg = build_config("oct_anogan", None, overrides)
        t0 = time.perf_counter()
        summary = train_config(cls, cfg, overwrite=True)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        inf = infer(summary["run_dir"], split="test", overwrite=True, device=cfg.train.device)
        t_infer = time.perf_counter() - t0
        metrics = evaluate_anomaly(inf["out"], predicted_dataset(inf["out"]))
        results[method] = {"metrics": metrics, "train_s": t_train, "infer_s": t_infer, "run_dir": summary["run_dir"]}
        rows.append({"id": method, "roc_auc": metrics.get("roc_auc", float("nan")),
                     "pr_auc": metrics.get("pr_auc", float("nan")), "pixel_auc": metrics.get("pixel_auc", float("nan")),
                     "sensitivity": metrics.get("sensitivity", float("nan")),
                     "specificity": metrics.get("specificity", float("nan")), "train_s": t_train})
    return {"table": format_table(rows), "run_dir": str(runs_root), "results": results}


def paired_tests(per_case: list[dict]) -> list[dict]:
    """DeLong's paired test of every GAN against the autoencoder (and f-AnoGAN against AnoGAN) on the same
    test scans, from the per-case scores: is a difference in ROC AUC larger than the few scans can resolve?"""
    from medgen.metrics import compare_roc_auc

    labels = [int(r["label"]) for r in per_case]
    out = []
    for a, b in (("fanogan", "autoencoder"), ("anogan", "autoencoder"), ("fanogan", "anogan")):
        if f"{a}_score" not in per_case[0] or f"{b}_score" not in per_case[0]:
            continue
        c = compare_roc_auc([r[f"{a}_score"] for r in per_case], [r[f"{b}_score"] for r in per_case], labels)
        out.append({"id": f"{a} - {b}", "auc_a": c["auc_a"], "auc_b": c["auc_b"], "difference": c["difference"],
                    "ci95_low": c["low"], "ci95_high": c["high"], "p": c["p"]})
    return out


def print_paired(tag: str, per_case: list[dict]) -> list[dict]:
    from medgen.metrics import format_table

    rows = paired_tests(per_case)
    print(f"\n### {tag}: paired ROC AUC differences on the same test scans (DeLong; p = two-sided, equal AUCs)\n")
    print(format_table(rows))
    return rows


def print_tables(tag: str, res: dict) -> None:
    from medgen.metrics import format_table

    rows = []
    for m, r in res["methods"].items():
        mt = r["metrics"]
        ci = (f"{mt['roc_auc_ci_low']:.2f}-{mt['roc_auc_ci_high']:.2f}" if "roc_auc_ci_low" in mt else "-")
        rows.append({"id": m, "roc_auc": mt.get("roc_auc"), "roc_auc_ci95": ci, "pr_auc": mt.get("pr_auc"),
                     "pixel_auc": mt.get("pixel_auc"),
                     "threshold": mt.get("threshold"), "sensitivity": mt.get("sensitivity"),
                     "specificity": mt.get("specificity"), "n_normal": mt.get("n_normal"), "n_abnormal": mt.get("n_abnormal")})
    print(f"\n### {tag}: image-level metrics (test split)\n")
    print(format_table(rows))
    rows = [{"id": m, "train_s": r["train_s"], "train_steps": r["train_steps"], "train_patches_per_s": r["train_patches_per_s"],
             "score_images_per_s": r["throughput"]["images_per_s"], "score_patches_per_s": r["throughput"]["patches_per_s"],
             "s_per_image": r["throughput"]["seconds"] / r["throughput"]["images"]} for m, r in res["methods"].items()]
    print(f"\n### {tag}: training and scoring speed (CPU, 1 thread)\n")
    print(format_table(rows))
    print(f"\n### {tag}: per case (score; 1 = called abnormal at the validation threshold)\n")
    print(format_table([{k: v for k, v in r.items()} for r in res["per_case"]]))
    res["paired"] = print_paired(tag, res["per_case"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", default="/tmp/medgen_bench_oct_anogan")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "oct_anogan"))
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps-scale", type=float, default=1.0,
                    help="multiply every training step count (and validation interval) of SETTINGS by this")
    ap.add_argument("--mapping-steps", type=int, default=0,
                    help="AnoGAN's test-time mapping steps (0: SETTINGS' 100; the paper uses about 500)")
    ap.add_argument("--phantom-cases", type=int, default=300,
                    help="phantom B-scans: half training, 1/6 validation, 1/3 test (half of them abnormal); "
                         "300 gives 50 + 50 test scans, enough to tell AUCs apart (10 + 10 could not)")
    ap.add_argument("--paired-only", metavar="RESULTS_JSON",
                    help="print the paired AUC tests of a saved results file's per-case scores, and exit")
    ap.add_argument("--demo", action="store_true",
                    help="run the quick demo comparison (demo.yaml: f-AnoGAN vs autoencoder on the phantoms), and exit")
    args = ap.parse_args()
    if args.demo:
        res = run_comparison(Path(args.work) / "data" / "oct", Path(args.work) / "runs" / "demo", seed=args.seed)
        print(res["table"])
        return 0
    if args.paired_only:
        saved = json.loads(Path(args.paired_only).read_text())
        for tag in ("phantom", "real"):
            if tag in saved:
                print_paired(tag, saved[tag]["per_case"])
        return 0
    for tag in SETTINGS:
        for method in METHODS:
            SETTINGS[tag][method] = scaled(SETTINGS[tag][method], args.steps_scale, args.mapping_steps)
    SETTINGS["phantom"]["common"].append(f"data.phantom_cases={args.phantom_cases}")
    torch.set_num_threads(1)  # 2 shared cores: one thread is faster than two fighting
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    report = {"settings": SETTINGS, "device": "cpu", "threads": 1, "torch": torch.__version__}
    report["phantom"] = run_dataset("phantom", None, work, out, args.seed)
    print_tables("phantom", report["phantom"])
    if not args.skip_real and SHARED.is_dir():
        ds = real_dataset(work / "real_dataset")
        report["real"] = run_dataset("real", ds, work, out, args.seed)
        print_tables("real", report["real"])
    elif not SHARED.is_dir():
        print(f"\n(real data skipped: {SHARED} is absent)")
    ph = report["phantom"]["methods"]
    auc = {m: ph[m]["metrics"].get("roc_auc", float("nan")) for m in METHODS}
    ips = {m: ph[m]["throughput"]["images_per_s"] for m in METHODS}
    steps_used = int([s for s in SETTINGS["phantom"]["anogan"] if s.startswith("model.mapping_steps=")][0].split("=")[1])
    speedup = ips["fanogan"] / ips["anogan"]
    targets = {
        "fanogan_beats_ae": auc["fanogan"] > auc["autoencoder"],
        "anogan_beats_ae": auc["anogan"] > auc["autoencoder"],
        "fanogan_auc_ge_0.9": auc["fanogan"] >= 0.9,
        "anogan_auc_ge_0.9": auc["anogan"] >= 0.9,
        "speedup_measured": speedup,
        "anogan_mapping_steps_used": steps_used,
        "speedup_extrapolated_to_500_steps": speedup * 500 / steps_used,
        "speedup_ge_100_at_500_steps": speedup * 500 / steps_used >= 100,
        "fanogan_auc_within_0.02_of_anogan": auc["fanogan"] >= auc["anogan"] - 0.02,
    }
    report["targets"] = targets
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["total_s"] = time.perf_counter() - t_all
    print("\n### targets (phantoms)\n")
    for k, v in targets.items():
        print(f"- {k}: {v}")
    print(f"\npeak RSS {report['peak_rss_mb']:.0f} MB; total {report['total_s'] / 60:.1f} min")
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
