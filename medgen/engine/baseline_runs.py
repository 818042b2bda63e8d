"""`medgen baselines`: a pipeline's baselines on a dataset without training anything.

Each baseline the pipeline declares is fitted on the training split (its parameter chosen on the validation
split) and predicts every case of the chosen split; the predictions are written like `medgen infer` writes a
model's (source units and geometry, `<case>_<output>_<baseline>.<ext>`) and scored by the pipeline's own
`evaluate_case` beside its floors, so the numbers sit in the same table as a model's evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

from medgen.errors import MedgenError


def run_baselines(pipeline: str, config_path=None, overrides=(), split: str = "test", out=None, names=None,
                  overwrite: bool = False) -> dict:
    from medgen.baselines.registry import fit_baselines
    from medgen.data.cases import CaseError
    from medgen.engine.commands import build_config
    from medgen.engine.evaluation import _plain, floor_rows, methods_table, score_case
    from medgen.engine.outputs import OutputFolder, write_case_outputs
    from medgen.files import atomic_write
    from medgen.metrics import summarise, write_report

    cls, cfg = build_config(pipeline, config_path, overrides)
    if not cls.baselines:
        raise MedgenError(f"pipeline '{cls.name}' declares no baselines (its floors are scored by medgen evaluate)")
    out = Path(out) if out else Path(cfg.output.root) / cls.name / "baselines" / split
    if (out / "summary.json").exists() and not overwrite:
        raise MedgenError(f"{out} already holds a baseline evaluation; pass --overwrite to replace it, or --out")
    p = cls(cfg, device="cpu")
    fitted = fit_baselines(p, names)
    out.mkdir(parents=True, exist_ok=True)
    folder = OutputFolder(out / "predictions", overwrite=overwrite)
    rows: dict[str, list] = {f"baseline: {n}": [] for n in fitted}
    failed = []
    for case in p.data.iter(split):
        if isinstance(case, CaseError):
            failed.append(f"{case.id}: {case.error}")
            continue
        for name, baseline in fitted.items():
            outputs = baseline.outputs(case)
            write_case_outputs(case, outputs, folder, suffix=name)
            values = {k: o.value for k, o in outputs.items() if o.kind != "figure"}
            scores = score_case(p, values, case)
            if scores:
                rows[f"baseline: {name}"].append({"id": case.id, **scores})
        for name, scores in floor_rows(p, case).items():
            rows.setdefault(f"floor: {name}", []).append({"id": case.id, **scores})
    if not any(rows.values()):
        raise MedgenError(f"the {split} split of {p.data.ref.path} has no case with a reference to score"
                          + (f" ({len(failed)} unreadable)" if failed else ""))
    summaries = {}
    for method, method_rows in rows.items():
        summary = summarise(method_rows) if method_rows else {"n_cases": 0, "metrics": {}}
        summary["set_metrics"] = p.evaluate_set(method_rows) if method_rows else {}
        if method.startswith("baseline: "):
            summary["description"] = fitted[method.removeprefix("baseline: ")].describe()
            write_report(method_rows, out / method.removeprefix("baseline: "))
        summaries[method] = summary
    table = methods_table(summaries, key_metric=p.key_metric)
    result = {"pipeline": cls.name, "split": split, "dataset": str(p.data.ref.path),
              "dataset_sha256": p.data.ref.sha256, "evaluation": p.describe_evaluation(), "methods": summaries,
              "unreadable_cases": failed}
    atomic_write(out / "summary.json", json.dumps(_plain(result), indent=2, allow_nan=False) + "\n")
    lines = [f"# Baselines: {cls.name}, {split} split of `{p.data.ref.path}`", "", table, "",
             *[f"- {n}: {b.describe()}" for n, b in fitted.items()], ""]
    report = atomic_write(out / "report.md", "\n".join(lines))
    return {"table": table, "report": str(report), "summary": result, "out": str(out)}
