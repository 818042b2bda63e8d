"""Gradient difference loss (GDL) of Nie et al. 2017 (context-aware FCN-GAN, MR -> CT).

Sharpens synthetic images by matching the magnitude of intensity changes between neighbouring voxels.
MONAI has no GDL; this is written from the paper's definition.
"""

from __future__ import annotations

import torch
from torch import nn

from medgen.errors import MedgenError

__all__ = ["gradient_difference_loss", "GradientDifferenceLoss"]


def gradient_difference_loss(pred: torch.Tensor, target: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """GDL = sum over spatial axes a of mean_voxels | |D_a pred| - |D_a target| |^alpha.

    ``D_a`` is the forward difference along spatial axis ``a`` (``x[i+1] - x[i]``, no padding, so the axis
    shrinks by one). Reduction: for each axis the mean is over every element of the difference tensor
    (batch, channel and voxels), then the per-axis means are SUMMED (2 terms in 2D, 3 in 3D). The paper writes
    sums over voxels; the mean keeps the weight ``lambda_gdl`` independent of patch size. Computed in float32.
    Works on (B, C, *spatial) with 1-3 spatial axes.
    """
    if pred.shape != target.shape:
        raise MedgenError(f"gradient_difference_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if pred.dim() < 3:
        raise MedgenError(f"gradient_difference_loss expects (B, C, *spatial), got shape {tuple(pred.shape)}")
    p = pred.float()
    t = target.float()
    total = p.new_zeros(())
    for axis in range(2, p.dim()):
        if p.shape[axis] < 2:
            continue
        dp = torch.diff(p, dim=axis).abs()
        dt = torch.diff(t, dim=axis).abs()
        total = total + ((dp - dt).abs() ** alpha).mean()
    return total


class GradientDifferenceLoss(nn.Module):
    """Module form of :func:`gradient_difference_loss` (``alpha`` = 2 in Nie et al.)."""

    def __init__(self, alpha: float = 2.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return gradient_difference_loss(pred, target, self.alpha)
