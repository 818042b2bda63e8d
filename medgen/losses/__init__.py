"""Losses shared by the pipelines: adversarial (vanilla / LSGAN / hinge / WGAN-GP), gradient difference,
Ea-GANs Sobel edge, feature matching, the VAE objective, and the weight / learning-rate schedules.

Every loss works on (B, C, *spatial) tensors in 2D and 3D and reduces in float32 (safe under autocast).
Plain L1 / L2 voxel losses are ``torch.nn.L1Loss`` / ``torch.nn.MSELoss``.
"""

from __future__ import annotations

from medgen.losses.adversarial import ADVERSARIAL_MODES, AdversarialLoss, gradient_penalty, real_fake_logits
from medgen.losses.edge import EdgeL1Loss, sobel_edges, sobel_kernels
from medgen.losses.feature import feature_matching_loss
from medgen.losses.gradient import GradientDifferenceLoss, gradient_difference_loss
from medgen.losses.schedules import LinearRamp, constant_then_linear_decay, kl_warmup, sigmoid_rampup
from medgen.losses.vae import kl_divergence, vae_loss

__all__ = [
    "ADVERSARIAL_MODES",
    "AdversarialLoss",
    "gradient_penalty",
    "real_fake_logits",
    "EdgeL1Loss",
    "sobel_edges",
    "sobel_kernels",
    "feature_matching_loss",
    "GradientDifferenceLoss",
    "gradient_difference_loss",
    "LinearRamp",
    "constant_then_linear_decay",
    "kl_warmup",
    "sigmoid_rampup",
    "kl_divergence",
    "vae_loss",
]
