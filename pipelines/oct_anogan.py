"""Train oct_anogan, predict the test split and evaluate it:

    python pipelines/oct_anogan.py -c configs/oct_anogan.yaml [a.b=value ...] [--resume] [--out DIR] [--split NAME]

The same flags for every pipeline (medgen.engine.script): `medgen train`, `medgen infer`, `medgen evaluate`.
"""

import sys

from medgen.engine.script import run_script

if __name__ == "__main__":
    sys.exit(run_script("oct_anogan", sys.argv[1:]))
