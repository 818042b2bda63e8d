"""Train, infer and evaluate mr_to_ct (MRI -> CT in HU, Nie et al. 2017). No logic: medgen.engine.api does it.

    python pipelines/mr_to_ct.py --config configs/mr_to_ct.yaml data.dataset=/data/pairs train.iterations=2000
    python pipelines/mr_to_ct.py --config configs/mr_to_ct.yaml --resume output.name=<run>
"""

from __future__ import annotations

import argparse
import sys

from medgen.cli import parse_with_overrides
from medgen.engine.api import evaluate, infer, train


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/mr_to_ct.yaml")
    ap.add_argument("--resume", action="store_true", help="continue the run named by output.name")
    ap.add_argument("--split", default="test", help="split to predict and evaluate")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. model.stages=3")
    args = parse_with_overrides(ap, argv)
    summary = train("mr_to_ct", args.config, args.overrides, resume=args.resume)
    print(f"trained: {summary}")
    result = infer(summary["run_dir"], split=args.split)
    print(f"predictions: {result}")
    report = evaluate(result["out"], summary.get("dataset") or _dataset(summary["run_dir"]), split=args.split,
                      overwrite=args.resume)
    print(report["table"])
    return 0


def _dataset(run_dir):
    from medgen.engine.api import load_trained

    _, cfg, stages, _ = load_trained(run_dir, device="cpu")
    return stages[-1].dataset_path()


if __name__ == "__main__":
    sys.exit(main())
