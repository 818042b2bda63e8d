"""Train pet_lowdose, predict the test split and evaluate it:

    python pipelines/pet_lowdose.py -c configs/pet_lowdose.yaml [a.b=value ...] [--resume] [--out DIR] [--split NAME]

The same flags for every pipeline (medgen.engine.script): `medgen train`, `medgen infer`, `medgen evaluate`.
"""

import sys

from medgen.engine.script import run_script

if __name__ == "__main__":
    sys.exit(run_script("pet_lowdose", sys.argv[1:]))
