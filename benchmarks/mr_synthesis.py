"""Benchmark mr_synthesis (Ea-GANs): cgan vs gEa-GAN vs dEa-GAN vs histogram matching vs voxel-wise regression
(linear and cubic), on the head phantoms and on the real co-registered subjects of ../shared/data.

    .venv/bin/python benchmarks/mr_synthesis.py [--quick] [--data ../shared/data] [--out benchmarks/results/mr_synthesis]

Every method is scored by the pipeline's own `evaluate_case` (PSNR, SSIM, NMSE, MAE inside the brain mask, in
the target's units; edge_l1 / edge_corr between Sobel maps of the normalised estimate and target). Baselines are
fitted on the same training cases the networks train on. Prints per-case tables, training throughput, whole-volume
inference time and peak memory; writes results.json and preview PNGs to --out.

CPU budget (on 2 shared cores, one torch thread: --only phantom about 17 min, --only real about 5 min):
32^3 patches, ngf = ndf = 16, batch 2, 40 epochs (phantoms, 880 steps; --phantom-epochs) / 8 epochs (real,
200 steps; --real-epochs) per variant, lr 5e-3 (--lr; 25x the paper's 2e-4, to make up for ~1000x fewer updates,
chosen on the phantoms' validation cases: 2e-3 and 1e-3 learnt slower), the paper's schedule compressed
proportionally (2/3 constant, 1/3 linear decay, lambda_edge ramp over the first 20/150 of the run). Real subjects
are cropped to their nonzero bounding box and resampled to 2 mm in a temporary folder (never the repo).

--paper-scale (with --only phantom) trains the phantom half with the paper's settings instead: ngf = ndf = 64,
batch 6, lr 2e-4, 150 epochs, each 48^3 phantom whole in one 64^3 window. 15-18 s per step on one CPU thread
(300 steps per variant, ~8 core-hours per seed, 14 GB peak RSS): a GPU run. --edge-reference prints the edge
scores of the noise-free target and of blurred targets on the test phantoms (what the methods' scores compare with).

Training seeds: --seed N (N != 0) trains every variant with train.seed N and writes results_<half>_seed<N>.json
without pictures; --combine prints the phantom means over every seed's file in --out, the targets judged on them
(and per seed), and the variants' differences paired by seed. One --out folder per training length, e.g.
--phantom-epochs 120 --out benchmarks/results/mr_synthesis/epochs120.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("cgan", "gea", "dea")
METRICS = ("psnr", "ssim", "nmse", "mae", "edge_l1", "edge_corr")
# Real subjects (folder, t1, t2, flair), all co-registered within the subject, 1 mm.
REAL = {
    "brats_00001": ("mr_synthesis/brats2023_gli_00001_000", "BraTS-GLI-00001-000-t1n.nii.gz",
                    "BraTS-GLI-00001-000-t2w.nii.gz", "BraTS-GLI-00001-000-t2f.nii.gz"),
    "cstar_stroke": ("mr_synthesis/cstar_chronic_stroke", "T1.nii.gz", "T2.nii.gz", "FLAIR.nii.gz"),
    "ms_patient07": ("lesion_da/domainA_ms_ljubljana/patient07", "T1.nii.gz", "T2.nii.gz", "FLAIR.nii.gz"),
    "ms_patient19": ("lesion_da/domainA_ms_ljubljana/patient19", "T1.nii.gz", "T2.nii.gz", "FLAIR.nii.gz"),
    "ms_patient26": ("lesion_da/domainA_ms_ljubljana/patient26", "T1.nii.gz", "T2.nii.gz", "FLAIR.nii.gz"),
    "tcga_du_7294": ("lesion_da/domainB_glioma_tcga/TCGA-DU-7294", "t1.nii.gz", "t2.nii.gz", "flair.nii.gz"),
    "tcga_fg_6692": ("lesion_da/domainB_glioma_tcga/TCGA-FG-6692", "t1.nii.gz", "t2.nii.gz", "flair.nii.gz"),
}
# Fixed split: every source (BraTS, C-STAR, MS, TCGA) in training, MS and TCGA also in test.
REAL_TRAIN = ("brats_00001", "cstar_stroke", "ms_patient07", "tcga_du_7294")
REAL_TEST = ("ms_patient19", "ms_patient26", "tcga_fg_6692")
PHANTOM_EPOCHS = 40.0  # 880 steps; 6 (132 steps) before: far from converged (see the docs)
PAPER_EPOCHS = 150.0  # paper: 100 constant + 50 decay epochs (--paper-scale)
LR = 5e-3  # chosen on the phantoms' validation cases (2e-3 before)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def prepare_real(data: Path, out: Path, spacing: float = 2.0) -> Path:
    """Crop each subject to its T1 nonzero box, resample to `spacing` mm, write a dataset.json (no brain_mask:
    the pipeline derives it from the T1's nonzero region)."""
    import nibabel as nib
    from scipy import ndimage

    out.mkdir(parents=True, exist_ok=True)
    entries = {}
    for cid, (folder, *files) in REAL.items():
        imgs = [nib.load(data / folder / f) for f in files]
        arrs = [np.clip(np.asarray(im.dataobj, dtype=np.float32), 0, None) for im in imgs]
        nz = np.argwhere(arrs[0] > 0)
        lo, hi = np.maximum(nz.min(0) - 2, 0), np.minimum(nz.max(0) + 3, arrs[0].shape)
        zooms = np.asarray(imgs[0].header.get_zooms()[:3], dtype=float)
        factor = zooms / spacing
        affine = imgs[0].affine.copy()
        affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
        affine[:3, :3] = affine[:3, :3] / factor
        entry = {"id": cid}
        for key, arr in zip(("t1", "t2", "flair"), arrs):
            crop = arr[tuple(slice(a, b) for a, b in zip(lo, hi))]
            res = ndimage.zoom(crop, factor, order=1).astype(np.float32)
            res[res < 1e-3 * max(float(res.max()), 1e-6)] = 0.0
            path = out / f"{cid}_{key}.nii.gz"
            img = nib.Nifti1Image(res, affine)
            img.set_qform(affine, 1)
            img.set_sform(affine, 1)
            nib.save(img, path)
            entry[key] = path.name
        entries[cid] = entry
    dataset = {"name": "mr_synthesis_real", "description": "benchmark copy: cropped, 2 mm",
               "keys": {"t1": "image", "t2": "image", "flair": "image"},
               "training": [entries[c] for c in REAL_TRAIN], "validation": [], "test": [entries[c] for c in REAL_TEST]}
    (out / "dataset.json").write_text(json.dumps(dataset, indent=1))
    return out


def run_task(label: str, dataset: Path, target: str, epochs: float, runs: Path, quick: bool, extra=(),
             lr: float = LR, seed: int = 0, paper: bool = False) -> dict:
    """Train the three variants and fit the baselines on one task; score every test case.

    paper: the paper's network, batch and optimiser (configs/mr_synthesis.yaml: ngf = ndf = 64, batch 6, lr 2e-4)
    with 64^3 windows, so that each 48^3 phantom is trained whole (padded with background), as the reference
    trained whole volumes; `epochs` and the compressed schedule as otherwise (150 epochs = the paper's 100 + 50).
    """
    from medgen.engine.commands import build_config, load_trained, train_config
    from medgen.baselines.intensity import HistogramMatching, PolynomialRegression

    scale = (["data.patch_size=[64,64,64]", "model.ngf=64", "model.ndf=64", "train.batch_size=6", "model.lr=2e-4"]
             if paper else ["data.patch_size=[32,32,32]", "model.ngf=16", "model.ndf=16", "train.batch_size=2",
                            f"model.lr={lr}"])
    common = [f"data.dataset={dataset}", *scale, f"model.target_key={target}", f"train.epochs={epochs}",
              f"model.epochs_constant={epochs * 2 / 3}", f"model.epochs_decay={epochs / 3}",
              f"model.edge_ramp_epochs={epochs * 20 / 150}", "train.progress=off",
              "train.val_every=100000", "infer.overlap=0.25", "infer.window_batch=8", f"output.root={runs}",
              "output.overwrite=true", f"train.seed={seed}", *extra]
    result = {"task": label, "target": target, "methods": {}, "timing": {}}
    pipes, preds = {}, {}
    for variant in VARIANTS:
        cls, cfg = build_config("mr_synthesis", None, [*common, f"model.variant={variant}", f"output.name={label}_{variant}"])
        t0 = time.perf_counter()
        summary = train_config(cls, cfg, overwrite=True)
        train_s = time.perf_counter() - t0
        _, _, stages, _ = load_trained(summary["run_dir"], checkpoint="last", device="cpu")
        pipes[variant] = stages[-1]
        steps = summary["steps"]
        result["timing"][variant] = {"train_s": train_s, "steps": steps, "steps_per_s": steps / train_s,
                                     "patches_per_s": steps * cfg.train.batch_size / train_s,
                                     "samples_per_epoch": cfg.train.samples_per_epoch}
        print(f"[{label}] {variant}: {steps} steps in {train_s:.0f} s ({steps / train_s:.2f} steps/s, "
              f"{steps * cfg.train.batch_size / train_s:.2f} patches/s), peak RSS {peak_rss_mb():.0f} MB", flush=True)
    ref = pipes["dea"]
    train_cases, test_cases = ref.data.load("training"), ref.data.load("test")
    methods = {v: pipes[v] for v in VARIANTS}
    t0 = time.perf_counter()
    methods["histogram_matching"] = HistogramMatching(["t1"], target, ref.config.data.mask_key).fit(train_cases)
    methods["linear_regression"] = PolynomialRegression(["t1"], target, ref.config.data.mask_key, 1).fit(train_cases)
    methods["poly3_regression"] = PolynomialRegression(["t1"], target, ref.config.data.mask_key, 3).fit(train_cases)
    result["timing"]["baselines_fit_s"] = time.perf_counter() - t0
    for name, method in methods.items():
        rows, times = [], []
        for case in test_cases:
            for net in getattr(method, "networks", {}).values():
                net.eval()
            t0 = time.perf_counter()
            with torch.no_grad():
                pred = method.predict_case(case)
            times.append(time.perf_counter() - t0)
            scorer = method if name in VARIANTS else ref
            scores = scorer.evaluate_case(scorer.output_values(case, pred), case)
            rows.append({"id": case.id, **{k: float(scores[k]) for k in METRICS}})
            preds.setdefault(case.id, {})[name] = pred["output"][0].numpy()
        result["methods"][name] = {"cases": rows, "mean": {k: float(np.mean([r[k] for r in rows])) for k in METRICS},
                                   "predict_s_per_volume": float(np.mean(times))}
    result["volume_shape"] = list(test_cases[0][target].shape[1:])
    result["n_train"], result["n_test"] = len(train_cases), len(test_cases)
    result["_cases"] = test_cases
    result["_preds"] = preds
    return result


def print_task(res: dict) -> None:
    from medgen.metrics import format_table

    print(f"\n### {res['task']}: t1 -> {res['target']} ({res['n_train']} training, {res['n_test']} test cases; "
          f"test volume {res['volume_shape']})")
    rows = []
    for name, m in res["methods"].items():
        for r in m["cases"]:
            rows.append({"case": r["id"], "method": name, **{k: r[k] for k in METRICS}})
    print(format_table(rows, id_key="case"))
    print("\nmean over test cases:")
    print(format_table([{"method": n, **m["mean"], "predict_s": m["predict_s_per_volume"]}
                        for n, m in res["methods"].items()], id_key="method"))


def check_targets(res: dict) -> dict:
    """The phantom target (docs/pipelines/mr_synthesis.md): dea >= gea >= cgan > both intensity baselines, on PSNR and on the edge score."""
    mean = {n: m["mean"] for n, m in res["methods"].items()}
    out = {}
    for metric, sign in (("psnr", 1), ("edge_corr", 1), ("edge_l1", -1)):
        v = {n: sign * mean[n][metric] for n in mean}
        best_base = max(v["histogram_matching"], v["linear_regression"], v["poly3_regression"])
        out[metric] = {"dea>=gea": v["dea"] >= v["gea"], "gea>=cgan": v["gea"] >= v["cgan"],
                       "cgan>baselines(hist,linear)": v["cgan"] > max(v["histogram_matching"], v["linear_regression"]),
                       "cgan>all_baselines(incl.poly3)": v["cgan"] > best_base}
    return out


TARGET_CHECKS = ("dea>=gea", "gea>=cgan", "cgan>baselines(hist,linear)")  # cubic regression is reported, not a target


def targets_met(checks: dict) -> bool:
    """The verdict rule of the docs: every target check holds on every metric."""
    return all(per_metric[name] for per_metric in checks.values() for name in TARGET_CHECKS)


def paired_differences(by_seed: dict) -> str:
    """The variant pairs of the target, paired by seed: mean difference and two-sided paired t-test p."""
    from scipy.stats import ttest_rel

    seeds, lines = sorted(by_seed), ["", "paired by seed (mean difference, paired t-test p):"]
    for a, b in (("gea", "cgan"), ("dea", "gea"), ("dea", "cgan")):
        cells = []
        for k in ("psnr", "edge_l1", "edge_corr"):
            x, y = ([by_seed[s][n]["mean"][k] for s in seeds] for n in (a, b))
            cells.append(f"{k} {np.mean(np.subtract(x, y)):+.4f} (p {ttest_rel(x, y).pvalue:.3f})")
        lines.append(f"  {a} - {b}: " + ", ".join(cells))
    return "\n".join(lines)


def seed_summary(files) -> str:
    """Phantom tasks: each method's test mean per seed and over seeds, and the targets on the seed means."""
    from medgen.metrics import format_table

    runs = {}
    for f in files:
        rep = json.loads(Path(f).read_text())
        for label, task in rep["tasks"].items():
            if label.startswith("phantom"):
                runs.setdefault(label, {})[rep.get("seed", 0)] = task["methods"]
    out = []
    for label, by_seed in runs.items():
        seeds = sorted(by_seed)
        methods = list(by_seed[seeds[0]])
        rows, mean = [], {}
        for n in methods:
            mean[n] = {"mean": {k: float(np.mean([by_seed[s][n]["mean"][k] for s in seeds])) for k in METRICS}}
            rows.append({"method": n, **{f"psnr_seed{s}": by_seed[s][n]["mean"]["psnr"] for s in seeds},
                         **{k: mean[n]["mean"][k] for k in ("psnr", "edge_l1", "edge_corr")}})
            if len(seeds) > 1:
                rows[-1]["psnr_sd"] = float(np.std([by_seed[s][n]["mean"]["psnr"] for s in seeds], ddof=1))
        checks = check_targets({"methods": mean})
        per_seed = {s: targets_met(check_targets({"methods": by_seed[s]})) for s in seeds}
        out.append(f"### {label}, seeds {seeds} (psnr, edge_l1, edge_corr: means over the seeds)\n"
                   + format_table(rows, id_key="method")
                   + "\ntargets on the seed means: " + json.dumps(checks)
                   + f"\nmet on the seed means: {targets_met(checks)}; met per seed: {per_seed}"
                   + (paired_differences(by_seed) if len(seeds) > 2 else ""))
    return "\n\n".join(out) if out else "no phantom results files"


def edge_reference(n_cases: int = 16, blurs=(0.5, 0.7, 1.0)) -> str:
    """Edge scores of reference estimates on the benchmark's test phantoms: the noise-free target (the phantom
    without its Rician noise: what a perfect synthesis could at best return), the same with a fresh draw of noise
    at the target's level, and the target blurred by a Gaussian of sigma 0.5-1 voxel. Shows how far the methods
    are from the edges of the truth, in the benchmark's units."""
    import nibabel as nib
    from scipy import ndimage

    from medgen.data.phantoms import write_phantom_dataset
    from medgen.data.phantoms.head import make_head
    from medgen.data.presets import MRPreset
    from medgen.metrics import format_table
    from medgen.metrics.edges import edge_scores

    lines = []
    with tempfile.TemporaryDirectory(prefix="mrs_edge_ref_") as tmp:
        ds = write_phantom_dataset("head", Path(tmp) / "head", n_cases=n_cases, seed=0, shape=(48, 48, 48))
        meta = json.loads(ds.read_text())
        opts = meta["phantom"]["options"]
        for target in ("t2", "flair"):
            scores: dict[str, list[dict]] = {}
            for case in meta["test"]:
                stored = np.asarray(nib.load(ds.parent / case[target]).dataobj, dtype=np.float32)
                clean = make_head(case["seed"], (48, 48, 48), opts["spacing"], lesions=opts["lesions"],
                                  mr_noise=False)[target]
                mask = np.asarray(nib.load(ds.parent / case["brain_mask"]).dataobj) > 0
                if np.abs(stored - clean)[mask].mean() > 0.05 * stored[mask].mean():  # noise is 2 % of the signal
                    raise RuntimeError(f"{case['id']}: the regenerated phantom is not the stored one")
                # the benchmark's scoring: the target normalised by the mr preset inside the brain mask, every
                # estimate mapped by the target's own normalisation, background -1 outside the mask
                _, params = MRPreset()(torch.from_numpy(stored)[None], mask=torch.from_numpy(mask)[None])

                def normalised(a: np.ndarray) -> torch.Tensor:
                    y = np.clip((a - params["low"]) * 2.0 / (params["high"] - params["low"]) - 1.0, -1.0, 1.0)
                    return torch.from_numpy(np.where(mask, y, -1.0).astype(np.float32))[None]

                truth = normalised(stored)
                scores.setdefault("noise_free_target", []).append(edge_scores(normalised(clean), truth, mask))
                # the same truth with a fresh draw of noise of the target's level: does the edge score reward noise?
                rng, sd = np.random.default_rng(case["seed"]), float((stored - clean)[mask].std())
                fresh = np.hypot(clean + rng.normal(0.0, sd, clean.shape), rng.normal(0.0, sd, clean.shape))
                scores.setdefault("target_fresh_noise", []).append(edge_scores(normalised(fresh), truth, mask))
                for sigma in blurs:
                    blurred = ndimage.gaussian_filter(stored, sigma)
                    scores.setdefault(f"target_blurred_{sigma:g}vox", []).append(
                        edge_scores(normalised(blurred), truth, mask))
            rows = [{"reference": name, **{k: float(np.mean([c[k] for c in cases])) for k in ("edge_l1", "edge_corr")}}
                    for name, cases in scores.items()]
            lines.append(f"### phantom_t1_{target}: means over the {len(meta['test'])} test phantoms\n"
                         + format_table(rows, id_key="reference"))
    return "\n\n".join(lines)


def save_preview(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    case = res["_cases"][0]
    preds = res["_preds"][case.id]
    names = ["t1", "target", "histogram_matching", "poly3_regression", "cgan", "gea", "dea"]
    images = {"t1": case["t1"][0].numpy(), "target": case[res["target"]][0].numpy(), **preds}
    z = images["t1"].shape[2] // 2
    fig, axes = plt.subplots(2, len(names), figsize=(1.6 * len(names), 3.4))
    from medgen.losses import sobel_edges

    for i, name in enumerate(names):
        img = images[name][:, :, z]
        edge = sobel_edges(torch.from_numpy(images[name])[None, None].float())[0, 0, :, :, z].numpy()
        axes[0, i].imshow(np.rot90(img), cmap="gray", vmin=-1, vmax=1)
        axes[1, i].imshow(np.rot90(edge), cmap="magma", vmin=-1, vmax=1)
        axes[0, i].set_title(name.replace("_regression", "").replace("histogram_matching", "hist. match"), fontsize=7)
        for ax in axes[:, i]:
            ax.axis("off")
    fig.suptitle(f"{res['task']}: {case.id} (top: image, bottom: Sobel edge map)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "mr_synthesis"))
    parser.add_argument("--quick", action="store_true", help="a 2-minute smoke run of the benchmark itself")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared 2-core machine)")
    parser.add_argument("--only", choices=("all", "phantom", "real"), default="all",
                        help="run one half (results_<half>.json), e.g. the two halves in two processes")
    parser.add_argument("--phantom-epochs", type=float, default=None,
                        help=f"training epochs per variant on the phantoms (default {PHANTOM_EPOCHS:g}, 22 steps each; "
                             f"{PAPER_EPOCHS:g} with --paper-scale)")
    parser.add_argument("--real-epochs", type=float, default=8.0, help="training epochs per variant, real subjects")
    parser.add_argument("--lr", type=float, default=LR, help=f"Adam learning rate of G and D (default {LR:g})")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed of every variant (train.seed); seeds other than 0 write "
                             "results_<half>_seed<N>.json and no pictures")
    parser.add_argument("--combine", action="store_true",
                        help="print the phantom means over every seed's results file and the targets on them, then exit")
    parser.add_argument("--paper-scale", action="store_true",
                        help="phantoms at the paper's settings (ngf 64, batch 6, lr 2e-4, each 48^3 phantom whole in a "
                             "64^3 window, 150 epochs): a GPU run; needs --only phantom")
    parser.add_argument("--edge-reference", action="store_true",
                        help="print the edge scores of the noise-free target and of blurred targets, then exit")
    args = parser.parse_args(argv)
    if args.combine:
        print(seed_summary(sorted(Path(args.out).glob("results*.json"))))
        return 0
    if args.edge_reference:
        print(edge_reference())
        return 0
    if args.paper_scale and args.only != "phantom":
        parser.error("--paper-scale is defined for the phantom half: add --only phantom")
    if args.phantom_epochs is None:
        args.phantom_epochs = PAPER_EPOCHS if args.paper_scale else PHANTOM_EPOCHS
    torch.set_num_threads(args.threads)
    from medgen.data.phantoms import write_phantom_dataset

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} thread(s)"
    report = {"device": device, "seed": args.seed, "settings": {}, "tasks": {}}
    with tempfile.TemporaryDirectory(prefix="mrs_bench_") as tmp:
        tmp = Path(tmp)
        n_cases, ph_epochs, real_epochs = (8, 1.0, 0.2) if args.quick else (16, args.phantom_epochs, args.real_epochs)
        head = write_phantom_dataset("head", tmp / "head", n_cases=n_cases, seed=0, shape=(48, 48, 48))
        tasks = [("phantom_t1_t2", head.parent, "t2", ph_epochs), ("phantom_t1_flair", head.parent, "flair", ph_epochs)]
        if args.only == "real":
            tasks = []
        data = Path(args.data)
        if args.only == "phantom":
            pass
        elif data.is_dir():
            real = prepare_real(data, tmp / "real")
            tasks += [("real_t1_t2", real, "t2", real_epochs), ("real_t1_flair", real, "flair", real_epochs)]
        else:
            print(f"real data folder {data} is absent: phantoms only")
        scale = ({"patch": 64, "ngf": 64, "batch": 6, "lr": 2e-4, "paper_scale": True} if args.paper_scale
                 else {"patch": 32, "ngf": 16, "batch": 2, "lr": args.lr})
        report["settings"] = {"phantom_cases": n_cases, "phantom_shape": [48, 48, 48], "phantom_epochs": ph_epochs,
                              "real_epochs": real_epochs, **scale,
                              "real_split": {"training": REAL_TRAIN, "test": REAL_TEST}, "real_spacing_mm": 2.0}
        for label, dataset, target, epochs in tasks:
            res = run_task(label, dataset, target, epochs, tmp / "runs", args.quick, lr=args.lr, seed=args.seed,
                           paper=args.paper_scale)
            print_task(res)
            if label.startswith("phantom"):
                res["targets"] = check_targets(res)
                print("targets:", json.dumps(res["targets"]))
            if args.seed == 0:  # the committed pictures are seed 0's
                save_preview(res, out / f"{label}.png")
            report["tasks"][label] = {k: v for k, v in res.items() if not k.startswith("_")}
            print(f"elapsed {time.perf_counter() - t_start:.0f} s, peak RSS {peak_rss_mb():.0f} MB", flush=True)
    report["peak_rss_mb"] = peak_rss_mb()
    report["wall_s"] = time.perf_counter() - t_start
    if torch.cuda.is_available():
        report["max_cuda_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    name = "results.json" if args.only == "all" else f"results_{args.only}.json"
    if args.seed != 0:
        name = name.replace(".json", f"_seed{args.seed}.json")
    (out / name).write_text(json.dumps(report, indent=1))
    print(f"\ntotal {report['wall_s']:.0f} s, peak RSS {report['peak_rss_mb']:.0f} MB; wrote {out}/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
