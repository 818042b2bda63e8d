"""Paper-scale run: lesion_uda, mr_synthesis and oct_anogan at their papers' settings, in one short GPU run
whose decision rules are fixed in docs/benchmarks.md ("Paper-scale run") before it is run.

    python benchmarks/paper_scale.py                      # on one H100 / H200: about 8 minutes
    python benchmarks/paper_scale.py --dry-run            # CPU, tiny sizes, the same code path (about a minute)
    python benchmarks/paper_scale.py --only lesion_uda --out <folder>   # one pipeline in the 8 minutes

Experiments (each on medgen's phantoms, truth known; the shifts and anomalies are constructed):
  lesion_uda   : the paper's DeepMedic (x3 / x5 pathways) and domain discriminator (configs/lesion_uda.yaml),
                 source_only / uda / target_supervised (+ uda_last_layer with --last-layer) on the lesion_domains
                 phantoms' scanners A -> B, every mode with each of --seeds; target-domain test Dice and the
                 fraction of the source_only -> target_supervised gap closed.
  mr_synthesis : cgan / gea / dea at the paper's settings (ngf = ndf = 64, batch 6, lr 2e-4, the paper's
                 schedule compressed to the run's length) on the head phantoms, each 48^3 phantom whole in one 64^3
                 window, T1 -> T2 and T1 -> FLAIR, each of --seeds (benchmarks/mr_synthesis.py's --paper-scale
                 task, imported); PSNR / edge scores and the variants' differences paired by seed and test phantom.
  oct_anogan   : f-AnoGAN (WGAN-GP + izi_f) at the paper's width (dim 64) and patch (64 x 64) against the
                 convolutional autoencoder on 300 OCT phantoms at their native 256 x 256, each of --oct-seeds
                 (benchmarks/oct_anogan.py's run_comparison, imported); image ROC AUC with DeLong's paired test,
                 pixel AUC.

Sizing: every run's step count comes from --budget-minutes (default 8), ASSUMED_RATES (steps/s on one H100 /
H200 at the speeds the GPU speed work aimed for) and ASSUMED_OVERHEAD_S (set-up, inference and scoring per run);
the plan and the expected time are printed before anything starts, and each run's measured rate is recorded
beside the assumed one so that the next run can be resized (--rate NAME=STEPS_PER_S). A run longer than its
paper's length is never planned. The script refuses to start without CUDA unless --dry-run or --allow-cpu.

Writes paper_scale_<UTC date>-<time>_<device>.json and .md to --out (default benchmarks/results/paper_scale;
with --dry-run a new temporary folder), rewritten after every training run, so a run stopped part-way keeps
what it measured ("complete": false); an existing file is never overwritten. Phantoms and runs go to --work
(default: a temporary folder removed at the end); each run's folder is deleted once it is scored unless
--keep-runs.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PIPELINES = ("lesion_uda", "mr_synthesis", "oct_anogan")
# mr_synthesis runs first: at 8 minutes it is the one trained closest to its paper's length, so a run that overruns
# its budget loses the least decisive experiments, not that one.
RUN_ORDER = ("mr_synthesis", "lesion_uda", "oct_anogan")

# steps/s on one H100 / H200, after the GPU speed work (its targets: lesion_uda 17 steps/s with the paper's
# DeepMedic and 10 + 10 segments, mr_synthesis 10 steps/s at 128^3 x 6, f-AnoGAN about 55 GAN steps/s = 20,000
# images/s). mr_synthesis here trains 64^3 windows (1/8 of the voxels): 20 steps/s assumes only a 2x gain.
# The f-AnoGAN encoder step (one batch through E, G and the critic's features, no penalty) and the autoencoder
# step are assumed 150 steps/s. source_only / target_supervised take one domain's batch and no discriminator:
# timed at the uda rate, so they finish early. Replace with measured rates: --rate lesion_uda=11.4.
ASSUMED_RATES = {"lesion_uda": 17.0, "mr_synthesis": 20.0, "fanogan": 55.0, "fanogan_encoder": 150.0,
                 "autoencoder": 150.0}
# Seconds per training run on top of its steps: building the pipeline and the data, cuDNN's autotuning, the
# checkpoints, inference and scoring (mr_synthesis predicts its 3 test phantoms on the CPU and fits the intensity
# baselines; oct_anogan scores 50 validation and 100 test B-scans at 256 x 256 and writes their maps).
ASSUMED_OVERHEAD_S = {"lesion_uda": 10.0, "mr_synthesis": 12.0, "oct_anogan": 30.0}
STARTUP_S = 20.0  # imports, CUDA context, environment record
# writing each pipeline's phantoms (20 + 20 lesion subjects, 16 heads at 48^3, 300 B-scans: 22, 9 and 8 s on a
# loaded 2-core CPU)
DATA_S = {"lesion_uda": 15.0, "mr_synthesis": 8.0, "oct_anogan": 7.0}
# Share of the training time (what is left of the budget after the overheads) per pipeline; a pipeline whose
# plan reaches its paper's length gives the rest to the others.
SHARES = {"lesion_uda": 0.4, "mr_synthesis": 0.4, "oct_anogan": 0.2}
FANOGAN_TIME_SHARE = 0.75  # of oct_anogan's training time; the autoencoder gets the rest

# The papers' lengths (configs/<name>.yaml): the cap of every planned run.
PAPER_LESION_STEPS = 3000
PAPER_MR_EPOCHS = 150.0
MR_STEPS_PER_EPOCH = 2  # 11 training phantoms, one 64^3 window each, batch 6
PAPER_FANOGAN_GAN, PAPER_FANOGAN_ENCODER = 100_000, 50_000  # Schlegl et al. 2019 (configs/oct_anogan.yaml)

LESION_MODES = ("source_only", "uda", "target_supervised")
MR_VARIANTS = ("cgan", "gea", "dea")
MR_TASKS = {"t1_t2": "t2", "t1_flair": "flair"}
MR_PAIRS = (("gea", "cgan"), ("dea", "gea"))
OCT_METHODS = ("fanogan", "autoencoder")
# The trainer's log interval (a host sync each, and a logged steps/s); every step in the dry run, so that its
# few steps still log rates.
LOG_EVERY = {"lesion_uda": 25, "mr_synthesis": 10, "oct_anogan": 100}

# Data: paper-scale run and dry run.
DATA = {
    "paper": {"lesion": {"n_cases": 20, "shape": (48, 48, 48), "spacing": (3.0, 3.0, 3.0), "lesions": 5},
              "head": {"n_cases": 16, "shape": (48, 48, 48)},
              "oct": {"n_cases": 300, "shape": (256, 256)}},
    "dry": {"lesion": {"n_cases": 4, "shape": (32, 32, 32), "spacing": (4.5, 4.5, 4.5), "lesions": 4},
            "head": {"n_cases": 8, "shape": (24, 24, 24)},
            "oct": {"n_cases": 24, "shape": (64, 64)}},
}
# Dry run: the same configs and code, networks of the smoke configs' size and a few steps (lesion_uda: the
# pipeline's SMALL_DEEPMEDIC, added where it is used).
DRY = {
    "lesion_uda": ["train.batch_size=2"],
    "mr_synthesis": ["data.patch_size=[16,16,16]", "model.ngf=8", "model.ndf=8", "model.n_layers_d=2",
                     "train.batch_size=2", "train.samples_per_epoch=4"],  # 2 steps per epoch, as the paper's run
    "oct_anogan": ["data.patch_size=[16,16]", "train.batch_size=4", "model.latent_dim=16", "model.dim=4",
                   "model.critic_steps=2", "model.ae_channels=[4,8]", "model.ae_latent_dim=8", "infer.window_batch=64"],
}
DRY_STEPS = {"lesion_uda": 3, "mr_epochs": 1.0, "fanogan_gan": 3, "fanogan_encoder": 2, "autoencoder": 4}

# The decision rules (docs/benchmarks.md, "Paper-scale run", says the same; fixed before the first run).
GAP_MIN = 0.05  # target_supervised - source_only mean target Dice below this: no gap to close, the UDA claim undecided
GAP_TARGET = 0.5  # uda must close at least half of the gap (the paper closed most of it)
ALPHA = 0.05  # two-sided significance level of every paired test
PIXEL_MARGIN = 0.02  # pixel AUC difference that counts (pooled pixels have no valid test: they are correlated)
AUC_PAPER = 0.9
MIN_SEEDS = 2  # lesion_uda and mr_synthesis: fewer seeds with every run done leave the claims undecided
RULES = {
    "lesion_uda.gap_exists": (
        "a gap to close",
        f"mean target Dice (over seeds) of target_supervised - source_only >= {GAP_MIN}"),
    "lesion_uda.uda_closes_half_gap": (
        "uda closes at least half of the source_only -> target_supervised gap",
        (f"gap closed by the seed means >= {GAP_TARGET}: shown; < {GAP_TARGET}: not shown; undecided when there is "
         f"no gap or fewer than {MIN_SEEDS} seeds have all three modes")),
    "lesion_uda.multi_layer_beats_last_layer": (
        "the multi-layer discriminator beats the last-layer one",
        ("gap closed (seed means) of uda > uda_last_layer (needs --last-layer; not run otherwise); undecided as "
         "the row above")),
    **{f"mr_synthesis.{task}.{a}_gt_{b}": (
        f"{task.replace('_', ' -> ').upper()}: {a} > {b}",
        (f"paired differences {a} - {b} over seeds x test phantoms, on PSNR and on edge_corr: both > 0 with paired "
         f"t-test p < {ALPHA}: shown; either < 0 with p < {ALPHA}: contradicted; else not shown; undecided with "
         f"fewer than {MIN_SEEDS} seeds"))
       for task in MR_TASKS for a, b in MR_PAIRS},
    **{f"mr_synthesis.{task}.ordering": (
        f"{task.replace('_', ' -> ').upper()}: dea > gea > cgan (the paper's order)",
        "both pairs above shown: shown; either contradicted: contradicted; else not shown (undecided as they are)")
       for task in MR_TASKS},
    "oct_anogan.image_auc_gt_ae": (
        "f-AnoGAN's image ROC AUC > the autoencoder's",
        (f"DeLong's paired test on the same test scans, on every seed: difference > 0 with p < {ALPHA}: shown; < 0 "
         f"with p < {ALPHA} on any seed: contradicted; else not shown")),
    "oct_anogan.pixel_auc_gt_ae": (
        "f-AnoGAN's pixel AUC > the autoencoder's",
        (f"on every seed f-AnoGAN >= autoencoder + {PIXEL_MARGIN}: shown; on any seed <= autoencoder - "
         f"{PIXEL_MARGIN}: contradicted; else not shown")),
    "oct_anogan.image_auc_ge_paper": (
        f"f-AnoGAN's image ROC AUC reaches the papers' level ({AUC_PAPER})",
        (f"on every seed >= {AUC_PAPER}: shown; else not shown (a perfect normal model scores 0.91 on these "
         "phantoms at 256 px / 64 px patches)")),
}
VERDICTS = ("shown", "not shown", "contradicted", "undecided", "not run")


# ----- the plan -------------------------------------------------------------------------------------------------
def plan_runs(budget_s: float, rates: dict, seeds, oct_seeds, last_layer: bool, only) -> dict:
    """Step counts per run from the time budget: what is left after start-up, data and the per-run overheads is
    shared out by SHARES (water-filling: a pipeline capped at its paper's length gives the rest to the others)."""
    n_runs = {"lesion_uda": (len(LESION_MODES) + last_layer) * len(seeds),
              "mr_synthesis": len(MR_VARIANTS) * len(MR_TASKS) * len(seeds),
              "oct_anogan": len(OCT_METHODS) * len(oct_seeds)}
    n_runs = {p: n for p, n in n_runs.items() if p in only}
    fixed_s = STARTUP_S + sum(DATA_S[p] for p in n_runs)
    train_s = budget_s - fixed_s - sum(n * ASSUMED_OVERHEAD_S[p] for p, n in n_runs.items())
    if train_s <= 0:
        raise SystemExit(f"--budget-minutes {budget_s / 60:g} leaves no training time after the start-up, the data "
                         f"and {sum(n_runs.values())} runs' overheads ({budget_s - train_s:.0f} s): give more minutes")
    fanogan_s_per_cycle = 2.0 / rates["fanogan"] + 1.0 / rates["fanogan_encoder"]  # paper: 2 GAN steps per encoder step
    # seconds of training per run at the paper's length
    paper_s = {"lesion_uda": PAPER_LESION_STEPS / rates["lesion_uda"],
               "mr_synthesis": PAPER_MR_EPOCHS * MR_STEPS_PER_EPOCH / rates["mr_synthesis"],
               "oct_anogan": PAPER_FANOGAN_ENCODER * fanogan_s_per_cycle / FANOGAN_TIME_SHARE}
    alloc, free, open_ = {}, train_s, set(n_runs)
    while open_:
        total_share = sum(SHARES[p] for p in open_)
        capped = {p for p in open_ if free * SHARES[p] / total_share >= paper_s[p] * n_runs[p]}
        if not capped:
            for p in open_:
                alloc[p] = free * SHARES[p] / total_share / n_runs[p]
            break
        for p in capped:
            alloc[p] = paper_s[p]
            free -= paper_s[p] * n_runs[p]
        open_ -= capped
    plan = {}
    if "lesion_uda" in alloc:
        steps = max(1, min(PAPER_LESION_STEPS, int(alloc["lesion_uda"] * rates["lesion_uda"])))
        plan["lesion_uda"] = {"runs": n_runs["lesion_uda"], "steps": steps, "paper_steps": PAPER_LESION_STEPS,
                              "train_s_per_run": steps / rates["lesion_uda"]}
    if "mr_synthesis" in alloc:
        paper_steps = int(PAPER_MR_EPOCHS * MR_STEPS_PER_EPOCH)
        steps = max(1, min(paper_steps, int(alloc["mr_synthesis"] * rates["mr_synthesis"])))
        epochs = max(1.0, math.floor(steps / MR_STEPS_PER_EPOCH))
        plan["mr_synthesis"] = {"runs": n_runs["mr_synthesis"], "epochs": epochs,
                                "steps": int(epochs * MR_STEPS_PER_EPOCH), "paper_epochs": PAPER_MR_EPOCHS,
                                "paper_steps": int(PAPER_MR_EPOCHS * MR_STEPS_PER_EPOCH),
                                "train_s_per_run": epochs * MR_STEPS_PER_EPOCH / rates["mr_synthesis"]}
    if "oct_anogan" in alloc:
        per_pair = alloc["oct_anogan"] * len(OCT_METHODS)  # seconds for one f-AnoGAN and one autoencoder run
        enc = max(1, min(PAPER_FANOGAN_ENCODER, int(per_pair * FANOGAN_TIME_SHARE / fanogan_s_per_cycle)))
        gan = min(PAPER_FANOGAN_GAN, 2 * enc)
        ae = max(1, min(PAPER_FANOGAN_GAN + PAPER_FANOGAN_ENCODER,
                        int(per_pair * (1 - FANOGAN_TIME_SHARE) * rates["autoencoder"])))
        plan["oct_anogan"] = {"runs": n_runs["oct_anogan"], "fanogan_gan_steps": gan, "fanogan_encoder_steps": enc,
                              "autoencoder_steps": ae, "paper_gan_steps": PAPER_FANOGAN_GAN,
                              "paper_encoder_steps": PAPER_FANOGAN_ENCODER,
                              "train_s_per_run": (gan / rates["fanogan"] + enc / rates["fanogan_encoder"]
                                                  + ae / rates["autoencoder"]) / len(OCT_METHODS)}
    for p, entry in plan.items():
        entry["expected_s"] = DATA_S[p] + entry["runs"] * (entry["train_s_per_run"] + ASSUMED_OVERHEAD_S[p])
    _paper_fractions(plan)
    plan["expected_total_s"] = STARTUP_S + sum(e["expected_s"] for p, e in plan.items() if p in PIPELINES)
    return plan


def _paper_fractions(plan: dict) -> None:
    """Each pipeline's planned length as a fraction of its paper's (f-AnoGAN: by encoder steps)."""
    for p, entry in plan.items():
        entry["paper_fraction"] = (entry["fanogan_encoder_steps"] / PAPER_FANOGAN_ENCODER if p == "oct_anogan"
                                   else entry["steps"] / entry["paper_steps"])


def dry_plan(seeds, oct_seeds, last_layer: bool, only) -> dict:
    """The dry run's tiny step counts, in the plan's shape."""
    plan = {}
    if "lesion_uda" in only:
        plan["lesion_uda"] = {"runs": (len(LESION_MODES) + last_layer) * len(seeds), "steps": DRY_STEPS["lesion_uda"],
                              "paper_steps": PAPER_LESION_STEPS}
    if "mr_synthesis" in only:
        plan["mr_synthesis"] = {"runs": len(MR_VARIANTS) * len(MR_TASKS) * len(seeds), "epochs": DRY_STEPS["mr_epochs"],
                                "steps": int(DRY_STEPS["mr_epochs"] * MR_STEPS_PER_EPOCH),
                                "paper_epochs": PAPER_MR_EPOCHS,
                                "paper_steps": int(PAPER_MR_EPOCHS * MR_STEPS_PER_EPOCH)}
    if "oct_anogan" in only:
        plan["oct_anogan"] = {"runs": len(OCT_METHODS) * len(oct_seeds), "fanogan_gan_steps": DRY_STEPS["fanogan_gan"],
                              "fanogan_encoder_steps": DRY_STEPS["fanogan_encoder"],
                              "autoencoder_steps": DRY_STEPS["autoencoder"], "paper_gan_steps": PAPER_FANOGAN_GAN,
                              "paper_encoder_steps": PAPER_FANOGAN_ENCODER}
    _paper_fractions(plan)
    plan["expected_total_s"] = None
    return plan


# ----- the report -----------------------------------------------------------------------------------------------
class Report:
    """The JSON and markdown of the run, rewritten (atomically) after every training run."""

    def __init__(self, out: Path, env: dict, settings: dict, plan: dict):
        from medgen.gpu_check import _slug

        stamp = env["date"].replace("-", "").replace(":", "").replace("T", "-").rstrip("Z")
        device = _slug(env["device_name"]) if env["device"] == "cuda" else "cpu-" + _slug(env["cpu"])
        stem = f"paper_scale_{stamp}_{device}" + ("_dry-run" if settings["dry_run"] else "")
        self.json_path, self.md_path = out / f"{stem}.json", out / f"{stem}.md"
        taken = [str(p) for p in (self.json_path, self.md_path) if p.exists()]
        if taken:
            from medgen.errors import RunDirError

            raise RunDirError(f"paper_scale will not overwrite {', '.join(taken)}")
        out.mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()
        self.data = {"kind": "medgen paper-scale run", "dry_run": settings["dry_run"], "complete": False,
                     "environment": env, "settings": settings, "plan": plan,
                     "experiments": {p: {"status": "not run"} for p in PIPELINES}, "decisions": [], "wall_s": 0.0}

    def write(self) -> None:
        # _plain: JSON-safe values (NaN as null, numpy numbers as Python ones), as the evaluation writes them
        from medgen.engine.evaluation import _plain
        from medgen.files import atomic_write, write_json_atomic

        self.data["wall_s"] = time.perf_counter() - self.t0
        self.data["decisions"] = decide(self.data["experiments"])
        write_json_atomic(self.json_path, _plain(self.data))
        atomic_write(self.md_path, markdown(self.data))


def _f(v, fmt=".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _log_every(pipeline: str, dry: bool) -> int:
    return 1 if dry else LOG_EVERY[pipeline]


def logged_rate(run_dir, log_every: int, first: int = 0, last: int | None = None) -> float | None:
    """The median steps/s the trainer logged in a run's metrics.csv between steps `first` and `last`, leaving out
    the first logged interval (cuDNN autotuning, allocations) and a partial last one: the rate to give --rate for
    the next run (the run's wall time also holds its set-up, inference and scoring). None when nothing is left."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return None
    rates = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            step = int(float(r["step"]))
            if (not r.get("steps_per_s") or step % log_every or step <= first + log_every
                    or (last is not None and step > last)):
                continue
            rates.append(float(r["steps_per_s"]))
    return float(np.median(rates)) if rates else None


# ----- lesion_uda -----------------------------------------------------------------------------------------------
def run_lesion(dataset: Path, work: Path, plan: dict, seeds, modes, dry: bool, report: Report, deadline: float,
               keep_runs: bool) -> None:
    from medgen.engine.commands import build_config, evaluate, infer, train_config
    from medgen.pipelines.lesion_uda import SMALL_DEEPMEDIC

    dry_over = [*SMALL_DEEPMEDIC, *DRY["lesion_uda"]] if dry else []
    exp = report.data["experiments"]["lesion_uda"] = {"status": "running", "runs": []}
    for seed in seeds:
        for mode in modes:
            if time.perf_counter() > deadline:
                exp["runs"].append({"mode": mode, "seed": seed, "skipped": "past the time limit"})
                continue
            name = f"lesion_{mode}_seed{seed}"
            over = [f"data.dataset={dataset}", f"output.root={work / 'runs'}", f"output.name={name}",
                    "output.overwrite=true", f"model.mode={mode}", f"train.iterations={plan['steps']}",
                    "train.val_every=1000000000", f"train.log_every={_log_every('lesion_uda', dry)}",
                    "train.progress=off", f"train.seed={seed}", *dry_over]
            cls, cfg = build_config("lesion_uda", REPO / "configs" / "lesion_uda.yaml", over)
            exp["target_domain"] = cfg.data.target_domain
            t0 = time.perf_counter()
            summary = train_config(cls, cfg)
            train_s = time.perf_counter() - t0
            run_dir = Path(summary["run_dir"])
            infer(run_dir, split="test", overwrite=True, device=cfg.train.device, progress=False)
            ev = evaluate(run_dir / "predictions", overwrite=True, baselines=[],
                          where={cfg.data.domain_key: cfg.data.target_domain})
            rows = _per_case(Path(ev["report"]).parent / "per_case.csv", ("dice", "hd95", "lesion_f1"))
            exp["runs"].append({"mode": mode, "seed": seed, "steps": summary.get("steps", plan["steps"]),
                                "train_s": train_s, "wall_s": time.perf_counter() - t0,
                                "steps_per_s": plan["steps"] / train_s,
                                "logged_steps_per_s": logged_rate(run_dir, cfg.train.log_every),
                                "mean_dice": float(np.mean([r["dice"] for r in rows])), "cases": rows})
            print(f"[lesion_uda] seed {seed} {mode}: {plan['steps']} steps in {train_s:.1f} s "
                  f"({plan['steps'] / train_s:.2f} steps/s), mean target Dice {exp['runs'][-1]['mean_dice']:.3f}",
                  flush=True)
            if not keep_runs:
                shutil.rmtree(run_dir, ignore_errors=True)
            exp.update(lesion_summary(exp["runs"]))
            report.write()
    exp["status"] = "done" if all("skipped" not in r for r in exp["runs"]) else "partial"
    report.write()


def _per_case(path: Path, keys) -> list[dict]:
    with open(path, newline="") as f:
        return [{"id": r["id"], **{k: float(r[k]) if r.get(k) not in (None, "") else None for k in keys}}
                for r in csv.DictReader(f)]


def lesion_summary(runs: list[dict]) -> dict:
    """Mean target Dice per mode (over the seeds that have every mode done) and the gap closed, also per seed."""
    from medgen.metrics.domain_adaptation import gap_closed

    done = [r for r in runs if "mean_dice" in r]
    by_seed: dict = {}
    for r in done:
        by_seed.setdefault(r["seed"], {})[r["mode"]] = r["mean_dice"]
    need = ("source_only", "uda", "target_supervised")
    complete = {s: d for s, d in by_seed.items() if all(m in d for m in need)}
    out = {"mean_dice_per_seed": by_seed, "seeds_complete": sorted(complete)}
    if not complete:
        return out
    modes = sorted({m for d in complete.values() for m in d})
    mean = {m: float(np.mean([d[m] for d in complete.values() if m in d])) for m in modes}
    out["mean_dice"] = mean
    out["gap"] = mean["target_supervised"] - mean["source_only"]
    out["gap_closed_uda"] = gap_closed(mean["source_only"], mean["uda"], mean["target_supervised"])
    out["gap_closed_uda_per_seed"] = {s: gap_closed(d["source_only"], d["uda"], d["target_supervised"])
                                      for s, d in complete.items()}
    if "uda_last_layer" in mean:
        out["gap_closed_uda_last_layer"] = gap_closed(mean["source_only"], mean["uda_last_layer"],
                                                      mean["target_supervised"])
    return out


# ----- mr_synthesis ---------------------------------------------------------------------------------------------
def run_mr(dataset: Path, work: Path, plan: dict, seeds, dry: bool, report: Report, deadline: float,
           keep_runs: bool) -> None:
    bench = _bench("mr_synthesis")
    exp = report.data["experiments"]["mr_synthesis"] = {"status": "running", "tasks": {t: {} for t in MR_TASKS}}
    skipped = False
    for seed in seeds:
        for task, target in MR_TASKS.items():
            if time.perf_counter() > deadline:
                exp["tasks"][task][str(seed)] = {"skipped": "past the time limit"}
                skipped = True
                continue
            runs = work / "runs" / f"mr_{task}_seed{seed}"
            t0 = time.perf_counter()
            extra = [f"train.log_every={_log_every('mr_synthesis', dry)}", *(DRY["mr_synthesis"] if dry else [])]
            res = bench.run_task(f"{task}_seed{seed}", dataset, target, plan["epochs"], runs, quick=False,
                                 extra=extra, seed=seed, paper=True)
            for variant in MR_VARIANTS:  # run_task names each run <label>_<variant>
                res["timing"][variant]["logged_steps_per_s"] = logged_rate(
                    runs / "mr_synthesis" / f"{task}_seed{seed}_{variant}", _log_every("mr_synthesis", dry))
            exp["tasks"][task][str(seed)] = {
                "wall_s": time.perf_counter() - t0, "timing": res["timing"],
                "methods": {n: {"mean": m["mean"], "cases": m["cases"]} for n, m in res["methods"].items()}}
            if not keep_runs:
                shutil.rmtree(runs, ignore_errors=True)
            exp["paired"] = mr_paired(exp["tasks"])
            report.write()
    exp["status"] = "partial" if skipped else "done"
    report.write()


def mr_paired(tasks: dict) -> dict:
    """Per task and variant pair: differences paired by (seed, test phantom), their mean and paired t-test p,
    for PSNR, edge_corr and edge_l1 (lower is better), with the seed means of each variant."""
    from scipy.stats import ttest_rel

    out = {}
    for task, by_seed in tasks.items():
        done = {s: r["methods"] for s, r in by_seed.items() if "methods" in r}
        if not done:
            continue
        entry = {"seeds": sorted(int(s) for s in done), "means": {}, "pairs": {}}
        for n in next(iter(done.values())):
            entry["means"][n] = {k: float(np.mean([m[n]["mean"][k] for m in done.values()]))
                                 for k in ("psnr", "edge_corr", "edge_l1", "ssim")}
        for a, b in MR_PAIRS:
            pair = {}
            for k in ("psnr", "edge_corr", "edge_l1"):
                x, y = [], []
                for m in done.values():
                    cases_b = {c["id"]: c[k] for c in m[b]["cases"]}
                    for c in m[a]["cases"]:
                        x.append(c[k])
                        y.append(cases_b[c["id"]])
                diff = np.subtract(x, y)
                p = float(ttest_rel(x, y).pvalue) if len(x) > 1 and np.any(diff != diff[0]) else float("nan")
                pair[k] = {"mean_difference": float(diff.mean()), "p": p, "n_pairs": len(x)}
            entry["pairs"][f"{a}-{b}"] = pair
        out[task] = entry
    return out


# ----- oct_anogan -----------------------------------------------------------------------------------------------
def oct_settings(plan: dict, dry: bool) -> dict:
    """Per method the overrides of benchmarks/oct_anogan.py's run_comparison: the paper's config (dim 64,
    latent 128, 64 x 64 patches, batch 64, 5 critic steps) with the planned step counts."""
    gan, enc, ae = plan["fanogan_gan_steps"], plan["fanogan_encoder_steps"], plan["autoencoder_steps"]
    common = [f"train.log_every={_log_every('oct_anogan', dry)}", "train.progress=off",
              *(DRY["oct_anogan"] if dry else [])]
    return {"common": common,
            # validations start after the first encoder step (medgen skips them in the GAN phase); 4 pick best.pt
            "fanogan": [f"train.iterations={gan + enc}", f"model.encoder_iterations={enc}",
                        f"train.val_every={max(1, enc // 4)}"],
            "autoencoder": [f"train.iterations={ae}", f"train.val_every={max(1, ae // 4)}"]}


def run_oct(dataset: Path, work: Path, plan: dict, oct_seeds, dry: bool, report: Report, deadline: float,
            keep_runs: bool) -> None:
    from medgen.metrics import compare_roc_auc
    from medgen.metrics.anomaly_evaluation import read_values

    bench = _bench("oct_anogan")
    exp = report.data["experiments"]["oct_anogan"] = {"status": "running", "seeds": {}}
    settings = oct_settings(plan, dry)
    exp["settings"] = settings
    labels = {c["id"]: int(c["label"]) for c in json.loads((dataset / "dataset.json").read_text())["test"]}
    skipped = False
    for seed in oct_seeds:
        if time.perf_counter() > deadline:
            exp["seeds"][str(seed)] = {"skipped": "past the time limit"}
            skipped = True
            continue
        runs = work / "runs" / f"oct_seed{seed}"
        t0 = time.perf_counter()
        res = bench.run_comparison(dataset, runs, seed=seed, methods=OCT_METHODS, settings=settings)
        entry: dict = {"wall_s": time.perf_counter() - t0, "methods": {}}
        scores = {}
        for m in OCT_METHODS:
            r = res["results"][m]
            keep = ("roc_auc", "roc_auc_ci_low", "roc_auc_ci_high", "pr_auc", "pixel_auc", "sensitivity",
                    "specificity", "n_normal", "n_abnormal")
            entry["methods"][m] = {**{k: r["metrics"].get(k) for k in keep}, "train_s": r["train_s"],
                                   "infer_s": r["infer_s"]}
            gan, every = plan["fanogan_gan_steps"], _log_every("oct_anogan", dry)
            entry["methods"][m]["logged_steps_per_s"] = (
                {"gan": logged_rate(r["run_dir"], every, last=gan),
                 "encoder": logged_rate(r["run_dir"], every, first=gan)} if m == "fanogan"
                else logged_rate(r["run_dir"], every))
            scores[m] = {v["id"]: float(v["score"]) for v in read_values(Path(r["run_dir"]) / "predictions", "test")}
        ids = sorted(set(scores["fanogan"]) & set(scores["autoencoder"]) & set(labels))
        entry["delong_fanogan_minus_ae"] = compare_roc_auc([scores["fanogan"][i] for i in ids],
                                                           [scores["autoencoder"][i] for i in ids],
                                                           [labels[i] for i in ids])
        entry["n_test"] = len(ids)
        exp["seeds"][str(seed)] = entry
        print(f"[oct_anogan] seed {seed}: image AUC f-AnoGAN {_f(entry['methods']['fanogan']['roc_auc'])} vs "
              f"autoencoder {_f(entry['methods']['autoencoder']['roc_auc'])} (DeLong p "
              f"{_f(entry['delong_fanogan_minus_ae']['p'])}), pixel AUC "
              f"{_f(entry['methods']['fanogan']['pixel_auc'])} vs {_f(entry['methods']['autoencoder']['pixel_auc'])}",
              flush=True)
        if not keep_runs:
            shutil.rmtree(runs, ignore_errors=True)
        report.write()
    exp["status"] = "partial" if skipped else "done"
    report.write()


# ----- decisions ------------------------------------------------------------------------------------------------
def _row(rid: str, verdict: str, measured: str) -> dict:
    claim, rule = RULES[rid]
    assert verdict in VERDICTS, verdict
    return {"id": rid, "claim": claim, "rule": rule, "measured": measured, "verdict": verdict}


def decide(experiments: dict) -> list[dict]:
    """Every decision row of RULES, in order, from what has been measured so far ("not run" where nothing is)."""
    rows = {}
    les = experiments.get("lesion_uda", {})
    if les.get("mean_dice"):
        md, gap, frac = les["mean_dice"], les["gap"], les["gap_closed_uda"]
        seeds = ", ".join(f"seed {s}: {_f(v)}" for s, v in les["gap_closed_uda_per_seed"].items())
        means = ", ".join(f"{m} {_f(v)}" for m, v in md.items())
        rows["lesion_uda.gap_exists"] = _row("lesion_uda.gap_exists", "shown" if gap >= GAP_MIN else "not shown",
                                             f"{means} (seeds {les['seeds_complete']}); gap {_f(gap)}")
        few = len(les["seeds_complete"]) < MIN_SEEDS
        if few or gap < GAP_MIN or not math.isfinite(frac):
            v = "undecided"
        else:
            v = "shown" if frac >= GAP_TARGET else "not shown"
        rows["lesion_uda.uda_closes_half_gap"] = _row("lesion_uda.uda_closes_half_gap", v,
                                                      f"gap closed {_f(frac)} ({seeds})")
        if "gap_closed_uda_last_layer" in les:
            last = les["gap_closed_uda_last_layer"]
            if few or gap < GAP_MIN or not (math.isfinite(frac) and math.isfinite(last)):
                v = "undecided"
            else:
                v = "shown" if frac > last else "not shown"
            rows["lesion_uda.multi_layer_beats_last_layer"] = _row(
                "lesion_uda.multi_layer_beats_last_layer", v, f"uda {_f(frac)} vs uda_last_layer {_f(last)}")
    for task, entry in (experiments.get("mr_synthesis", {}).get("paired") or {}).items():
        states = []
        for a, b in MR_PAIRS:
            pair = entry["pairs"][f"{a}-{b}"]
            d = [pair[k] for k in ("psnr", "edge_corr")]
            sig = [x["p"] is not None and math.isfinite(x["p"]) and x["p"] < ALPHA for x in d]
            if len(entry["seeds"]) < MIN_SEEDS:
                v = "undecided"
            elif all(x["mean_difference"] > 0 and s for x, s in zip(d, sig)):
                v = "shown"
            elif any(x["mean_difference"] < 0 and s for x, s in zip(d, sig)):
                v = "contradicted"
            else:
                v = "not shown"
            states.append(v)
            measured = "; ".join(f"{k} {pair[k]['mean_difference']:+.4f} (p {_f(pair[k]['p'])})"
                                 for k in ("psnr", "edge_corr", "edge_l1"))
            rid = f"mr_synthesis.{task}.{a}_gt_{b}"
            rows[rid] = _row(rid, v, f"{measured}; {pair['psnr']['n_pairs']} pairs, seeds {entry['seeds']}")
        v = ("shown" if all(s == "shown" for s in states) else "contradicted" if "contradicted" in states
             else "undecided" if "undecided" in states else "not shown")
        psnr = " / ".join(f"{n} {_f(entry['means'][n]['psnr'], '.2f')}" for n in MR_VARIANTS if n in entry["means"])
        rows[f"mr_synthesis.{task}.ordering"] = _row(f"mr_synthesis.{task}.ordering", v, f"PSNR means {psnr}")
    seeds = {s: e for s, e in (experiments.get("oct_anogan", {}).get("seeds") or {}).items() if "methods" in e}
    if seeds:
        img, pix, paper, m_img, m_pix, m_paper = [], [], [], [], [], []
        for s, e in seeds.items():
            dl, fa, ae = e["delong_fanogan_minus_ae"], e["methods"]["fanogan"], e["methods"]["autoencoder"]
            sig = math.isfinite(dl["p"]) and dl["p"] < ALPHA
            img.append("shown" if dl["difference"] > 0 and sig else "contradicted" if dl["difference"] < 0 and sig
                       else "not shown")
            m_img.append(f"seed {s}: {_f(dl['auc_a'])} vs {_f(dl['auc_b'])}, difference {dl['difference']:+.3f} "
                         f"(95 % CI {dl['low']:+.3f} to {dl['high']:+.3f}, p {_f(dl['p'])}, {e['n_test']} scans)")
            fp, ap = fa.get("pixel_auc"), ae.get("pixel_auc")
            if fp is None or ap is None:
                pix.append("undecided")
            else:
                pix.append("shown" if fp >= ap + PIXEL_MARGIN else "contradicted" if fp <= ap - PIXEL_MARGIN
                           else "not shown")
            m_pix.append(f"seed {s}: {_f(fp)} vs {_f(ap)}")
            paper.append("shown" if (fa.get("roc_auc") or 0.0) >= AUC_PAPER else "not shown")
            m_paper.append(f"seed {s}: {_f(fa.get('roc_auc'))} (95 % CI {_f(fa.get('roc_auc_ci_low'))}-"
                           f"{_f(fa.get('roc_auc_ci_high'))})")

        def every(states):
            return ("contradicted" if "contradicted" in states else "shown" if all(x == "shown" for x in states)
                    else "undecided" if all(x == "undecided" for x in states) else "not shown")

        rows["oct_anogan.image_auc_gt_ae"] = _row("oct_anogan.image_auc_gt_ae", every(img), "; ".join(m_img))
        rows["oct_anogan.pixel_auc_gt_ae"] = _row("oct_anogan.pixel_auc_gt_ae", every(pix), "; ".join(m_pix))
        rows["oct_anogan.image_auc_ge_paper"] = _row("oct_anogan.image_auc_ge_paper", every(paper), "; ".join(m_paper))
    return [rows.get(rid) or _row(rid, "not run", "-") for rid in RULES]


# ----- markdown ---------------------------------------------------------------------------------------------------
def _table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    cols = list(rows[0])
    return (["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            + ["| " + " | ".join(str(r.get(c, "")).replace("|", "/") for c in cols) + " |" for r in rows])


def markdown(data: dict) -> str:
    env, plan, ex = data["environment"], data["plan"], data["experiments"]
    dry = " (DRY RUN: tiny sizes on the CPU, the numbers mean nothing)" if data["dry_run"] else ""
    device = (f"- device: {env.get('device_name')}; torch {env.get('torch')}, CUDA {env.get('cuda')}; "
              f"commit {env.get('commit')}; {env.get('date')}")
    timing = (f"- budget {data['settings']['budget_minutes']:g} min, expected "
              f"{_f(plan.get('expected_total_s'), '.0f')} s, wall {data['wall_s']:.0f} s; complete: {data['complete']}")
    status = [f"- {p}: {e['status']}" + (f" ({' '.join(str(e['error']).split())})" if e.get("error") else "")
              for p, e in ex.items()]
    lines = [f"# Paper-scale run{dry}", "", device, timing, '- rules: docs/benchmarks.md, "Paper-scale run"', *status,
             "", "## Decisions", ""]
    lines += _table([{k: r[k] for k in ("id", "claim", "measured", "verdict")} for r in data["decisions"]])
    lines += ["", "## Plan (steps per run) and rates", "",
              ("Logged: the median steps/s of the trainer's metrics.csv without the first interval (what --rate "
               "takes); set-up included: steps / the training call's wall time."), ""]
    rows = []
    rates = data["settings"]["rates"]
    les = ex.get("lesion_uda", {})

    def median(values):
        values = [v for v in values if v is not None]
        return _f(float(np.median(values)) if values else None, ".2f")

    if "lesion_uda" in plan:
        uda = [r for r in les.get("runs", []) if r.get("mode") == "uda" and "steps_per_s" in r]
        rows.append({"pipeline": "lesion_uda", "runs": plan["lesion_uda"]["runs"],
                     "steps per run": plan["lesion_uda"]["steps"], "paper": PAPER_LESION_STEPS,
                     "assumed steps/s": rates["lesion_uda"],
                     "logged steps/s": median(r["logged_steps_per_s"] for r in uda) + " (uda)",
                     "set-up included": median(r["steps_per_s"] for r in uda)})
    if "mr_synthesis" in plan:
        timing = [v for t in ex.get("mr_synthesis", {}).get("tasks", {}).values() for s in t.values()
                  for v in s.get("timing", {}).values() if isinstance(v, dict) and "steps_per_s" in v]
        rows.append({"pipeline": "mr_synthesis", "runs": plan["mr_synthesis"]["runs"],
                     "steps per run": f"{plan['mr_synthesis']['steps']} ({plan['mr_synthesis']['epochs']:g} epochs)",
                     "paper": f"{plan['mr_synthesis']['paper_steps']} (150 epochs)",
                     "assumed steps/s": rates["mr_synthesis"],
                     "logged steps/s": median(v.get("logged_steps_per_s") for v in timing),
                     "set-up included": median(v["steps_per_s"] for v in timing)})
    if "oct_anogan" in plan:
        o = plan["oct_anogan"]
        runs = [e["methods"] for e in (ex.get("oct_anogan", {}).get("seeds") or {}).values() if "methods" in e]
        fa = [m["fanogan"].get("logged_steps_per_s") or {} for m in runs]
        rows.append({"pipeline": "oct_anogan", "runs": o["runs"],
                     "steps per run": f"f-AnoGAN {o['fanogan_gan_steps']} GAN + {o['fanogan_encoder_steps']} encoder; "
                                      f"autoencoder {o['autoencoder_steps']}",
                     "paper": f"{PAPER_FANOGAN_GAN} + {PAPER_FANOGAN_ENCODER}",
                     "assumed steps/s": f"{rates['fanogan']} / {rates['fanogan_encoder']} / {rates['autoencoder']}",
                     "logged steps/s": f"{median(f.get('gan') for f in fa)} / {median(f.get('encoder') for f in fa)} / "
                                       f"{median(m['autoencoder'].get('logged_steps_per_s') for m in runs)}",
                     "set-up included": "-"})
    for r, p in zip(rows, [p for p in PIPELINES if p in plan]):
        r["share of the paper's length"] = _f(plan[p].get("paper_fraction"), ".0%")
    lines += _table(rows)
    if les.get("runs"):
        lines += ["", "## lesion_uda: mean target-domain (B) test Dice", ""]
        lines += _table([{"mode": r["mode"], "seed": r["seed"], "steps": r.get("steps", "-"),
                          "train_s": _f(r.get("train_s"), ".1f"), "mean Dice": _f(r.get("mean_dice")),
                          "note": r.get("skipped", "")} for r in les["runs"]])
        if les.get("mean_dice"):
            means = ", ".join(f"{m} {_f(v)}" for m, v in les["mean_dice"].items())
            lines += ["", f"Seed means: {means}; gap closed by uda {_f(les['gap_closed_uda'])}"]
    mr = ex.get("mr_synthesis", {})
    for task, entry in (mr.get("paired") or {}).items():
        lines += ["", f"## mr_synthesis {task}: test means over seeds {entry['seeds']}", ""]
        lines += _table([{"method": n, **{k: _f(v, ".4f") for k, v in m.items()}} for n, m in entry["means"].items()])
        lines += [""] + _table([{"pair": p, **{k: f"{d['mean_difference']:+.4f} (p {_f(d['p'])})"
                                               for k, d in v.items()}}
                                for p, v in entry["pairs"].items()])
    oc = ex.get("oct_anogan", {})
    for s, e in (oc.get("seeds") or {}).items():
        if "methods" not in e:
            continue
        lines += ["", f"## oct_anogan seed {s} ({e['n_test']} test scans)", ""]
        def cell(v):
            if isinstance(v, dict):  # f-AnoGAN's logged rates per phase
                return " / ".join(f"{k} {_f(x, '.2f')}" for k, x in v.items())
            return _f(v) if isinstance(v, float) else v

        lines += _table([{"method": m, **{k: cell(v) for k, v in r.items()}} for m, r in e["methods"].items()])
    return "\n".join(lines) + "\n"


# ----- main -----------------------------------------------------------------------------------------------------
def _bench(name: str):
    """benchmarks/<name>.py as a module (benchmarks/ is not a package), reused rather than copied."""
    key = f"medgen_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, REPO / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def _rates(pairs) -> dict:
    rates = dict(ASSUMED_RATES)
    for item in pairs or ():
        key, _, value = item.partition("=")
        if key not in rates:
            raise SystemExit(f"--rate {item}: unknown name {key!r}; known: {', '.join(rates)}")
        try:
            rates[key] = float(value)
        except ValueError:
            raise SystemExit(f"--rate {item}: {value!r} is not a number of steps per second") from None
        if rates[key] <= 0:
            raise SystemExit(f"--rate {item}: must be > 0")
    return rates


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="folder of the JSON and markdown (default benchmarks/results/"
                                                "paper_scale; with --dry-run a new temporary folder)")
    ap.add_argument("--work", default=None, help="phantoms and runs (default: a temporary folder, removed at the end)")
    ap.add_argument("--budget-minutes", type=float, default=8.0, help="the whole run's time on the GPU (default 8)")
    ap.add_argument("--hard-limit-minutes", type=float, default=None,
                    help="start no training run after this many minutes (default: the budget + 1; none in a dry "
                         "run); runs not started are recorded as skipped")
    ap.add_argument("--rate", action="append", metavar="NAME=STEPS_PER_S",
                    help=f"replace an assumed rate ({', '.join(f'{k}={v:g}' for k, v in ASSUMED_RATES.items())})")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds, lesion_uda and mr_synthesis")
    ap.add_argument("--oct-seeds", type=int, nargs="+", default=[0], help="training seeds, oct_anogan")
    ap.add_argument("--last-layer", action="store_true", help="also train lesion_uda's uda_last_layer mode")
    ap.add_argument("--only", nargs="+", choices=PIPELINES, default=list(PIPELINES))
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes and a few steps on the CPU, same code path")
    ap.add_argument("--allow-cpu", action="store_true", help="run the full sizes without CUDA (hours)")
    ap.add_argument("--keep-runs", action="store_true", help="keep every run's folder (checkpoints: GBs)")
    args = ap.parse_args(argv)
    if len(set(args.seeds)) < 2 and not args.dry_run:
        ap.error("--seeds: the decision rules need two or more distinct seeds")

    import torch

    if not torch.cuda.is_available() and not (args.dry_run or args.allow_cpu):
        print("paper_scale: no CUDA device. This run is sized for one H100 / H200; use --dry-run to check the code "
              "path on a CPU, or --allow-cpu to run the full sizes here (hours).", file=sys.stderr)
        return 2
    threads = torch.get_num_threads()
    if args.dry_run:
        torch.set_num_threads(1)  # tiny networks on a shared CPU: two threads waiting on each other cost 10x
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args) -> int:
    """The run main() has checked the device for: plan, report, phantoms, the experiments, the verdicts."""
    import torch

    from medgen.data.phantoms import write_phantom_dataset
    from medgen.gpu_check import environment

    dry = args.dry_run
    rates = _rates(args.rate)
    only = [p for p in PIPELINES if p in args.only]
    modes = LESION_MODES + (("uda_last_layer",) if args.last_layer else ())
    plan = (dry_plan(args.seeds, args.oct_seeds, args.last_layer, only) if dry else
            plan_runs(args.budget_minutes * 60.0, rates, args.seeds, args.oct_seeds, args.last_layer, only))
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="medgen_paper_scale_dry_"))
                                           if dry else REPO / "benchmarks" / "results" / "paper_scale")
    env = environment(REPO)
    settings = {"dry_run": dry, "budget_minutes": args.budget_minutes, "rates": rates,
                "overhead_s": ASSUMED_OVERHEAD_S, "startup_s": STARTUP_S, "data_s": DATA_S, "shares": SHARES,
                "seeds": args.seeds, "oct_seeds": args.oct_seeds, "lesion_modes": list(modes), "only": only,
                "data": DATA["dry" if dry else "paper"], "dry_overrides": DRY if dry else None,
                "rules": {k: {"claim": c, "rule": r} for k, (c, r) in RULES.items()}}
    report = Report(out, env, settings, plan)
    print(f"paper_scale on {env['device_name']} ({'DRY RUN' if dry else 'paper settings'}); writing {report.json_path}")
    for p in only:
        print(f"  {p}: " + ", ".join(f"{k} {_f(v, '.0f') if isinstance(v, float) else v}" for k, v in plan[p].items()))
    if plan["expected_total_s"] is not None:
        print(f"expected time: {plan['expected_total_s'] / 60:.1f} min (budget {args.budget_minutes:g} min)",
              flush=True)
    report.write()
    limit = args.hard_limit_minutes
    if limit is None and not dry:
        limit = args.budget_minutes + 1.0
    deadline = time.perf_counter() + (math.inf if limit is None else limit * 60.0)
    sizes = DATA["dry" if dry else "paper"]
    with tempfile.TemporaryDirectory(prefix="medgen_paper_scale_") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        t0 = time.perf_counter()
        data = {}
        if "lesion_uda" in only:
            s = sizes["lesion"]
            data["lesion_uda"] = write_phantom_dataset(
                "lesion_domains", work / "data" / "lesion_domains", n_cases=s["n_cases"], seed=0, shape=s["shape"],
                spacing=s["spacing"], lesions=s["lesions"], overwrite=True).parent
        if "mr_synthesis" in only:
            s = sizes["head"]
            data["mr_synthesis"] = write_phantom_dataset("head", work / "data" / "head", n_cases=s["n_cases"], seed=0,
                                                         shape=s["shape"], overwrite=True).parent
        if "oct_anogan" in only:
            s = sizes["oct"]
            data["oct_anogan"] = write_phantom_dataset("oct", work / "data" / "oct", n_cases=s["n_cases"], seed=0,
                                                       shape=s["shape"], overwrite=True).parent
        report.data["data_written_s"] = time.perf_counter() - t0
        print(f"phantoms written in {report.data['data_written_s']:.0f} s", flush=True)
        runners = {
            "lesion_uda": lambda: run_lesion(data["lesion_uda"], work, plan["lesion_uda"], args.seeds, modes, dry,
                                             report, deadline, args.keep_runs),
            "mr_synthesis": lambda: run_mr(data["mr_synthesis"], work, plan["mr_synthesis"], args.seeds, dry, report,
                                           deadline, args.keep_runs),
            "oct_anogan": lambda: run_oct(data["oct_anogan"], work, plan["oct_anogan"], args.oct_seeds, dry, report,
                                          deadline, args.keep_runs)}
        for p in (p for p in RUN_ORDER if p in only):
            try:
                runners[p]()
            except Exception as exc:  # noqa: BLE001 - one pipeline's failure must not cost the others their run
                exp = report.data["experiments"][p]
                exp.update(status="error", error=f"{type(exc).__name__}: {exc}",
                           traceback=traceback.format_exc()[-4000:])
                print(f"[{p}] FAILED, going on with the next pipeline: {exp['error']}", file=sys.stderr, flush=True)
                report.write()
    report.data["complete"] = all(report.data["experiments"][p]["status"] == "done" for p in only)
    if torch.cuda.is_available():
        report.data["max_cuda_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    report.write()
    verdicts = [{k: r[k] for k in ("id", "verdict", "measured")} for r in report.data["decisions"]]
    print("\n" + "\n".join(_table(verdicts)))
    print(f"\ntotal {report.data['wall_s']:.0f} s; wrote {report.json_path} and {report.md_path}")
    failed = [p for p in only if report.data["experiments"][p]["status"] == "error"]
    if failed:
        print(f"paper_scale: {', '.join(failed)} failed (the error is in the JSON)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
