"""Train unpaired_translation, predict the test split and evaluate it:

    python pipelines/unpaired_translation.py -c configs/unpaired_translation.yaml [a.b=value ...] [--resume] [--out DIR] [--split NAME]

The same flags for every pipeline (medgen.engine.script): `medgen train`, `medgen infer`, `medgen evaluate`.
"""

import sys

from medgen.engine.script import run_script

if __name__ == "__main__":
    sys.exit(run_script("unpaired_translation", sys.argv[1:]))
