"""Preview montages: for 3D, three orthogonal mid-planes (rows) of each named image (columns);
for 2D, one row of images. Typical columns: input / output / target / |error|, each with its colour bar.

Orientation, the same in every picture medgen draws (montages, TensorBoard images, the OCT overlay): a 2D
image (rows, columns) - a B-scan with depth down - is shown as it is stored; a plane of a volume is turned a
quarter (`np.rot90`): its first axis runs left to right and its second points up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medgen.files import atomic_write


def _as_array(image) -> np.ndarray:
    if hasattr(image, "detach"):
        image = image.detach().float().cpu().numpy()
    image = np.asarray(image, dtype=np.float32)
    while image.ndim > 3 and image.shape[0] == 1:  # drop batch / channel axes of size 1
        image = image[0]
    if image.ndim == 3 and image.shape[0] <= 4 and min(image.shape[1:]) > 4 * image.shape[0]:
        image = image[0]  # a channel-first 2D image: show its first channel
    return image


def _planes(volume: np.ndarray, centre=None) -> list[np.ndarray]:
    """The planes shown, in display orientation (see the module docstring)."""
    if volume.ndim == 2:
        return [volume]
    c = centre or [s // 2 for s in volume.shape]
    return [np.rot90(p) for p in (volume[c[0], :, :], volume[:, c[1], :], volume[:, :, c[2]])]


def display_scale(arrays: dict) -> dict[str, tuple[float, float]]:
    """{name: (vmin, vmax)}: images in the same units share one grey scale (the 0.5th-99.5th percentile span of
    them all); error maps ("error" in the name) get their own, from 0."""
    shared = [a for n, a in arrays.items() if "error" not in n]
    lo = min(float(np.percentile(a, 0.5)) for a in shared) if shared else 0.0
    hi = max(float(np.percentile(a, 99.5)) for a in shared) if shared else 1.0
    if hi <= lo:
        hi = lo + 1.0
    return {n: ((0.0, float(np.percentile(np.abs(a), 99.5)) or 1.0) if "error" in n else (lo, hi))
            for n, a in arrays.items()}


def middle_slices(images: dict) -> dict[str, np.ndarray]:
    """{name: the first plane of the montage (the middle slice of a volume, a 2D image itself)} in display
    orientation, mapped to [0, 1] with the montage's scales: what TensorBoard shows beside the PNG previews."""
    arrays = {name: _as_array(img) for name, img in images.items()}
    scales = display_scale(arrays)
    out = {}
    for name, arr in arrays.items():
        lo, hi = scales[name]
        out[name] = np.clip((_planes(arr)[0] - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    return out


def save_montage(images: dict, path, centre=None, title: str | None = None) -> Path:
    """Write a PNG montage of named 2D/3D images (numpy arrays or tensors), a colour bar under each column.
    Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arrays = {name: _as_array(img) for name, img in images.items()}
    names = list(arrays)
    rows = 3 if any(a.ndim == 3 for a in arrays.values()) else 1
    first = _planes(next(iter(arrays.values())), centre)[0]
    height = 2.6 * (1.0 if rows == 3 else min(max(first.shape[0] / max(first.shape[1], 1), 0.3), 1.5))
    fig, axes = plt.subplots(rows, len(names), figsize=(2.6 * len(names), height * rows + 0.9), squeeze=False,
                             layout="constrained")
    scales = display_scale(arrays)
    for col, name in enumerate(names):
        arr = arrays[name]
        planes = _planes(arr, centre)
        is_error = "error" in name
        vmin, vmax = scales[name]
        shown = None
        for row in range(rows):
            ax = axes[row][col]
            ax.axis("off")
            if row < len(planes):
                shown = ax.imshow(planes[row], cmap="magma" if is_error else "gray", vmin=vmin, vmax=vmax)
            if row == 0:
                ax.set_title(name, fontsize=9)
        if shown is not None:
            bar = fig.colorbar(shown, ax=axes[:, col].tolist(), location="bottom", shrink=0.85, aspect=18)
            bar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    finally:
        plt.close(fig)
