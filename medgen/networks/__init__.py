"""Shared generator / discriminator blocks. Importing this package registers every class in
`medgen.registry.NETWORKS`, under its class name in snake_case: unet_generator, nie_fcn, resnet_generator,
dcgan_generator, dcgan_discriminator, wgan_resnet_generator, wgan_resnet_critic, izi_encoder, mlp_encoder,
mlp_decoder, tybalt_vae, adage_autoencoder, patch_discriminator, nie_discriminator, deepmedic,
domain_discriminator, conv_autoencoder, unet_segmenter.
"""

from __future__ import annotations

from medgen.networks.dcgan import DCGANDiscriminator, DCGANGenerator
from medgen.networks.deepmedic import DeepMedic, DeepMedicSizes
from medgen.networks.domain import (
    DomainDiscriminator,
    GradientReversal,
    GradReverse,
    center_crop,
    grad_reverse,
    ramp_weight,
)
from medgen.networks.fcn import NieFCN
from medgen.networks.init import init_weights
from medgen.networks.mlp import AdageAutoencoder, MLPDecoder, MLPEncoder, TybaltVAE
from medgen.networks.patchgan import NieDiscriminator, PatchDiscriminator
from medgen.networks.resnet import ResNetGenerator
from medgen.networks.unet import UNetGenerator, unet_depth_for_patch
from medgen.networks.wgan import IziEncoder, WGANResNetCritic, WGANResNetGenerator

__all__ = [
    "AdageAutoencoder",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "DeepMedic",
    "DeepMedicSizes",
    "DomainDiscriminator",
    "GradReverse",
    "GradientReversal",
    "IziEncoder",
    "MLPDecoder",
    "MLPEncoder",
    "NieDiscriminator",
    "NieFCN",
    "PatchDiscriminator",
    "ResNetGenerator",
    "TybaltVAE",
    "UNetGenerator",
    "WGANResNetCritic",
    "WGANResNetGenerator",
    "center_crop",
    "grad_reverse",
    "init_weights",
    "ramp_weight",
    "unet_depth_for_patch",
]
