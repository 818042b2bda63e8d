"""unpaired_translation: A -> B image translation from unpaired sets with CycleGAN (Zhu et al., ICCV 2017)."""

from medgen.pipelines.unpaired_translation.method import UnpairedTranslation

__all__ = ["UnpairedTranslation"]
