"""Train expression_vae, predict the test split and evaluate it:

    python pipelines/expression_vae.py -c configs/expression_vae.yaml [a.b=value ...] [--resume] [--out DIR] [--split NAME]

The same flags for every pipeline (medgen.engine.script): `medgen train`, `medgen infer`, `medgen evaluate`.
"""

import sys

from medgen.engine.script import run_script

if __name__ == "__main__":
    sys.exit(run_script("expression_vae", sys.argv[1:]))
