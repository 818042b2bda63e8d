"""Train mr_to_ct, predict the test split and evaluate it:

    python pipelines/mr_to_ct.py -c configs/mr_to_ct.yaml [a.b=value ...] [--resume] [--out DIR] [--split NAME]

The same flags for every pipeline (medgen.engine.script): `medgen train`, `medgen infer`, `medgen evaluate`.
"""

import sys

from medgen.engine.script import run_script

if __name__ == "__main__":
    sys.exit(run_script("mr_to_ct", sys.argv[1:]))
