"""Preview montages: for 3D, three orthogonal mid-planes (rows) of each named image (columns);
for 2D, one row of images. Typical columns: input / output / target / |error|."""

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
    if volume.ndim == 2:
        return [volume]
    c = centre or [s // 2 for s in volume.shape]
    return [volume[c[0], :, :], volume[:, c[1], :], volume[:, :, c[2]]]


def save_montage(images: dict, path, centre=None, title: str | None = None) -> Path:
    """Write a PNG montage of named 2D/3D images (numpy arrays or tensors). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arrays = {name: _as_array(img) for name, img in images.items()}
    names = list(arrays)
    rows = 3 if any(a.ndim == 3 for a in arrays.values()) else 1
    fig, axes = plt.subplots(rows, len(names), figsize=(2.6 * len(names), 2.6 * rows), squeeze=False)
    # Images in the same units share a grey scale; error maps get their own.
    shared = [a for n, a in arrays.items() if "error" not in n]
    lo = min(float(np.percentile(a, 0.5)) for a in shared) if shared else 0.0
    hi = max(float(np.percentile(a, 99.5)) for a in shared) if shared else 1.0
    for col, name in enumerate(names):
        arr = arrays[name]
        planes = _planes(arr, centre)
        is_error = "error" in name
        vmin, vmax = (0.0, float(np.percentile(np.abs(arr), 99.5)) or 1.0) if is_error else (lo, hi)
        for row in range(rows):
            ax = axes[row][col]
            ax.axis("off")
            if row < len(planes):
                ax.imshow(np.rot90(planes[row]), cmap="magma" if is_error else "gray", vmin=vmin, vmax=vmax)
            if row == 0:
                ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    finally:
        plt.close(fig)
