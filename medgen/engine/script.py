"""What every `pipelines/<name>.py` script runs: train the pipeline, predict a split, evaluate it.

    python pipelines/<name>.py -c configs/<name>.yaml [a.b=value ...] [--resume] [--out DIR] [--split test]

The same flags for every pipeline; the work is `medgen train`, `medgen infer` and `medgen evaluate` in a row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run_script(pipeline: str, argv=None, description: str | None = None) -> int:
    from medgen.cli import main as cli_main, parse_with_overrides

    parser = argparse.ArgumentParser(prog=f"pipelines/{pipeline}.py", description=description or
                                     f"train {pipeline}, predict a split and evaluate it")
    parser.add_argument("-c", "--config", default=None, help=f"YAML config (e.g. configs/{pipeline}.yaml; "
                                                             "default: the paper's defaults)")
    parser.add_argument("overrides", nargs="*", help="config overrides such as train.iterations=200")
    parser.add_argument("--resume", action="store_true", help="continue the run output.root/<pipeline>/output.name")
    parser.add_argument("--out", default=None, help="root folder of the runs (output.root; default: runs)")
    parser.add_argument("--split", default="test", help="split to predict and evaluate (default: test)")
    args = parse_with_overrides(parser, argv)
    overrides = list(args.overrides) + ([f"output.root={args.out}"] if args.out else [])
    train = ["train", pipeline, *overrides] + (["-c", args.config] if args.config else [])
    train += ["--resume"] if args.resume else []
    from medgen.engine.commands import build_config

    _, cfg = build_config(pipeline, args.config, overrides)
    rc = cli_main(train)
    if rc:
        return rc
    run = Path(cfg.output.root) / pipeline / cfg.output.name if cfg.output.name else _newest_run(cfg, pipeline)
    rc = cli_main(["infer", str(run), "--split", args.split])
    predictions = run / "predictions"
    if rc and not _any_written(predictions):  # nothing to score: the infer errors above say why
        print(f"pipelines/{pipeline}.py: no case of the {args.split} split was predicted; not evaluating",
              file=sys.stderr)
        return rc
    evaluate = ["evaluate", str(predictions), "--split", args.split] + (["--overwrite"] if args.resume else [])
    return max(rc, cli_main(evaluate))


def _any_written(predictions: Path) -> bool:
    """Whether the predictions' manifest holds a case predicted without error."""
    import json

    try:
        cases = json.loads((predictions / "manifest.json").read_text()).get("cases", {})
    except (OSError, ValueError):
        return False
    return any(e.get("status") == "ok" for e in cases.values())


def _newest_run(cfg, pipeline: str) -> Path:
    """The run `medgen train` just made under a time-stamped name."""
    runs = [p for p in (Path(cfg.output.root) / pipeline).iterdir() if p.is_dir()]
    return max(runs, key=lambda p: p.stat().st_mtime)
