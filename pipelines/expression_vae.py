"""Tybalt VAE for gene expression (Way & Greene, PSB 2018): train, export the latent space, evaluate.

    python pipelines/expression_vae.py -c configs/expression_vae.yaml data.dataset=/path/to/dataset
    python pipelines/expression_vae.py -c configs/expression_vae_smoke.yaml output.name=smoke

Trains (medgen.engine.api.train), writes latent means / t-SNE / gene weights for the test split
(medgen.engine.api.infer), then runs the pipeline's evaluation (held-out reconstruction, label AUROC vs PCA,
association tests with FDR; `medgen evaluate` compares image files and does not apply to matrices).
"""

from __future__ import annotations

import argparse

from medgen.cli import parse_with_overrides
from medgen.engine.api import infer, train
from medgen.pipelines.expression_vae_eval import evaluate_run, summary_table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", default="configs/expression_vae.yaml")
    parser.add_argument("overrides", nargs="*", help="a.b=value config overrides")
    parser.add_argument("--resume", action="store_true", help="continue the run output.root/expression_vae/output.name")
    parser.add_argument("--overwrite", action="store_true", help="reuse the run directory and replace outputs")
    parser.add_argument("--split", default="test", help="split to export and evaluate on (default: test)")
    args = parse_with_overrides(parser, argv)
    summary = train("expression_vae", args.config, args.overrides, resume=args.resume, overwrite=args.overwrite)
    run = summary["run_dir"]
    result = infer(run, split=args.split, overwrite=args.overwrite or args.resume)
    print(f"outputs: {result['out']} ({result['written']} written, {result['failed']} failed)")
    evaluation = evaluate_run(run, split=args.split, overwrite=args.overwrite or args.resume)
    print(summary_table(evaluation))
    print(f"report: {evaluation['report']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
