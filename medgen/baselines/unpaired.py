"""Baselines for translation between unpaired domains (no subject has both images), by name in
`medgen.baselines.registry.BASELINES`:

| name | what it is |
|---|---|
| unpaired_histogram_matching | each source image's foreground histogram matched to the pooled foreground histogram of the training domain-B images (a monotonic intensity map: it needs no pairs) |

Registered when this module is imported (the unpaired_translation pipeline imports it), with the registry's own
`register`; it predicts in that pipeline's format ({"output": (1, *spatial) tensor} in domain B's normalised
[-1, 1]), so the pipeline's `outputs` and `evaluate_case` treat it exactly as the model.
"""

from __future__ import annotations

from medgen.baselines.registry import Baseline, register
from medgen.errors import DataError


@register
class UnpairedHistogramMatching(Baseline):
    name = "unpaired_histogram_matching"
    description = "source foreground histogram matched to the pooled training domain-B histogram"

    def _fit(self, training) -> None:
        from medgen.baselines.intensity import HistogramMatching

        p = self.pipeline
        d = p.config.data
        targets = [c for c in training if c.get("domain") == "b" and d.key_b in c]
        if not targets:
            raise DataError(p.data.datalist.source, f"{self.name}: the training split has no domain-B image "
                                                    f"(key '{d.key_b}') to match histograms to")
        self.model = HistogramMatching([d.key_a], d.key_b, d.mask_key or None).fit(targets)

    def predict_case(self, case) -> dict:
        return {self.pipeline.output_name: self.model.predict_case(case)["output"]}
