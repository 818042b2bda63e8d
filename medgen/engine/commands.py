"""What `medgen train | infer | evaluate` and the scripts in pipelines/ call."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import torch

from medgen.config import from_dict, load_config
from medgen.engine import distributed as ddp
from medgen.engine.cascade import cascade_predict, load_stage_weights, stage_dirs
from medgen.engine.checkpoint import load_checkpoint
from medgen.engine.logging import progress_bar
from medgen.engine.rundir import claimed_run_dir
from medgen.files import write_json_atomic
from medgen.engine.trainer import Trainer, resolve_device
from medgen.errors import DataError, MedgenError
from medgen.registry import PIPELINES


def build_config(pipeline: str, config_path=None, overrides=()):
    cls = PIPELINES.get(pipeline)
    cfg = load_config(cls.config_class, config_path, overrides)
    if cfg.pipeline and cfg.pipeline != pipeline:
        raise MedgenError(f"{config_path}: this config is for pipeline '{cfg.pipeline}', not '{pipeline}'")
    cfg.pipeline = pipeline
    _check_training_length(cfg, config_path, overrides)
    return cls, cfg


def _check_training_length(cfg, config_path, overrides) -> None:
    """`train.epochs > 0` decides the length of a run; an explicit `train.iterations` beside it would be ignored
    silently, so it is an error that says which to drop."""
    from medgen.config import apply_overrides, read_yaml

    given = apply_overrides(read_yaml(config_path) if config_path else {}, overrides)
    train = given.get("train") if isinstance(given.get("train"), dict) else {}
    if "iterations" in train and cfg.train.epochs > 0:
        source = "set here" if "epochs" in train else f"the {cfg.pipeline} default"
        raise MedgenError(f"train.iterations={cfg.train.iterations} would be ignored: train.epochs={cfg.train.epochs:g} "
                          f"({source}) sets the length of the run. Add train.epochs=0 to train for "
                          f"{cfg.train.iterations} iterations, or drop train.iterations")


def train(pipeline: str, config_path=None, overrides=(), resume: bool = False, overwrite: bool = False) -> dict:
    """Train every stage of a pipeline in its run directory; returns the last stage's summary. `resume`
    continues the run named by output.name with the run's own config.yaml (see `resume_config`)."""
    if resume:
        cls, cfg = resume_config(pipeline, config_path, overrides)
    else:
        cls, cfg = build_config(pipeline, config_path, overrides)
    return train_config(cls, cfg, resume=resume, overwrite=overwrite)


def resume_config(pipeline: str, config_path=None, overrides=()):
    """The config a resumed run continues with: the run's own config.yaml, with the overrides given now applied
    (and recorded when training starts). A `-c` file is only accepted when it resolves to the same config."""
    from medgen.config import to_dict

    cls, asked = build_config(pipeline, config_path, overrides)
    if not asked.output.name:
        raise MedgenError("--resume needs the run to continue: give its name with output.name=<run>")
    run_dir = Path(asked.output.root) / pipeline / asked.output.name
    saved = next((p for p in (run_dir / "config.yaml", run_dir / "stage1" / "config.yaml") if p.exists()), None)
    if saved is None:
        from medgen.engine.rundir import make_run_dir

        make_run_dir(asked.output.root, pipeline, asked.output.name, resume=True)  # names the runs that exist
        raise MedgenError(f"nothing to resume: {run_dir} holds no config.yaml")
    _, cfg = build_config(pipeline, saved, overrides)
    if config_path is not None:
        differ = _differences(to_dict(asked), to_dict(cfg), ignore=("output", "pipeline"))
        if differ:
            raise MedgenError(f"--resume continues {run_dir} with its own config.yaml, but {config_path} differs from "
                              f"it ({'; '.join(differ[:3])}): drop -c, or give the run's config.yaml")
    return cls, cfg


def _differences(a, b, prefix: str = "", ignore=()) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key in ignore:
                continue
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} vs the run's {b!r}"]


def train_config(cls, cfg, resume: bool = False, overwrite: bool = False) -> dict:
    dist = ddp.init_distributed(cfg.train.device)
    device = resolve_device(cfg.train.device, dist.local_rank)
    overwrite = overwrite or cfg.output.overwrite
    run_dir = Path(cfg.output.root) / cls.name / (cfg.output.name or _shared_timestamp())
    with contextlib.ExitStack() as owned:
        if dist.is_main:  # rank 0 holds the run's lock for the whole training
            run_dir = owned.enter_context(
                claimed_run_dir(cfg.output.root, cls.name, run_dir.name, overwrite=overwrite, resume=resume))
            if resume and not any(run_dir.glob("**/checkpoints/last.pt")):
                raise MedgenError(f"nothing to resume: {run_dir} holds no checkpoint (checkpoints/last.pt)")
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
    """Rebuild the trained stages of a run (or of one checkpoint file) for inference or evaluation.
    Returns (cls, cfg, stages, run_dir). A checkpoint of a cascade's later stage brings the earlier stages'
    checkpoints of the same name with it (stage k needs stage k-1's estimate)."""
    path = Path(run_or_ckpt)
    if path.is_file():
        ckpts = [path]
        if path.parent.parent.name.startswith("stage") and path.parent.name == "checkpoints":
            k = int(path.parent.parent.name[5:] or 1)
            ckpts = [path.parent.parent.parent / f"stage{j}" / "checkpoints" / path.name for j in range(1, k)] + ckpts
        run_dir = path.parent.parent.parent if path.parent.parent.name.startswith("stage") else path.parent.parent
    elif path.is_dir():
        run_dir = path
        stage_paths = sorted(path.glob("stage*/checkpoints")) or [path / "checkpoints"]
        ckpts = [_named_checkpoint(folder, checkpoint) for folder in stage_paths]
    else:
        raise MedgenError(f"{path}: neither a run directory nor a checkpoint file")
    cls, cfg, stages = load_stages(ckpts, device, dataset, local_rank)
    return cls, cfg, stages, run_dir


def _named_checkpoint(folder: Path, name: str) -> Path:
    """`folder/<name>.pt`. Only `best` falls back (to `last.pt`, for a run stopped before its first validation):
    any other name that is not there is an error listing the names that are, never another checkpoint."""
    names = sorted(p.name[:-3] for p in folder.glob("*.pt")) if folder.is_dir() else []
    plain = name and "/" not in name and "\\" not in name and not name.startswith(".")
    chosen = folder / f"{name}.pt"
    if plain and chosen.is_file():
        return chosen
    if name == "best" and (folder / "last.pt").is_file():
        return folder / "last.pt"
    raise MedgenError(f"{folder}: no checkpoint named {name!r}; this run has: "
                      f"{', '.join(names) if names else 'no checkpoints'}")


def load_stages(ckpts, device: str = "auto", dataset: str | None = None, local_rank: int = 0):
    """The pipeline stages saved in `ckpts` (stage 1 first), weights and pipeline state loaded."""
    ckpts = [Path(c) for c in ckpts]
    missing = [str(c) for c in ckpts if not c.exists()]
    if missing:
        raise MedgenError(f"checkpoint not found: {', '.join(missing)}")
    state = load_checkpoint(ckpts[0])
    cls = PIPELINES.get(state["pipeline"])
    cfg = from_dict(cls.config_class, state["config"])
    if dataset:
        cfg.data.dataset = str(dataset)
    dev = resolve_device(device, local_rank)
    stages = []
    for k, ckpt in enumerate(ckpts, start=1):
        stage = cls(cfg, dev, stage=k, previous=tuple(stages))
        load_stage_weights(stage, state if k == 1 else ckpt)
        stages.append(stage)
    return cls, cfg, stages


def _read_manifest(out: Path, pipeline: str) -> dict:
    """manifest.json merged with the per-rank parts a distributed run left (a crash before the merge)."""
    path = out / "manifest.json"
    try:
        manifest = json.loads(path.read_text()) if path.exists() else {"pipeline": pipeline, "cases": {}}
        for part in sorted(out.glob("manifest.rank*.json")):
            extra = json.loads(part.read_text())
            manifest["cases"].update(extra.get("cases", {}))
            manifest["written"] = sorted(set(manifest.get("written", [])) | set(extra.get("written", [])))
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise MedgenError(f"{path}: cannot read the predictions' manifest ({exc}); move it away or use another "
                          "--out") from None
    if manifest.get("pipeline") not in (None, pipeline):
        raise MedgenError(f"{out} holds predictions of pipeline '{manifest.get('pipeline')}', not '{pipeline}'; "
                          "use another --out")
    return manifest


def _digest(parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _file_identity(value) -> object:
    """A dataset value as it stands now: a file's path with its size and modification time, else the value."""
    if isinstance(value, dict):
        return {k: _file_identity(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_file_identity(v) for v in value]
    if isinstance(value, str) and os.path.exists(value):
        st = os.stat(value)
        return [value, st.st_size, st.st_mtime_ns]
    return value


def infer(run, dataset=None, split: str = "test", out=None, checkpoint: str = "best", overwrite: bool = False,
          device: str = "auto", units: str | None = None, progress: bool | None = None) -> dict:
    """Predict every case of a split and write the outputs in the source geometry.

    Isolation: a case that fails (unreadable input, wrong shape, a prediction that is not finite, a file that
    cannot be written) is listed in `manifest.json` with its error, and the others go on.
    Provenance: each case's entry records the checkpoint (SHA-256 of every stage's file) and the inputs (the
    dataset entry, with each file's size and modification time) that made its files. A rerun skips a case only
    when both are unchanged and its files are all there; otherwise it predicts again, replacing the files
    medgen wrote. A file in the output folder that medgen did not write is never replaced without `overwrite`.
    Under torchrun the cases are split across ranks; each rank records its cases in its own
    `manifest.rank<r>.json`, which rank 0 merges into `manifest.json` at the end (and a rerun merges too).
    Units: images in physical units (the target's own), or with `units="normalised"` in the network's space
    (`infer.units` of the run's config when None); the manifest records which.
    """
    from medgen.data.cases import CaseError
    from medgen.engine.outputs import OutputFolder, write_case_outputs

    dist = ddp.init_distributed(device)
    cls, cfg, stages, run_dir = load_trained(run, checkpoint, device, dataset, local_rank=dist.local_rank)
    units = _written_units(stages, units or cfg.infer.units)
    source = stages[0].data
    splits = ("training", "validation", "test") if split == "all" else (split,)
    if not any(source.ids(s) for s in splits):  # exit 0 with nothing predicted would look like success
        where = getattr(getattr(source, "datalist", None), "source", None) or source.ref.path
        which = "the training, validation and test splits are" if split == "all" else f"the '{split}' split is"
        raise DataError(where, f"no cases to predict: {which} empty or missing")
    out = Path(out) if out else Path(run_dir) / "predictions"
    if dist.is_main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MedgenError(f"cannot create the output folder {out}: {exc.strerror}") from None
    ddp.barrier()
    manifest = _read_manifest(out, cls.name)
    model = [dict(s.checkpoint or {}, stage=s.stage) for s in stages]
    model_digest = _digest([m.get("sha256") for m in model])
    if manifest["cases"] and manifest.get("units", "physical") != units:
        raise MedgenError(f"{out} holds predictions in {manifest.get('units', 'physical')} units; write the "
                          f"{units} ones to another --out")
    manifest.update(dataset=str(source.ref.path), dataset_sha256=source.ref.sha256, checkpoints=model,
                    evaluation=stages[-1].describe_evaluation(), units=units)
    folder = OutputFolder(out, owned=manifest.get("written", []), overwrite=overwrite)
    mine = {"pipeline": cls.name, "cases": {}}
    part_path = out / (f"manifest.rank{dist.rank}.json" if dist.enabled else "manifest.json")
    written = skipped = failed = 0
    output_key = stages[0].output_name

    def record(case_id: str, entry: dict) -> None:
        mine["cases"][case_id] = entry
        state = dict(mine, written=folder.written) if dist.enabled else dict(
            manifest, cases={**manifest["cases"], **mine["cases"]},
            written=sorted(set(manifest.get("written", [])) | set(folder.written)))
        write_json_atomic(part_path, state)

    for split_name in splits:
        inputs = {cid: _digest(_file_identity(v)) for cid, v in source.inputs(split_name).items()}
        ids = source.ids(split_name)

        def up_to_date(cid: str) -> bool:
            e = manifest["cases"].get(cid) or {}
            return (not overwrite and e.get("status") == "ok" and e.get("split") == split_name
                    and e.get("model") == model_digest and e.get("inputs") == inputs.get(cid)
                    and all(Path(f["path"]).exists() for f in e.get("files", []) if "path" in f))

        done = {cid for cid in ids if up_to_date(cid)}
        skipped += len(done)
        todo = [cid for cid in ids if cid not in done]
        assigned = set(todo[dist.rank :: dist.world_size])
        cases = source.iter(split_name, skip=set(ids) - assigned)
        bar = progress_bar(len(assigned), f"infer {split_name}", progress, enabled=dist.is_main)
        while True:
            try:
                case = next(cases)
            except StopIteration:
                bar.close()
                break
            except Exception as exc:  # noqa: BLE001 - a loader error must not stop the other cases
                raise MedgenError(f"reading the {split_name} split failed: {type(exc).__name__}: {exc}") from exc
            case_id = str(case.id)
            entry = {"split": split_name, "model": model_digest, "inputs": inputs.get(case_id), "files": []}
            try:
                if isinstance(case, CaseError):  # could not be loaded
                    raise MedgenError(case.error)
                predictions = cascade_predict(stages, case, output_key)
                _check_finite(predictions)
                stale = [f["path"] for f in (manifest["cases"].get(case_id) or {}).get("files", []) if "path" in f]
                files = []
                for k, (stage, pred) in enumerate(zip(stages, predictions), start=1):
                    suffix = f"stage{k}" if len(stages) > 1 else ""
                    files += [dict(e, stage=k) for e in
                              write_case_outputs(case, stage.outputs(case, pred), folder, suffix=suffix)]
                for path in set(stale) - {f.get("path") for f in files}:  # no longer produced: not left as current
                    Path(path).unlink(missing_ok=True)
                file_keys = set(getattr(getattr(source, "datalist", None), "keys", {}))
                entry.update(status="ok", files=files, fields={
                    k: v for k, v in case.fields.items()
                    if k not in file_keys and isinstance(v, (str, int, float, bool))})  # e.g. a domain, a label
                written += 1
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # noqa: BLE001 - isolate the case, report it, go on
                message = str(exc) if isinstance(exc, MedgenError) else f"{type(exc).__name__}: {exc}"
                entry.update(status="failed", error=message)
                failed += 1
            record(case_id, entry)
            bar.update(1)
    if not dist.enabled:
        table = _values_table({**manifest["cases"], **mine["cases"]})
        if table:
            folder.write_text("values.csv", table)
            write_json_atomic(part_path, dict(manifest, cases={**manifest["cases"], **mine["cases"]},
                                              written=sorted(set(manifest.get("written", [])) | set(folder.written))))
    counts = ddp.reduce_sums({"written": written, "failed": failed}, torch.device("cpu"))
    ddp.barrier()
    if dist.enabled and dist.is_main:  # merge the ranks' parts into the one manifest
        merged = _read_manifest(out, cls.name)
        merged.update(dataset=str(source.ref.path), dataset_sha256=source.ref.sha256, checkpoints=model, units=units)
        table = _values_table(merged["cases"])
        if table:
            folder.write_text("values.csv", table)
            merged["written"] = sorted(set(merged.get("written", [])) | set(folder.written))
        write_json_atomic(out / "manifest.json", merged)
        for part in out.glob("manifest.rank*.json"):
            part.unlink()
    ddp.barrier()
    errors = {cid: e.get("error", "") for cid, e in mine["cases"].items() if e.get("status") == "failed"}
    return {"out": str(out), "written": int(counts["written"]), "skipped": skipped, "failed": int(counts["failed"]),
            "errors": errors, "manifest": str(out / "manifest.json"), "rank": dist.rank,
            "world_size": dist.world_size}


def _written_units(stages, units: str) -> str:
    """Check `units` and give it to every stage (only the image-to-image methods have a normalised space)."""
    if units not in ("physical", "normalised"):
        raise MedgenError(f"units must be 'physical' or 'normalised', not {units!r}")
    if units == "normalised" and not all(hasattr(s, "normalised_units") for s in stages):
        raise MedgenError(f"pipeline '{stages[0].name}' writes no normalised intensity images: --units normalised "
                          "applies to the image-to-image pipelines")
    for s in stages:
        s.written_units = units
    return units


def _values_table(cases: dict) -> str:
    """`values.csv`'s text: one row per predicted case with its value outputs (an anomaly score, a threshold, a
    call) and plain fields (a label), for a spreadsheet; "" when the pipeline has no value outputs."""
    import csv
    import io

    rows = []
    for cid, entry in cases.items():
        values = {f["output"]: f["value"] for f in entry.get("files", []) if "value" in f}
        if entry.get("status") == "ok" and values:
            rows.append({"id": cid, "split": entry.get("split"), **values, **(entry.get("fields") or {})})
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r["id"]))
    return buf.getvalue()


def _check_finite(predictions: list[dict]) -> None:
    for k, prediction in enumerate(predictions, start=1):
        for name, value in prediction.items():
            if torch.is_tensor(value) and value.is_floating_point():
                bad = int((~torch.isfinite(value)).sum())
                if bad:
                    raise MedgenError(f"the prediction '{name}' (stage {k}) has {bad} non-finite values (NaN or "
                                      "infinity); nothing written for this case")


def evaluate(predictions, references=None, out=None, split: str | None = None, overwrite: bool = False,
             baselines=None, where: dict | None = None) -> dict:
    """Score written predictions (medgen.engine.evaluation): per_case.csv, summary.json and report.md in `out`
    (default `<predictions>/../eval`), against the dataset and for the split their manifest records unless
    `references` / `split` say otherwise. `baselines`: the pipeline's baselines to fit on the training split and
    score beside the model (None: all it declares; [] none); `where` {field: value}: only the cases whose
    dataset.json fields match. An existing, non-empty report folder is replaced
    only with `overwrite`, so an earlier evaluation is never lost by accident."""
    from medgen.engine.evaluation import evaluate_predictions

    predictions = Path(predictions)
    target = Path(out) if out else predictions.parent / "eval"
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise MedgenError(f"{target} already holds an evaluation; pass --overwrite to replace it, or --out to write "
                          "the new one elsewhere")
    if overwrite and target.is_dir() and any(target.iterdir()):
        if not any((target / name).exists() for name in ("report.md", "summary.json", "metrics.json")):
            raise MedgenError(f"{target} is not an evaluation folder (no report.md, summary.json or metrics.json); "
                              "refusing to replace its files: choose another --out")
        import shutil

        shutil.rmtree(target)  # nothing of the replaced evaluation stays beside the new one
    return evaluate_predictions(predictions, references, target, split=split, baselines=baselines,
                                where=where)


def export(run, fmt: str = "torchscript", network: str | None = None, out=None, checkpoint: str = "best",
           overwrite: bool = False, dataset: str | None = None, verify: bool = True) -> dict:
    """Export a trained run (medgen.engine.export, medgen.engine.bundle): `fmt` "bundle" writes a MONAI bundle
    (default `<run>/export/bundle`) verified against `medgen infer` on a case of the run's dataset (or of
    `dataset`); "torchscript" / "onnx" write every stage's exportable modules (default into `<run>/export`),
    each checked numerically against the eager module. All or nothing: a failed export leaves no files and no
    empty folder. Returns {"written": [paths], "skipped": [why], "verification": record or None}."""
    from medgen.engine.bundle import export_bundle
    from medgen.engine.export import FORMATS, export_networks

    if fmt not in FORMATS:
        raise MedgenError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    cls, cfg, stages, run_dir = load_trained(run, checkpoint, device="cpu", dataset=dataset)
    if fmt == "bundle":
        if network:
            raise MedgenError("--network does not apply to --format bundle: a bundle holds what inference runs")
        result = export_bundle(cls, cfg, stages, run_dir, out, overwrite=overwrite, checkpoint=checkpoint,
                               verify=verify)
        return {"written": [result["bundle"]], "skipped": [], "verification": result["verification"],
                "notes": result["notes"]}
    written, skipped = export_networks(cls.name, stages, run_dir, fmt, network, out, overwrite=overwrite)
    return {"written": written, "skipped": skipped, "verification": None, "notes": []}
