"""Run under torchrun by test_distributed.py: batch inference over a dataset split across 2 gloo ranks."""
import json
import sys

import tests.pipelines.volume_example  # noqa: F401  (registers volume_example)
from medgen.engine.api import infer

result = infer(sys.argv[1], device="cpu")
with open(f"{sys.argv[2]}/infer_rank{result['rank']}.json", "w") as fh:
    json.dump(result, fh)
