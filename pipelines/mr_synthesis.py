"""Train, predict and evaluate mr_synthesis (Ea-GANs) in one go.

    python pipelines/mr_synthesis.py -c configs/mr_synthesis.yaml data.dataset=/data/brats model.target_key=flair
    python pipelines/mr_synthesis.py -c configs/mr_synthesis_smoke.yaml        # tiny run on the head phantoms

All logic lives in medgen (medgen/pipelines/mr_synthesis.py); this script only calls medgen.engine.api.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medgen.cli import parse_with_overrides
from medgen.engine.api import build_config, evaluate, infer, train


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", default="configs/mr_synthesis.yaml")
    parser.add_argument("overrides", nargs="*", help="config overrides such as model.variant=gea")
    parser.add_argument("--resume", action="store_true", help="continue the run output.root/mr_synthesis/output.name")
    args = parse_with_overrides(parser, argv)
    summary = train("mr_synthesis", args.config, args.overrides, resume=args.resume)
    run = Path(summary["run_dir"])
    result = infer(run)
    print(f"predictions: {result['out']} ({result['written']} written, {result['failed']} failed)")
    _, cfg = build_config("mr_synthesis", args.config, args.overrides)
    references = cfg.data.dataset or str(Path(cfg.data.phantom_dir) / "head")
    report = evaluate(run / "predictions", references, overwrite=args.resume)
    print(report["table"])
    print(f"report: {report['report']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
