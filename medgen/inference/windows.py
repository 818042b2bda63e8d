"""Whole-volume sliding-window inference with a bounded memory footprint.

- Same-size windows (U-Nets): MONAI's `sliding_window_inference` with Gaussian or constant blending,
  windows batched on the compute device and the stitching buffer on the CPU for large volumes.
- Smaller output windows (valid-convolution FCNs, DeepMedic): `valid_sliding_window`, written here because
  MONAI's inferer assumes each output window covers its input window. The volume is mirror-padded by the
  network's margin, output windows tile the volume with overlap, and overlaps are averaged.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable

import torch

LARGE_VOLUME_VOXELS = 128**3


def _as_dict(out) -> dict:
    if isinstance(out, dict):
        return out
    if isinstance(out, (list, tuple)):
        return {f"output{i}": o for i, o in enumerate(out)}
    return {"output": out}


@torch.no_grad()  # prediction only: a network called outside `medgen infer` must not build a graph per window
def sliding_window(
    predictor: Callable,
    inputs: torch.Tensor,
    roi_size,
    overlap: float = 0.5,
    window_batch: int = 4,
    blend: str = "gaussian",
    device=None,
    stitch_on_cpu: str = "auto",
) -> dict:
    """Run `predictor` (a batch of windows -> tensor or dict of tensors) over the whole of `inputs`
    (1, C, *spatial). Returns a dict of full-size outputs (on the CPU when stitching there)."""
    from monai.inferers import sliding_window_inference

    device = torch.device(device) if device is not None else inputs.device
    spatial = tuple(inputs.shape[2:])
    roi = tuple(int(r) if r > 0 else s for r, s in zip(roi_size, spatial))
    on_cpu = stitch_on_cpu == "always" or (stitch_on_cpu == "auto" and math.prod(spatial) > LARGE_VOLUME_VOXELS)
    out_device = torch.device("cpu") if on_cpu else device
    x = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
    # A volume smaller than the window is padded up to it (edge values), so networks that need the full
    # window size (a U-Net's strides) still see it; the result is cropped back below.
    short = [max(r - s, 0) for r, s in zip(roi, spatial)]
    if any(short):
        pad = []
        for d in reversed(short):
            pad += [d // 2, d - d // 2]
        x = torch.nn.functional.pad(x, pad, mode="replicate")

    def wrapped(windows):
        return _as_dict(predictor(windows))

    result = sliding_window_inference(
        x,
        roi_size=roi,
        sw_batch_size=window_batch,
        predictor=wrapped,
        overlap=overlap,
        mode=blend,
        sw_device=device,
        device=out_device,
        padding_mode="reflect",
    )
    result = _as_dict(result)
    if any(short):
        crop = (slice(None), slice(None)) + tuple(slice(d // 2, d // 2 + s) for d, s in zip(short, spatial))
        result = {k: v[crop] for k, v in result.items()}
    return result


def _starts(size: int, window: int, step: int) -> list[int]:
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def blend_weight(size, blend: str) -> torch.Tensor:
    """The weight of each voxel of an output window when overlaps are averaged: MONAI's
    `compute_importance_map`, the one its `sliding_window_inference` uses, so both paths blend alike
    ("gaussian": sigma 0.125 of the window per axis; "constant": ones)."""
    from monai.data.utils import compute_importance_map

    return compute_importance_map(tuple(int(s) for s in size), mode=blend, sigma_scale=0.125,
                                  device="cpu").float()


@torch.no_grad()
def valid_sliding_window(
    predictor: Callable,
    inputs: torch.Tensor,
    in_size,
    out_size,
    overlap: float = 0.5,
    window_batch: int = 4,
    blend: str = "constant",
    device=None,
    pad_mode: str = "reflect",
) -> dict:
    """Sliding window for networks whose output window (`out_size`) is the centre of a larger input
    window (`in_size`): pad the volume by the margin, tile output windows, average the overlaps.
    The stitching buffer is on the CPU, so memory grows with the volume only on the host side."""
    device = torch.device(device) if device is not None else inputs.device
    in_size = tuple(int(s) for s in in_size)
    out_size = tuple(int(s) for s in out_size)
    margins = [(i - o) // 2 for i, o in zip(in_size, out_size)]
    if any((i - o) % 2 for i, o in zip(in_size, out_size)):
        raise ValueError(f"input window {in_size} and output window {out_size} must differ by an even margin")
    x = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
    spatial = tuple(x.shape[2:])
    # Pad so every output window fits, then by the margin (mirror) for the context around the border.
    extra = [max(o - s, 0) for o, s in zip(out_size, spatial)]
    pad = []
    for m, e in reversed(list(zip(margins, extra))):
        pad += [m, m + e]
    mode = "reflect" if pad_mode == "reflect" and all(
        m + e < s for m, e, s in zip(margins, extra, spatial)
    ) else ("replicate" if pad_mode == "reflect" else pad_mode)
    x = torch.nn.functional.pad(x.float(), pad, mode=mode)
    work = [s + e for s, e in zip(spatial, extra)]
    steps = [max(1, int(round(o * (1 - overlap)))) for o in out_size]
    corners = list(itertools.product(*[_starts(w, o, st) for w, o, st in zip(work, out_size, steps)]))
    weight = blend_weight(out_size, blend)
    sums: dict[str, torch.Tensor] = {}
    norm = torch.zeros(work, dtype=torch.float32)
    for i in range(0, len(corners), window_batch):
        batch_corners = corners[i : i + window_batch]
        windows = torch.cat(
            [x[(slice(None), slice(None)) + tuple(slice(c, c + s) for c, s in zip(corner, in_size))] for corner in batch_corners]
        ).to(device)
        outputs = _as_dict(predictor(windows))
        for name, out in outputs.items():
            if tuple(out.shape[2:]) != out_size:
                raise ValueError(f"predictor output '{name}' has window {tuple(out.shape[2:])}, expected {out_size}")
            buf = sums.get(name)
            if buf is None:
                buf = sums[name] = torch.zeros((1, out.shape[1], *work), dtype=torch.float32)
            out = out.float().cpu()
            for j, corner in enumerate(batch_corners):
                region = (slice(None), slice(None)) + tuple(slice(c, c + s) for c, s in zip(corner, out_size))
                buf[region] += out[j : j + 1] * weight
        for corner in batch_corners:
            norm[tuple(slice(c, c + s) for c, s in zip(corner, out_size))] += weight
    crop = (slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)
    return {name: (buf / norm)[crop] for name, buf in sums.items()}
