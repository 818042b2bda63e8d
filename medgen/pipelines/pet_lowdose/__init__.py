"""pet_lowdose: low-dose -> full-dose PET with a 3D cGAN and progressive refinement (Wang et al. 2018)."""

from medgen.pipelines.pet_lowdose.method import PetLowdose

__all__ = ["PetLowdose"]
