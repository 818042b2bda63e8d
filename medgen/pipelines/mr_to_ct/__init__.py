"""mr_to_ct: MRI -> CT in Hounsfield units with the context-aware FCN-GAN of Nie et al. (MICCAI 2017)."""

from medgen.pipelines.mr_to_ct.method import MrToCt

__all__ = ["MrToCt"]
