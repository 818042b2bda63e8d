"""Shared generator / discriminator blocks. Importing this package registers every class in
`medgen.registry.NETWORKS` (names in brackets):

unet (UNetGenerator), fcn_nie (ValidConvFCN), resnet_generator (ResNetGenerator),
dcgan_generator / dcgan_discriminator, wgan_resnet_generator / wgan_resnet_critic / izi_encoder,
mlp_encoder / mlp_decoder / tybalt_vae / adage_dae, patchgan (PatchDiscriminator),
nie_discriminator (CTDiscriminator), deepmedic (DeepMedic), domain_discriminator (MultiLayerDomainDiscriminator).
"""

from __future__ import annotations

from medgen.networks.dcgan import DCGANDiscriminator, DCGANGenerator
from medgen.networks.deepmedic import DeepMedic, DeepMedicSizes
from medgen.networks.domain import (
    GradientReversal,
    GradReverse,
    MultiLayerDomainDiscriminator,
    center_crop,
    grad_reverse,
    ramp_weight,
)
from medgen.networks.fcn import ValidConvFCN
from medgen.networks.init import init_weights
from medgen.networks.mlp import VAE, DenoisingAutoencoder, MLPDecoder, MLPEncoder
from medgen.networks.patchgan import CTDiscriminator, PatchDiscriminator
from medgen.networks.resnet import ResNetGenerator
from medgen.networks.unet import UNetGenerator, unet_depth_for_patch
from medgen.networks.wgan import Encoder, WGANResNetCritic, WGANResNetGenerator

__all__ = [
    "CTDiscriminator",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "DeepMedic",
    "DeepMedicSizes",
    "DenoisingAutoencoder",
    "Encoder",
    "GradReverse",
    "GradientReversal",
    "MLPDecoder",
    "MLPEncoder",
    "MultiLayerDomainDiscriminator",
    "PatchDiscriminator",
    "ResNetGenerator",
    "UNetGenerator",
    "VAE",
    "ValidConvFCN",
    "WGANResNetCritic",
    "WGANResNetGenerator",
    "center_crop",
    "grad_reverse",
    "init_weights",
    "ramp_weight",
    "unet_depth_for_patch",
]
