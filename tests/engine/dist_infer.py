"""Run under torchrun by test_distributed.py: batch inference over a dataset split across 2 gloo ranks."""
import json
import sys

import medgen.pipelines._template  # noqa: F401  (registers template_translation)
from medgen.engine.commands import infer

result = infer(sys.argv[1], device="cpu")
with open(f"{sys.argv[2]}/infer_rank{result['rank']}.json", "w") as fh:
    json.dump(result, fh)
