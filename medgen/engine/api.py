"""What `medgen train | infer | evaluate` and the scripts in pipelines/ call."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from medgen.config import from_dict, load_config
from medgen.engine import distributed as ddp
from medgen.engine.cascade import cascade_predict, load_stage_weights, stage_dirs
from medgen.engine.checkpoint import load_checkpoint
from medgen.engine.rundir import make_run_dir, write_json_atomic
from medgen.engine.trainer import Trainer, resolve_device
from medgen.errors import MedgenError
from medgen.registry import PIPELINES


def build_config(pipeline: str, config_path=None, overrides=()):
    cls = PIPELINES.get(pipeline)
    cfg = load_config(cls.config_class, config_path, overrides)
    if cfg.pipeline and cfg.pipeline != pipeline:
        raise MedgenError(f"{config_path}: this config is for pipeline '{cfg.pipeline}', not '{pipeline}'")
    cfg.pipeline = pipeline
    return cls, cfg


def train(pipeline: str, config_path=None, overrides=(), resume: bool = False, overwrite: bool = False) -> dict:
    """Train every stage of a pipeline in its run directory; returns the last stage's summary."""
    cls, cfg = build_config(pipeline, config_path, overrides)
    return train_config(cls, cfg, resume=resume, overwrite=overwrite)


def train_config(cls, cfg, resume: bool = False, overwrite: bool = False) -> dict:
    dist = ddp.init_distributed(cfg.train.device)
    device = resolve_device(cfg.train.device, dist.local_rank)
    overwrite = overwrite or cfg.output.overwrite
    run_dir = Path(cfg.output.root) / cls.name / (cfg.output.name or _shared_timestamp())
    if dist.is_main:
        run_dir = make_run_dir(cfg.output.root, cls.name, run_dir.name, overwrite=overwrite, resume=resume)
    ddp.barrier()
    n_stages = cls.num_stages(cfg)
    trained = []
    summary = {}
    for k, stage_dir in enumerate(stage_dirs(run_dir, n_stages), start=1):
        stage_dir.mkdir(parents=True, exist_ok=True)
        pipeline = cls(cfg, device, stage=k, previous=tuple(trained))
        stage_resume = resume and (stage_dir / "checkpoints" / "last.pt").exists()
        summary = Trainer(pipeline, stage_dir, resume=stage_resume, dist_info=dist).fit()
        summary["stage"] = k
        best = stage_dir / "checkpoints" / "best.pt"
        load_stage_weights(pipeline, best if best.exists() else stage_dir / "checkpoints" / "last.pt")
        trained.append(pipeline)
    summary["run_dir"] = str(run_dir)
    return summary


def _shared_timestamp() -> str:
    import time

    # Under torchrun every rank must agree on the directory name: take rank 0's.
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return ddp.gather_objects(stamp)[0]


def load_trained(run_or_ckpt, checkpoint: str = "best", device: str = "auto", dataset: str | None = None,
                 local_rank: int = 0):
    """Rebuild the trained stages of a run (or one checkpoint) for inference. Returns (cls, cfg, stages, run_dir)."""
    path = Path(run_or_ckpt)
    if path.is_file():
        ckpts, run_dir = [path], path.parent.parent
    elif path.is_dir():
        run_dir = path
        stage_paths = sorted(path.glob("stage*/checkpoints")) or [path / "checkpoints"]
        ckpts = []
        for folder in stage_paths:
            chosen = folder / f"{checkpoint}.pt"
            ckpts.append(chosen if chosen.exists() else folder / "last.pt")
        if not all(c.exists() for c in ckpts):
            raise MedgenError(f"{path}: no checkpoints found (expected {ckpts[0]})")
    else:
        raise MedgenError(f"{path}: neither a run directory nor a checkpoint file")
    state = load_checkpoint(ckpts[0])
    cls = PIPELINES.get(state["pipeline"])
    cfg = from_dict(cls.config_class, state["config"])
    if dataset:
        cfg.data.dataset = str(dataset)
    dev = resolve_device(device, local_rank)
    stages = []
    for k, ckpt in enumerate(ckpts, start=1):
        stage = cls(cfg, dev, stage=k, previous=tuple(stages))
        load_stage_weights(stage, ckpt)
        stages.append(stage)
    return cls, cfg, stages, run_dir


def _read_manifest(out: Path, pipeline: str) -> dict:
    """manifest.json merged with the per-rank parts a distributed run left (a crash before the merge)."""
    path = out / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {"pipeline": pipeline, "cases": {}}
    for part in sorted(out.glob("manifest.rank*.json")):
        manifest["cases"].update(json.loads(part.read_text()).get("cases", {}))
    return manifest


def infer(run, dataset=None, split: str = "test", out=None, checkpoint: str = "best", overwrite: bool = False,
          device: str = "auto") -> dict:
    """Predict every case of a split and write the outputs in the source geometry.

    One failing case does not stop the others; it is listed in `manifest.json` with its error. Cases whose
    outputs already exist are skipped (a rerun does only what is missing) unless `overwrite`. Under
    torchrun the remaining cases are split across ranks; each rank records its cases in its own
    `manifest.rank<r>.json`, which rank 0 merges into `manifest.json` at the end (and a rerun merges too).
    """
    dist = ddp.init_distributed(device)
    cls, cfg, stages, run_dir = load_trained(run, checkpoint, device, dataset, local_rank=dist.local_rank)
    out = Path(out) if out else Path(run_dir) / "predictions"
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
    ddp.barrier()
    manifest = _read_manifest(out, cls.name)
    manifest["dataset"] = cfg.data.dataset
    mine = {"pipeline": cls.name, "cases": {}}
    part_path = out / (f"manifest.rank{dist.rank}.json" if dist.enabled else "manifest.json")
    splits = ("training", "validation", "test") if split == "all" else (split,)
    written = skipped = failed = 0
    output_key = getattr(stages[0], "output_name", "output")
    for split_name in splits:
        done = set() if overwrite else {
            cid for cid, e in manifest["cases"].items()
            if e.get("status") == "ok" and e.get("split") == split_name and all(Path(f["path"]).exists() for f in e["files"])
        }
        ids = stages[0].case_ids(split_name)
        skipped += len(done & set(ids))
        todo = [cid for cid in ids if cid not in done]
        assigned = set(todo[dist.rank :: dist.world_size])
        # Stage 1 loads plain cases; cascade_predict runs every stage on each one.
        for case in stages[0].iter_cases(split_name, skip=set(ids) - assigned):
            case_id = case["id"]
            if "error" in case:  # could not be loaded: record it and go on with the others
                mine["cases"][case_id] = {"status": "failed", "split": split_name, "error": case["error"], "files": []}
                failed += 1
            else:
                try:
                    predictions = cascade_predict(stages, case, output_key)
                    files = []
                    for k, (stage, pred) in enumerate(zip(stages, predictions), start=1):
                        suffix = f"stage{k}" if len(stages) > 1 else ""
                        files += stage.write_outputs(case, pred, out, overwrite=True, suffix=suffix)
                    mine["cases"][case_id] = {"status": "ok", "split": split_name, "files": files}
                    written += 1
                except MedgenError as exc:
                    mine["cases"][case_id] = {"status": "failed", "split": split_name, "error": str(exc), "files": []}
                    failed += 1
            record = mine if dist.enabled else dict(manifest, cases={**manifest["cases"], **mine["cases"]})
            write_json_atomic(part_path, record)
    counts = ddp.reduce_sums({"written": written, "failed": failed}, torch.device("cpu"))
    ddp.barrier()
    if dist.enabled and dist.is_main:  # merge the ranks' parts into the one manifest
        merged = _read_manifest(out, cls.name)
        merged["dataset"] = cfg.data.dataset
        write_json_atomic(out / "manifest.json", merged)
        for part in out.glob("manifest.rank*.json"):
            part.unlink()
    ddp.barrier()
    return {"out": str(out), "written": int(counts["written"]), "skipped": skipped, "failed": int(counts["failed"]),
            "manifest": str(out / "manifest.json"), "rank": dist.rank, "world_size": dist.world_size}


def evaluate(predictions, references, out=None, run=None, split: str = "test") -> dict:
    """Metrics of written predictions against the references of a dataset (per_case.csv, summary.json, report.md)."""
    from medgen.engine.report import evaluate_predictions

    return evaluate_predictions(Path(predictions), Path(references), Path(out) if out else None, split=split)



def export(run, fmt: str = "torchscript", network: str | None = None, out=None, checkpoint: str = "best") -> list[Path]:
    """Export the trained networks of every stage; each file is checked numerically against the eager model."""
    from medgen.engine.export import export_onnx, export_torchscript

    cls, cfg, stages, run_dir = load_trained(run, checkpoint, device="cpu")
    out = Path(out) if out else Path(run_dir) / "export"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stage in stages:
        examples = stage.export_examples()
        if network:
            if network not in examples:
                raise MedgenError(f"pipeline '{cls.name}' exports {sorted(examples) or 'no networks'}, not '{network}'")
            examples = {network: examples[network]}
        if not examples:
            raise MedgenError(f"pipeline '{cls.name}' declares no exportable networks")
        for name, example in examples.items():
            tag = f"{name}_stage{stage.stage}" if len(stages) > 1 else name
            net = stage.networks[name].eval()
            if fmt == "onnx":
                written.append(export_onnx(net, example, out / f"{tag}.onnx"))
            else:
                written.append(export_torchscript(net, example, out / f"{tag}.pt"))
    return written
