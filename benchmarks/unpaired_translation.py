"""Benchmark unpaired_translation (CycleGAN) on the head phantoms, where the truth is known: trained on unpaired
halves (each training subject's source OR its target image), scored on held-out pairs.

    .venv/bin/python benchmarks/unpaired_translation.py [--part ct|lesions|all] [--seeds 3 11 23] [--steps 640]
                                                        [--out benchmarks/results/unpaired_translation]

- ct: T1 MR -> CT in HU, per phantom seed: CycleGAN against histogram matching and the floors (MAE, bone Dice,
  PSNR, histogram distance), means over the held-out pairs.
- lesions: the hallucination check (medgen.metrics.hallucination) on T2 -> FLAIR, where the target shows the
  lesions: once with a target domain whose subjects have lesions, once with a deliberately lesion-free target
  domain (other phantom subjects drawn with lesions=0), the failure the check exists to catch (Cohen et al.,
  MICCAI 2018). Lesions kept / lost / invented summed over the test cases.
- paired: the upper bound, the paired mr_to_ct model (Nie et al.) trained on the same training subjects with
  their pairs (its demo's narrow networks, --paired-steps per auto-context stage), on the same held-out pairs.

CPU budget (2 shared cores, one torch thread): about 1 min per training at the defaults (48^3 phantoms, 2D
networks ngf 16 / ndf 8 / 3 residual blocks, 640 steps, no identity loss, lr 2e-4 constant for 2 epochs then
decayed). Writes results_<part>.json to --out. Not run: the real-data distribution scores
(docs/pipelines/unpaired_translation.md, "Limits").
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


def train_and_score(dataset: Path, root: Path, name: str, steps: int, overrides=()) -> dict:
    """Train on `dataset`, then score the model, histogram matching and the floors on its test cases."""
    from medgen.baselines.registry import fit_baselines
    from medgen.engine.commands import build_config, load_trained, train_config

    cls, cfg = build_config("unpaired_translation", None, [f"data.dataset={dataset}", f"output.root={root}",
                                                          f"output.name={name}", "train.epochs=0",
                                                          f"train.iterations={steps}", *SETTINGS, *overrides])
    train_config(cls, cfg)
    _, _, stages, _ = load_trained(root / "unpaired_translation" / name, device="cpu")
    p = stages[0]
    hm = fit_baselines(p)["unpaired_histogram_matching"]
    rows: dict[str, list[dict]] = {}
    for case in p.data.load("test"):
        values = {"cyclegan": p.output_values(case, p.predict_case(case)),
                  "histogram_matching": hm.values(case), **p.floors(case)}
        for method, v in values.items():
            rows.setdefault(method, []).append(p.evaluate_case(v, case))
    return rows


def ct_part(seeds, steps: int, tmp: Path) -> dict:
    from medgen.data.phantoms import write_phantom_dataset

    out = {}
    for seed in seeds:
        head = write_phantom_dataset("head", tmp / f"ct{seed}", n_cases=12, seed=seed, shape=(48, 48, 48)).parent
        rows = train_and_score(head, tmp / "runs", f"ct{seed}", steps)
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


def lesion_part(seed: int, steps: int, tmp: Path) -> dict:
    """T2 -> FLAIR; domain A: the T2 of lesioned subjects; domain B: the FLAIR of other subjects, with lesions
    (control) or without (the failure case); test: held-out lesioned pairs."""
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
                               ["data.key_a=t2", "data.key_b=flair", "data.preset_a=mr", "data.preset_b=mr"])
        out[target] = {m: {k: float(np.nansum([r[k] for r in rs])) for k in LESION_METRICS} for m, rs in rows.items()}
        print(f"\nT2 -> FLAIR, {target.replace('_', ' ')} (lesions summed over {len(rows['cyclegan'])} test cases)")
        print("| method | kept | lost | invented |\n|---|---|---|---|")
        for m, v in out[target].items():
            print(f"| {m} | " + " | ".join(f"{v[k]:g}" for k in LESION_METRICS) + " |")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("ct", "paired", "lesions", "all"), default="all")
    ap.add_argument("--paired-steps", type=int, default=300, help="mr_to_ct steps per auto-context stage")
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 11, 23])
    ap.add_argument("--steps", type=int, default=640)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "unpaired_translation")
    args = ap.parse_args(argv)
    results = {"steps": args.steps, "settings": SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("ct", "all"):
            results["ct"] = ct_part(args.seeds, args.steps, Path(tmp))
        if args.part in ("paired", "all"):
            results["paired"] = paired_part(args.seeds, args.paired_steps, Path(tmp))
        if args.part in ("lesions", "all"):
            results["lesions"] = lesion_part(args.seeds[0], args.steps, Path(tmp))
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"results_{args.part}.json"
    (args.out / name).write_text(json.dumps(results, indent=1))
    print(f"\nwritten: {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
