"""Train, predict and evaluate lesion_uda (Kamnitsas et al. 2017: adversarial UDA for lesion segmentation).

    python pipelines/lesion_uda.py -c configs/lesion_uda.yaml data.dataset=/data/my_two_scanners model.mode=uda
    python pipelines/lesion_uda.py -c configs/lesion_uda_smoke.yaml output.name=smoke   # tiny phantom run

All logic lives in medgen (medgen/pipelines/lesion_uda.py); this script only calls medgen.engine.api.
Metrics of the test split (both domains; the `domain` column of the manifest says which) go to <run>/eval.
"""

from __future__ import annotations

import argparse

from medgen.cli import parse_with_overrides
from medgen.engine.api import build_config, evaluate, infer, train


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", default="configs/lesion_uda.yaml")
    parser.add_argument("overrides", nargs="*", help="config overrides such as model.mode=uda_last_layer")
    parser.add_argument("--resume", action="store_true", help="continue the run output.root/lesion_uda/output.name")
    parser.add_argument("--overwrite", action="store_true", help="reuse the run directory and replace outputs")
    args = parse_with_overrides(parser, argv)
    summary = train("lesion_uda", args.config, args.overrides, resume=args.resume, overwrite=args.overwrite)
    run = summary["run_dir"]
    result = infer(run, split="test", overwrite=args.overwrite or args.resume)
    print(f"predictions: {result['out']} ({result['written']} written, {result['failed']} failed)")
    cls, cfg = build_config("lesion_uda", args.config, args.overrides)
    pipe = cls(cfg)
    report = evaluate(result["out"], pipe.dataset_path(), overwrite=args.resume)
    print(report["table"])
    print(f"report: {report['report']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
