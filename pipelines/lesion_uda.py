"""Train lesion_uda, predict the test split and evaluate it:

    python pipelines/lesion_uda.py -c configs/lesion_uda.yaml [a.b=value ...] [--resume] [--out DIR] [--split NAME]

The same flags for every pipeline (medgen.engine.script): `medgen train`, `medgen infer`, `medgen evaluate`.
"""

import sys

from medgen.engine.script import run_script

if __name__ == "__main__":
    sys.exit(run_script("lesion_uda", sys.argv[1:]))
