"""Train oct_anogan, score the test split and evaluate it (one command runs all stages).

    python pipelines/oct_anogan.py -c configs/oct_anogan.yaml [a.b=value ...] [--resume]

The same as `medgen train oct_anogan ...`, `medgen infer <run>` and the anomaly evaluation
(`medgen.pipelines.oct_anogan.evaluate_anomaly`: ROC / PR AUC, pixel AUC, sensitivity / specificity).
"""

from __future__ import annotations

import argparse

from medgen.cli import parse_with_overrides
from medgen.engine import api
from medgen.pipelines.oct_anogan import evaluate_anomaly


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--config", default="configs/oct_anogan.yaml")
    ap.add_argument("overrides", nargs="*", help="config overrides such as train.iterations=200")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--split", default="test")
    args = parse_with_overrides(ap, argv)
    summary = api.train("oct_anogan", args.config, args.overrides, resume=args.resume)
    print(f"run: {summary['run_dir']}")
    result = api.infer(summary["run_dir"], split=args.split, overwrite=True)
    print(f"predictions: {result['out']} ({result['written']} written, {result['failed']} failed)")
    _, cfg = api.build_config("oct_anogan", args.config, args.overrides)
    from medgen.pipelines.oct_anogan import _phantom_dataset

    metrics = evaluate_anomaly(result["out"], cfg.data.dataset or _phantom_dataset(cfg.data), split=args.split)
    for key in ("roc_auc", "pr_auc", "pixel_auc", "threshold", "sensitivity", "specificity", "n_normal", "n_abnormal"):
        if key in metrics:
            print(f"{key}: {metrics[key]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
