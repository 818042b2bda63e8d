"""Every pipeline's smoke run at a fixed seed on the CPU, reduced to numbers that must not move under a refactor.

    python benchmarks/smoke_fingerprint.py --out benchmarks/results/refactor/after.json
    python benchmarks/smoke_fingerprint.py --compare benchmarks/results/refactor/before.json after.json

For each pipeline: train its smoke config (deterministic kernels, one thread, seed 0) in a temporary folder,
then record every value of metrics.csv (training losses and validation metrics, without wall time), a SHA-256
of every trained network's weights, and the pipeline's own `evaluate_case` metrics and a SHA-256 of its
prediction tensors on each test case. A
refactor that leaves a code path unchanged must reproduce these bit for bit; `--compare` prints what moved.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import tempfile
from pathlib import Path

PIPELINES = ("pet_lowdose", "mr_synthesis", "mr_to_ct", "lesion_uda", "oct_anogan", "expression_vae")
REPO = Path(__file__).resolve().parents[1]


def _weights_digest(networks) -> dict:
    out = {}
    for name, net in sorted(networks.items()):
        h = hashlib.sha256()
        for key, value in sorted(net.state_dict().items()):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
        out[name] = h.hexdigest()
    return out


class _TensorDict:
    """Lets _weights_digest hash a prediction dict like a state dict."""

    def __init__(self, tensors: dict):
        self.tensors = {k: v for k, v in tensors.items() if hasattr(v, "detach")}

    def state_dict(self) -> dict:
        return self.tensors


def _floats(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def fingerprint(name: str, tmp: Path) -> dict:
    import torch

    from medgen.engine import commands as api
    from medgen.engine.cascade import cascade_predict

    torch.set_num_threads(1)
    overrides = [f"output.root={tmp / 'runs'}", "output.name=fp", f"data.phantom_dir={tmp / 'phantoms'}",
                 "train.device=cpu", "train.deterministic=true", "train.seed=0", "train.progress=off"]
    summary = api.train(name, REPO / "configs" / f"{name}_smoke.yaml", overrides)
    run = Path(summary["run_dir"])
    logged = []
    for metrics_csv in sorted(run.rglob("metrics.csv")):
        with open(metrics_csv) as fh:
            for row in csv.DictReader(fh):
                logged.append({k: v for k, v in row.items() if k not in ("time_s", "steps_per_s") and v != ""})
    _, _, stages, _ = api.load_trained(run, device="cpu")
    weights = {f"stage{s.stage}": _weights_digest(s.networks) for s in stages}
    test = {}
    with torch.no_grad():
        old_api = hasattr(stages[0], "load_cases")  # a pipeline not yet on the Case / CaseSource contract
        for case in (stages[0].load_cases("test") if old_api else stages[0].data.load("test")):
            predictions = cascade_predict(stages, case, getattr(stages[0], "output_name", "output"))
            for stage, prediction in zip(stages, predictions):
                record = _floats(stage.evaluate_case(prediction, case))
                record["outputs"] = _weights_digest({"prediction": _TensorDict(prediction)})["prediction"]
                test[f"{case['id'] if old_api else case.id}/stage{stage.stage}"] = record
    return {"best_metric": summary.get("best_metric"), "metrics_csv": logged, "weights": weights, "test": test}


def compare(before: dict, after: dict) -> int:
    """What moved between two fingerprint files, for the pipelines `after` holds (a subset may be re-run)."""
    moved = 0
    for name in sorted(after):
        a, b = before.get(name), after.get(name)
        if a == b:
            print(f"{name}: identical")
            continue
        moved += 1
        if a is None or b is None:
            print(f"{name}: only in {'after' if a is None else 'before'}")
            continue
        for part in ("best_metric", "weights", "test", "metrics_csv"):
            if a.get(part) != b.get(part):
                print(f"{name}: {part} differs")
                if part == "test":
                    for key in sorted(set(a[part]) | set(b[part])):
                        if a[part].get(key) != b[part].get(key):
                            print(f"    {key}: {a[part].get(key)} -> {b[part].get(key)}")
    return 1 if moved else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pipelines", nargs="*", default=list(PIPELINES))
    ap.add_argument("--out", default=None, help="write the fingerprints here (JSON)")
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), default=None)
    args = ap.parse_args(argv)
    if args.compare:
        before, after = (json.loads(Path(p).read_text()) for p in args.compare)
        return compare(before, after)
    results = {}
    for name in args.pipelines:
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = fingerprint(name, Path(tmp))
        print(f"{name}: best {results[name]['best_metric']}, {len(results[name]['metrics_csv'])} logged rows, "
              f"{len(results[name]['test'])} test predictions", flush=True)
    text = json.dumps(results, indent=1, sort_keys=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
