"""mr_synthesis: edge-aware cross-contrast MR synthesis with Ea-GANs (Yu et al., IEEE TMI 2019)."""

from medgen.pipelines.mr_synthesis.method import MRSynthesis

__all__ = ["MRSynthesis"]
