"""Whole images through a network trained on fixed-size images: padded like the training images, or cut into
windows when larger; and whole volumes through a 2D network, slice by slice.

- `predict_padded(predictor, x, window, pad_value)`: an image or volume no larger than `window` is centred in a
  `window`-sized array filled with `pad_value` (the background), predicted in one pass and cropped back - the
  way `medgen.data.unpaired.DomainImages` pads training images, so a network with instance normalisation sees
  the statistics it was trained with. Larger inputs go through MONAI's sliding window (`inference.windows`).
- `predict_slicewise(predictor, x, axis, window, pad_value)`: every slice of a volume along `axis`, in batches.

Why not `sliding_window` alone: it pads a small input with its edge values, not with the background the
training images were padded with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from medgen.inference.windows import sliding_window


def _centre_pad(x: torch.Tensor, size: Sequence[int], value: float) -> tuple[torch.Tensor, tuple]:
    """(B, C, *spatial) centred in (B, C, *max(spatial, size)) filled with `value`; returns it and the crop back."""
    spatial = x.shape[2:]
    full = [max(int(s), int(n)) for s, n in zip(size, spatial)]
    if list(full) == list(spatial):
        return x, (slice(None),) * x.dim()
    out = x.new_full((*x.shape[:2], *full), float(value))
    crop = (slice(None), slice(None)) + tuple(slice((f - n) // 2, (f - n) // 2 + n) for f, n in zip(full, spatial))
    out[crop] = x
    return out, crop


def predict_padded(predictor: Callable, x: torch.Tensor, window: Sequence[int], pad_value: float = -1.0,
                   overlap: float = 0.5, window_batch: int = 4, blend: str = "gaussian", device=None) -> torch.Tensor:
    """`predictor` over the whole of `x` (B, C, *spatial) -> (B, C_out, *spatial) on the CPU (see the module)."""
    device = torch.device(device) if device is not None else x.device
    padded, crop = _centre_pad(x, window, pad_value)
    with torch.no_grad():  # both paths: a network with trainable weights must not build a graph here
        if tuple(padded.shape[2:]) == tuple(int(w) for w in window):
            return predictor(padded.to(device)).float().cpu()[crop]
        outs = [sliding_window(predictor, padded[i:i + 1], window, overlap=overlap, window_batch=window_batch,
                               blend=blend, device=device)["output"].float().cpu() for i in range(padded.shape[0])]
    return torch.cat(outs)[crop]


def predict_slicewise(predictor: Callable, x: torch.Tensor, axis: int, window: Sequence[int],
                      pad_value: float = -1.0, batch: int = 8, overlap: float = 0.5, blend: str = "gaussian",
                      device=None) -> torch.Tensor:
    """A 2D `predictor` over every slice of `x` (1, C, *3 spatial) cut along spatial `axis`, `batch` slices per
    pass; returns (1, C_out, *spatial) on the CPU."""
    dim = 2 + int(axis)
    slices = x[0].movedim(dim - 1, 0)  # (n_slices, C, *2D)
    outs = []
    for start in range(0, slices.shape[0], max(int(batch), 1)):
        chunk = slices[start:start + max(int(batch), 1)]
        outs.append(predict_padded(predictor, chunk, window, pad_value, overlap, window_batch=batch, blend=blend,
                                   device=device))
    out = torch.cat(outs)  # (n_slices, C_out, *2D)
    return out.movedim(0, dim - 1).unsqueeze(0)
