"""Sobel edge maps and the edge L1 loss of Ea-GANs (Yu et al., IEEE TMI 2019).

The edge map is the one of the official Ea-GANs code (by-lab/Ea-GANs, ``sobelLayer``), generalised to any
number of channels (depthwise: each channel gets its own edge map, the reference handled one channel only)
and to 2D (chosen by tensor rank). MONAI's ``SobelGradients`` differs (reflect padding, per-axis output, no
norm / tanh mapping), hence this module.

Definition for x of shape (B, C, *spatial), spatial rank 3 (2 for images):
  1. pad every spatial side by one voxel with the constant ``pad_value`` (-1: background of [-1, 1] images);
  2. for each spatial axis a, correlate (depthwise) with the fixed 3x3x3 Sobel kernel K_a = d (x) s (x) s,
     d = [-1, 0, 1] along a, s = [1, 2, 1] along each of the other axes, i.e.
     G_a(v) = sum_w s s (x[v + e_a] - x[v - e_a]) (a central difference smoothed by 1-2-1 across the other
     axes; the reference's kernel has the opposite sign, irrelevant after the norm);
  3. divide each response by 4;
  4. take the L2 norm over the directions: N = sqrt(sum_a (G_a / 4)^2)  (the reference's extra ``/c*3``
     with c = 3 directions is the identity);
  5. map through ``tanh(N) * 2 - 1``, so flat regions give -1 and strong edges approach +1 (range [-1, 1)).
The output has the input's shape (B, C, *spatial), float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medgen.errors import MedgenError

__all__ = ["sobel_kernels", "sobel_edges", "EdgeL1Loss"]


def sobel_kernels(spatial_dims: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The fixed Sobel kernels, shape (spatial_dims, 1, 3, ..., 3), float32, no gradient.

    Kernel ``a`` is ``[-1, 0, 1]`` along spatial axis ``a`` times ``[1, 2, 1]`` along each other axis.
    """
    if spatial_dims not in (2, 3):
        raise MedgenError(f"sobel edges are defined for 2D and 3D images, got {spatial_dims} spatial axes")
    deriv = torch.tensor([-1.0, 0.0, 1.0])
    smooth = torch.tensor([1.0, 2.0, 1.0])
    kernels = []
    for axis in range(spatial_dims):
        k = torch.ones((3,) * spatial_dims)
        for other in range(spatial_dims):
            vec = deriv if other == axis else smooth
            shape = [1] * spatial_dims
            shape[other] = 3
            k = k * vec.reshape(shape)
        kernels.append(k)
    return torch.stack(kernels).unsqueeze(1).to(device)


def sobel_edges(x: torch.Tensor, pad_value: float = -1.0) -> torch.Tensor:
    """Ea-GANs Sobel edge map of ``x`` (B, C, H, W) or (B, C, D, H, W); see the module docstring.

    Computed in float32 with autocast disabled (the norm of small differences is fragile in half precision);
    gradients flow to ``x``, never to the fixed filters.
    """
    if x.dim() not in (4, 5):
        raise MedgenError(f"sobel_edges expects (B, C, H, W) or (B, C, D, H, W), got shape {tuple(x.shape)}")
    spatial_dims = x.dim() - 2
    channels = x.shape[1]
    with torch.autocast(device_type=x.device.type, enabled=False):
        xf = x.float()
        kernel = sobel_kernels(spatial_dims, device=x.device).repeat(channels, *([1] * (spatial_dims + 1)))
        padded = F.pad(xf, (1, 1) * spatial_dims, mode="constant", value=float(pad_value))
        conv = F.conv3d if spatial_dims == 3 else F.conv2d
        grads = conv(padded, kernel, groups=channels) / 4.0  # (B, C * dims, *spatial), channel-major
        grads = grads.reshape(x.shape[0], channels, spatial_dims, *x.shape[2:])
        magnitude = torch.linalg.vector_norm(grads, ord=2, dim=2)
        return torch.tanh(magnitude) * 2.0 - 1.0


class EdgeL1Loss(nn.Module):
    """Ea-GANs edge loss: ``mean |sobel_edges(pred) - sobel_edges(target)|`` (float32 scalar).

    The target's edge map carries no gradient (it is detached); the prediction's does. Weight it with
    ``lambda_edge`` (ramped 0 -> 100 over 20 epochs in Ea-GANs: see ``medgen.losses.schedules.LinearRamp``).
    """

    def __init__(self, pad_value: float = -1.0) -> None:
        super().__init__()
        self.pad_value = float(pad_value)

    def extra_repr(self) -> str:
        return f"pad_value={self.pad_value}"

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape:
            raise MedgenError(f"EdgeL1Loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        edges_pred = sobel_edges(pred, self.pad_value)
        with torch.no_grad():
            edges_target = sobel_edges(target, self.pad_value)
        return (edges_pred - edges_target).abs().mean()
