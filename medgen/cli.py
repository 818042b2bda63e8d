"""The `medgen` command. Each subcommand lives in a small function that imports what it needs when it
runs, so `medgen --help` answers at once. A new subcommand is one `_add_<name>` function plus an entry
in `SUBCOMMANDS`."""

from __future__ import annotations

import argparse
import os
import sys

from medgen import __version__
from medgen.errors import MedgenError


def _add_list(sub):
    p = sub.add_parser("list", help="list pipelines, networks and phantom datasets")
    p.set_defaults(func=_cmd_list)


def _cmd_list(args) -> int:
    from medgen.registry import NETWORKS, PIPELINES

    print("pipelines:")
    for name in PIPELINES.names():
        cls = PIPELINES.get(name)
        print(f"  {name:18s} {cls.description}")
        if cls.baselines:
            print(f"  {'':18s} baselines: {', '.join(cls.baselines)}")
    for module, error in PIPELINES.broken.items():
        print(f"  (not loaded: {module}: {error})")
    print("networks:")
    print("  " + ", ".join(NETWORKS.names()))
    from medgen.data.phantoms import PHANTOM_KINDS

    print("phantom datasets (medgen demo / data.dataset empty):")
    for name, text in PHANTOM_KINDS.items():
        print(f"  {name:18s} {text}")
    return 0


def _add_check_data(sub):
    p = sub.add_parser("check-data", help="check dataset folders (dataset.json): a per-file report, or --summary")
    p.add_argument("dataset", nargs="+", help="folder(s) holding dataset.json, or the json file(s)")
    p.add_argument("--keys", nargs="+", default=None, metavar="KEY",
                   help="only these keys, as --keys t1 t2 mask or --keys t1,t2,mask (default: every file key)")
    p.add_argument("--summary", action="store_true",
                   help="one line per dataset (cases per split, files, keys) and its problems, no per-file table")
    p.add_argument("--dims", type=int, choices=(2, 3), default=None,
                   help="expected spatial dimensions (default: the json's spatial_dims)")
    p.set_defaults(func=_cmd_check_data)


def _cmd_check_data(args) -> int:
    from medgen.data.check import main as check_main

    return check_main(args.dataset, keys=args.keys, summary=args.summary, expect_dims=args.dims)


def _add_make_dataset(sub):
    p = sub.add_parser(
        "make-dataset", help="build OUT/dataset.json from a folder (nnU-Net, BIDS, subject folders, patterns, DICOM, OCT)",
        description="Build OUT/dataset.json from the images in SRC, print what matched, what was left over and "
                    "the split, then run check-data on it. See docs/datasets.md.")
    p.add_argument("src", help="the folder holding the images")
    p.add_argument("out", help="the dataset folder to write dataset.json into (may be SRC)")
    p.add_argument("--layout", default="auto", choices=("auto", "nnunet", "bids", "subjects", "flat", "dicom", "oct"),
                   help="folder layout (default: detected)")
    p.add_argument("--key", action="append", default=[], metavar="NAME=PATTERN",
                   help="a key and the glob its files (flat, subjects, BIDS: file name; DICOM: series description "
                        "or folder) match, e.g. --key t1='*_t1.nii.gz'; repeat per key (and per extra pattern)")
    p.add_argument("--keys", nargs="+", default=None, metavar="KEY",
                   help="use only these keys (the others are reported as left over)")
    p.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                   help="rename a key the layout produced, e.g. --rename ch0=t1")
    p.add_argument("--split", default="0.8,0.1,0.1", help="training,validation,test fractions (default 0.8,0.1,0.1)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--group", default=None, metavar="REGEX",
                   help="subject of a case for the split: the regex's first group (or match) in the case id "
                        "(default: from the layout)")
    p.add_argument("--stratify", default=None, metavar="COLUMN",
                   help="stratify the split by this column of --table (also written into each case)")
    p.add_argument("--table", default=None, metavar="FILE",
                   help="CSV / TSV with one row per subject (default: SRC/participants.tsv)")
    p.add_argument("--missing", default="error", choices=("error", "skip", "keep"),
                   help="a case lacking a key: error (default), skip the case, keep it without the key")
    p.add_argument("--allow-empty-splits", action="store_true",
                   help="write the dataset even when the validation or test split is empty (warned)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/dataset.json")
    p.add_argument("--name", default=None, help="dataset name (default: SRC's folder name)")
    p.add_argument("--no-check", action="store_true", help="skip check-data on the result")
    p.set_defaults(func=_cmd_make_dataset)


def _cmd_make_dataset(args) -> int:
    from medgen.data.make_dataset import make_dataset, parse_assignments

    patterns: dict[str, list[str]] = {}
    for key, pattern in parse_assignments(args.key, "--key"):
        patterns.setdefault(key, []).append(pattern)
    result = make_dataset(
        args.src, args.out, layout=args.layout, patterns=patterns, keys=args.keys,
        rename=dict(parse_assignments(args.rename, "--rename")), split=args.split, seed=args.seed,
        group=args.group, stratify=args.stratify, table=args.table, missing=args.missing,
        allow_empty_splits=args.allow_empty_splits, overwrite=args.overwrite, name=args.name, check=not args.no_check)
    report = result["check"]
    return 0 if report is None or report.ok else 1


def _add_preprocess(sub):
    p = sub.add_parser(
        "preprocess", help="a resampled / cropped copy of a dataset, with derived brain masks (as the benchmarks)",
        description="Write OUT (a new dataset folder) with every case of SRC resampled to one voxel size, optionally "
                    "cropped to one key's nonzero box and given a derived brain mask; dataset.json keeps ids, splits "
                    "and fields and records what was done. Options and the benchmarks' settings: docs/datasets.md.")
    p.add_argument("src", help="the dataset folder (dataset.json) to read")
    p.add_argument("out", help="the new dataset folder to write")
    p.add_argument("--spacing", type=float, default=None, metavar="MM", help="voxel size of the copy (default: kept)")
    p.add_argument("--method", choices=("linear", "block"), default="linear",
                   help="linear: trilinear / nearest for labels (default); block: whole-number block means / majority")
    p.add_argument("--crop-to", default=None, metavar="KEY", help="crop every key to this key's box above zero")
    p.add_argument("--margin", type=int, default=2, help="voxels kept around the crop box (default 2)")
    p.add_argument("--brain-mask", default=None, metavar="KEY",
                   help="add a brain mask under KEY where a case has none: the voxels above zero (skull-stripped "
                        "scans only; a whole head is an error)")
    p.add_argument("--mask-rule", choices=("any", "all"), default="any",
                   help="any (default, the pipelines' rule) or all of the --mask-keys above --mask-threshold")
    p.add_argument("--mask-threshold", type=float, default=0.0)
    p.add_argument("--mask-keys", default=None, metavar="KEYS", help="comma-separated keys (default: every image)")
    p.add_argument("--overwrite", action="store_true", help="replace a copy this command wrote before")
    p.add_argument("--no-check", action="store_true", help="skip check-data on the result")
    p.set_defaults(func=_cmd_preprocess)


def _cmd_preprocess(args) -> int:
    from medgen.data.check import main as check_main
    from medgen.data.preprocess import preprocess_dataset

    keys = [k.strip() for k in args.mask_keys.split(",") if k.strip()] if args.mask_keys else None
    path = preprocess_dataset(args.src, args.out, spacing=args.spacing, method=args.method, crop_to=args.crop_to,
                              margin=args.margin, brain_mask=args.brain_mask, mask_rule=args.mask_rule,
                              mask_threshold=args.mask_threshold, mask_keys=keys, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0 if args.no_check else check_main(path, summary=True)


def _add_simulate_pet(sub):
    p = sub.add_parser(
        "simulate-pet", help="build a low / full-dose PET dataset from full-dose images (simulated low dose)",
        description="Write OUT/dataset.json with a simulated low dose (Poisson thinning of counts), the full dose "
                    "and a head mask per case, split by subject or by slabs of one subject; the result passes "
                    "check-data and trains pet_lowdose as it is. See docs/pipelines/pet_lowdose.md.")
    p.add_argument("sources", nargs="+", metavar="SRC",
                   help="full-dose NIfTI files (one static frame each; a dcm2niix JSON sidecar beside a file is read)")
    p.add_argument("out", help="the dataset folder to write")
    p.add_argument("--fraction", type=float, default=0.25, help="dose fraction of the low dose (default 0.25)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws and of a fraction split (default 0)")
    p.add_argument("--split-by", choices=("subject", "slabs", "test"), default=None,
                   help="subject: whole subjects per split (--split or --training/--validation/--test); slabs: ONE "
                        "subject cut into disjoint slabs (--slabs, --axis); test: every case in test (to apply a "
                        "trained model). Default: slabs for one source, subject for several")
    p.add_argument("--split", default="0.6,0.2,0.2",
                   help="training,validation,test fractions of the subjects (--split-by subject; default 0.6,0.2,0.2)")
    for name in ("training", "validation", "test"):
        p.add_argument(f"--{name}", default=None, metavar="IDS",
                       help=f"comma-separated case ids for {name} (--split-by subject; instead of --split)")
    p.add_argument("--slabs", default="0.4375,0.5625", metavar="A,B",
                   help="cut points of the slabs along --axis: training [0,A), validation [A,B), test [B,1] "
                        "(--split-by slabs; default 0.4375,0.5625, the benchmark's left / midline / right)")
    p.add_argument("--axis", type=int, choices=(0, 1, 2), default=0, help="voxel axis the slabs are cut along")
    p.add_argument("--frame-duration", type=float, default=None, metavar="S",
                   help="frame duration in s (default: the sidecar's, else 600)")
    p.add_argument("--decay-factor", type=float, default=None, help="decay factor (default: the sidecar's, else 1)")
    p.add_argument("--sensitivity", type=float, default=None, help="counts per decay (sets the noise level)")
    p.add_argument("--input-is", choices=("measured", "expected"), default="measured",
                   help="measured: a real reconstruction (default); expected: a noise-free mean such as a template")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset this command wrote before")
    p.add_argument("--no-check", action="store_true", help="skip check-data on the result")
    p.set_defaults(func=_cmd_simulate_pet)


def _cmd_simulate_pet(args) -> int:
    from medgen.data.simulate_pet import simulate_pet_command

    return simulate_pet_command(args)


def _add_demo(sub):
    p = sub.add_parser("demo", help="write the phantom datasets, check them, and run each pipeline's quick demo")
    p.add_argument("--out", default="demo_data", help="where the phantom datasets go (default: demo_data)")
    p.add_argument("--runs", default="runs/demo", help="where the demo runs go (default: runs/demo)")
    p.add_argument("--only", nargs="*", default=None,
                   help="only these pipelines' demos (--only with no name: phantoms and check-data only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=None,
                   help="pipeline demos run at once, one process and one thread each (default: 2 on 2+ cores)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    from medgen.engine.demo import run_demo

    return run_demo(args.out, args.runs, only=args.only, seed=args.seed, jobs=args.jobs)


def _add_train(sub):
    p = sub.add_parser("train", help="train a pipeline: medgen train <pipeline> -c config.yaml [a.b=value ...]")
    p.add_argument("pipeline", help="pipeline name (see `medgen list`)")
    p.add_argument("overrides", nargs="*", help="config overrides such as train.iterations=200")
    p.add_argument("-c", "--config", default=None, help="YAML config (default: the pipeline's defaults)")
    p.add_argument("--resume", action="store_true", help="continue the run in output.root/<pipeline>/output.name")
    p.add_argument("--overwrite", action="store_true", help="reuse an existing run directory")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from medgen.engine.commands import train

    summary = train(args.pipeline, args.config, args.overrides, resume=args.resume, overwrite=args.overwrite)
    if summary and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        print(f"run: {summary['run_dir']}")
        if summary.get("best_metric") is not None:
            print(f"best val_{summary['key_metric']} = {summary['best_metric']:.4g} at step {summary['best_step']}")
    return 0


def _add_infer(sub):
    p = sub.add_parser("infer", help="predict with a trained run: medgen infer <run|checkpoint> <dataset|image|folder>")
    p.add_argument("run", help="a run directory or a checkpoint file")
    p.add_argument("dataset", nargs="?", default=None,
                   help="a dataset folder (dataset.json), an image file, a DICOM series folder or a folder of images "
                        "(default: the run's dataset)")
    p.add_argument("--split", default="test", help="training | validation | test | all (default: test)")
    p.add_argument("--out", default=None, help="output folder (default: <run>/predictions)")
    p.add_argument("--checkpoint", default="best",
                   help="a checkpoint of the run: best, last, last.prev or step<N> (an unknown name is an error)")
    p.add_argument("--overwrite", action="store_true", help="replace existing prediction files")
    p.add_argument("--device", default="auto")
    p.add_argument("--units", choices=("physical", "normalised"), default=None,
                   help="physical: images in the target's units (PET units, HU, MR intensity); normalised: the "
                        "network's space (default: the run's infer.units, physical)")
    p.set_defaults(func=_cmd_infer)


def _cmd_infer(args) -> int:
    from medgen.engine.commands import infer

    result = infer(args.run, args.dataset, split=args.split, out=args.out, checkpoint=args.checkpoint,
                   overwrite=args.overwrite, device=args.device, units=args.units)
    print(f"wrote {result['written']} case(s) to {result['out']}; skipped {result['skipped']}, failed {result['failed']}")
    for case_id, error in result.get("errors", {}).items():  # why, case by case (also in manifest.json)
        print(f"  failed: case '{case_id}': {error}", file=sys.stderr)
    return 1 if result["failed"] else 0


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="metrics of predictions against references: per_case.csv, summary.json, report.md")
    p.add_argument("predictions", help="a predictions folder (written by medgen infer)")
    p.add_argument("references", nargs="?", default=None,
                   help="the dataset folder holding the references (default: the dataset the manifest records)")
    p.add_argument("--out", default=None, help="output folder (default: <predictions>/../eval)")
    p.add_argument("--split", default=None, help="only this split (default: the split(s) the predictions are of)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing evaluation in the output folder")
    p.add_argument("--baselines", default=None, metavar="NAMES",
                   help="comma-separated baselines to fit on the training split and score beside the model "
                        "(default: all the pipeline declares; 'none' for none; see `medgen list`)")
    p.add_argument("--where", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="only the cases whose dataset.json fields match, e.g. --where domain=B")
    p.set_defaults(func=_cmd_evaluate)


def _where(items) -> dict:
    bad = [i for i in items if "=" not in i]
    if bad:
        raise MedgenError(f"--where takes FIELD=VALUE, got {' '.join(bad)}")
    return dict(i.split("=", 1) for i in items)


def _baseline_names(value):
    if value is None:
        return None
    return [] if value.strip().lower() == "none" else [v.strip() for v in value.split(",") if v.strip()]


def _cmd_evaluate(args) -> int:
    from medgen.engine.commands import evaluate

    summary = evaluate(args.predictions, args.references, out=args.out, split=args.split, overwrite=args.overwrite,
                       baselines=_baseline_names(args.baselines), where=_where(args.where))
    print(summary["table"])
    for verdict in summary["summary"].get("verdicts", {}).values():
        print(f"verdict: {verdict}")
    for warning in summary.get("warnings", []):
        print(f"WARNING {warning}")
    print(f"report: {summary['report']}")
    return 0


def _add_baselines(sub):
    p = sub.add_parser("baselines", help="fit a pipeline's baselines on a dataset and score them (no training)")
    p.add_argument("pipeline", help="pipeline name (see `medgen list` for its baselines)")
    p.add_argument("overrides", nargs="*", help="config overrides such as data.dataset=/data/my_pet")
    p.add_argument("-c", "--config", default=None, help="YAML config (default: the pipeline's defaults)")
    p.add_argument("--split", default="test", help="the split to predict and score (default: test)")
    p.add_argument("--only", default=None, metavar="NAMES", help="comma-separated baselines (default: all)")
    p.add_argument("--out", default=None, help="output folder (default: <output.root>/<pipeline>/baselines/<split>)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier baseline evaluation there")
    p.set_defaults(func=_cmd_baselines)


def _cmd_baselines(args) -> int:
    from medgen.engine.baseline_runs import run_baselines

    result = run_baselines(args.pipeline, args.config, args.overrides, split=args.split, out=args.out,
                           names=_baseline_names(args.only), overwrite=args.overwrite)
    print(result["table"])
    print(f"report: {result['report']}")
    return 0


def _add_export(sub):
    p = sub.add_parser("export", help="export a trained run: a MONAI bundle, or TorchScript / ONNX files with metadata, "
                                      "each checked against medgen (docs/outputs.md#export)")
    p.add_argument("run", help="a run directory or a checkpoint file")
    p.add_argument("--format", choices=("bundle", "torchscript", "onnx"), default="torchscript",
                   help="bundle: a MONAI bundle reproducing medgen infer (3D image pipelines, lesion_uda); "
                        "torchscript / onnx: every exportable network (default: torchscript)")
    p.add_argument("--network", default=None, help="torchscript / onnx: only this one (default: every exportable one)")
    p.add_argument("--out", default=None, help="output folder (default: <run>/export, a bundle <run>/export/bundle)")
    p.add_argument("--checkpoint", default="best", help="a checkpoint of the run: best, last, last.prev or step<N>")
    p.add_argument("--overwrite", action="store_true", help="replace files (a bundle) a previous export wrote there")
    p.add_argument("--dataset", default=None, help="bundle: verify on a case of this dataset instead of the run's")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="bundle: skip running it beside medgen infer on one case (recorded in its metadata)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from medgen.engine.commands import export

    result = export(args.run, fmt=args.format, network=args.network, out=args.out, checkpoint=args.checkpoint,
                    overwrite=args.overwrite, dataset=args.dataset, verify=args.verify)
    for path in result["written"]:
        print(f"wrote {path}")
    for why in result["skipped"]:
        print(f"not exported: {why}")
    ver = result.get("verification")
    if ver and ver.get("outputs"):
        for name, r in ver["outputs"].items():
            print(f"checked against medgen infer on case {ver['case']}: {name} max abs difference "
                  f"{r['max_abs_difference']:.3g} (values up to {r['max_abs_value']:.3g})")
    elif ver:
        print(f"not checked against medgen infer: {ver.get('skipped')}")
    for note in result.get("notes") or []:
        print(f"note: {note}")
    return 0


def _add_bench(sub):
    p = sub.add_parser("bench", help="speed and memory of the pipelines (table + JSON); see docs/benchmarks.md")
    p.add_argument("pipelines", nargs="*", help="pipelines to measure (default: all)")
    p.add_argument("--steps", type=int, default=5, help="measured training steps (after warm-up)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--volume", type=int, default=256, help="side of the whole volume for 3D inference (0: skip)")
    p.add_argument("--smoke", action="store_true", help="use the tiny smoke configs (a quick check, not a benchmark)")
    p.add_argument("--memory", action="store_true", help="also measure inference memory at 128^3, 192^3, 256^3")
    p.add_argument("--out", default="bench.json", help="where to write the JSON results")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for every pipeline, e.g. --set train.batch_size=2")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    import json
    from pathlib import Path

    from medgen.bench import format_results, memory_scaling, run_in_subprocess
    from medgen.registry import PIPELINES

    names = args.pipelines or [n for n in PIPELINES.names() if n != "toy_denoise"]
    overrides = list(args.overrides)
    results = []
    for name in names:
        PIPELINES.get(name)  # a clear error for an unknown name
        config = Path("configs") / f"{name}{'_smoke' if args.smoke else ''}.yaml"
        result = run_in_subprocess(name, config if config.exists() else None, overrides, args.steps, args.warmup,
                                   args.volume)
        results.append(result)
        print(format_results([result]).splitlines()[-1], flush=True)
    report = {"pipelines": results}
    print(format_results(results))
    if args.memory:
        report["memory_scaling"] = memory_scaling()
        for row in report["memory_scaling"]:
            print(row)
    from medgen.files import atomic_write

    atomic_write(args.out, json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


def _add_gpu_check(sub):
    p = sub.add_parser("gpu-check", help="check a GPU (or CPU): environment, matmul probe, the test suite on the "
                                         "device, every pipeline's bench with TFLOP/s; one JSON + markdown "
                                         "(docs/benchmarks.md)")
    p.add_argument("--out", default="benchmarks/results/gpu", help="folder for the JSON, markdown and pytest log")
    p.add_argument("--pipelines", nargs="*", default=None,
                   help="pipelines to bench (default: all six; --pipelines with no name: none)")
    p.add_argument("--skip-tests", action="store_true", help="do not run the test suite")
    p.add_argument("--pytest-args", default="", metavar="ARGS",
                   help="extra pytest arguments, one quoted string: --pytest-args='tests/engine -k resume'")
    p.add_argument("--workers", type=int, default=None,
                   help="pytest-xdist workers (default: min(8, cores/2); 0: serial)")
    p.add_argument("--test-timeout", type=float, default=300, help="per-test limit in s (pytest-timeout; 0: none)")
    p.add_argument("--tests-timeout", type=float, default=1800, help="limit for the whole suite in s")
    p.add_argument("--bench-timeout", type=float, default=900, help="limit per pipeline bench in s")
    p.add_argument("--time-limit", type=float, default=0,
                   help="stop starting new stages after this many s in all (0: none); what ran is written")
    p.add_argument("--configs", choices=("auto", "paper", "smoke"), default="auto",
                   help="auto: paper configs on CUDA, smoke configs on a CPU")
    p.add_argument("--steps", type=int, default=None, help="timed steps per pipeline (default: 10 on CUDA, 3 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: 3 on CUDA, 1 on CPU)")
    p.add_argument("--volume", type=int, default=None,
                   help="side of the whole volume for 3D inference (default: 256 on CUDA, 64 on CPU; 0: skip)")
    p.add_argument("--probe-size", type=int, default=None,
                   help="matmul probe side (default: 8192 on CUDA, 1024 on CPU)")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for every pipeline")
    p.add_argument("--variants", nargs="*", default=None, metavar="NAME",
                   help="settings timed beside each pipeline's step (fp32, channels_last, compile; no name: none); "
                        "default: a set per pipeline on CUDA, none on a CPU")
    p.set_defaults(func=_cmd_gpu_check)


def _cmd_gpu_check(args) -> int:
    import shlex

    from medgen.gpu_check import gpu_check, verdict

    report, paths = gpu_check(
        args.out, pipelines=args.pipelines, skip_tests=args.skip_tests, pytest_args=shlex.split(args.pytest_args),
        workers=args.workers, test_timeout=args.test_timeout, tests_timeout=args.tests_timeout,
        bench_timeout=args.bench_timeout, time_limit=args.time_limit, configs=args.configs, steps=args.steps,
        warmup=args.warmup, volume=args.volume, probe_size=args.probe_size, overrides=args.overrides,
        variants=args.variants, log=lambda line: print(line, flush=True))
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values() if p.exists()))
    return verdict(report)


SUBCOMMANDS = [_add_list, _add_make_dataset, _add_preprocess, _add_simulate_pet, _add_check_data, _add_demo,
               _add_train, _add_infer, _add_evaluate, _add_baselines, _add_export, _add_bench, _add_gpu_check]


def parse_with_overrides(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """parse_args that lets `a.b=value` overrides sit anywhere among the options
    (`train p -c cfg.yaml a.b=1 --resume`): argparse leaves those after an option unparsed."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medgen", description="Generative models for medical data (MONAI + PyTorch). Start with `medgen demo`."
    )
    parser.add_argument("--version", action="version", version=f"medgen {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="command")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parse_with_overrides(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except MedgenError as exc:
        if args.debug:
            raise
        print(f"medgen {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medgen {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
