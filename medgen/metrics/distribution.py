"""Distribution-level scores for translated images that have no paired truth: how far a set of outputs is from a
set of real target-domain images, by intensity histogram and by image features.

- `intensity_quantiles` / `wasserstein1`: the 1D Wasserstein (earth mover's) distance between two intensity
  distributions, in the images' units (HU for CT): the mean absolute difference of matched quantiles. A
  reference pool is kept as `QUANTILES` quantiles, so it can be saved with a model.
- `kernel_distance`: the kernel inception distance of Binkowski et al. ("Demystifying MMD GANs", ICLR 2018): the
  unbiased squared MMD with the cubic polynomial kernel (x.y / d + 1)^3, averaged over random subsets; it is
  unbiased, so it can be compared across the small sample sizes of medical test sets.
- `frechet_distance`: the Frechet distance of Heusel et al. (NeurIPS 2017, FID) between Gaussians fitted to the
  two feature sets; biased upwards for small samples (report n beside it).
- `RandomConvFeatures`: the features both distances are computed on: a small 2D CNN with fixed random weights
  (seeded), its layers' channel means and standard deviations concatenated; `region_slices` cuts a volume into
  the 2D slices it is fed (inside a mask, one size for every set compared).

Why not Inception features (FID, the Inception score): the Inception-v3 weights are an ImageNet download (a
user's offline machine has none), its features describe natural 299 px RGB photographs (Kynkaenniemi et al.,
ICLR 2023, show FID follows ImageNet class evidence), and the Inception score needs ImageNet classes, which no
CT slice belongs to. Randomly initialised networks give usable embeddings for image-set distances (Naeem et
al., "Reliable fidelity and diversity metrics for generative models", ICML 2020): they need no training and no
download, are the same on every machine for a seed, and see the images in the units they are given in. What
they do not give is a calibrated scale: a distance is only read against the same features' distance between
real sets (and the floors) on the same data.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medgen.errors import MedgenError

QUANTILES = 1001  # quantiles kept of a reference intensity pool (0, 0.1, ..., 100 %)


def intensity_quantiles(values, n: int = QUANTILES) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise MedgenError("no finite intensities to build a distribution from")
    return np.quantile(v, np.linspace(0.0, 1.0, n))


def wasserstein1(values, reference) -> float:
    """W1 distance between the intensities `values` and `reference` (raw values or `intensity_quantiles`; either
    side may be given as quantiles of the same length), in their units."""
    q1, q2 = np.asarray(values, np.float64).ravel(), np.asarray(reference, np.float64).ravel()
    n = QUANTILES if q1.size != q2.size else q1.size
    if q1.size != n:
        q1 = intensity_quantiles(q1, n)
    if q2.size != n:
        q2 = intensity_quantiles(q2, n)
    return float(np.mean(np.abs(q1 - q2)))


def _poly_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def kernel_distance(x, y, subsets: int = 50, subset_size: int = 200, seed: int = 0) -> dict[str, float]:
    """KID between feature sets x (m, d) and y (n, d): mean and standard deviation of the unbiased MMD^2 over
    `subsets` random subsets of min(subset_size, m, n) rows of each (all rows at once when both sets are that
    small; the standard deviation is then 0). Close to 0 (either sign) for samples of one distribution."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise MedgenError(f"kernel_distance needs two (n, d) feature sets of one d, got {x.shape} and {y.shape}")
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise MedgenError(f"kernel_distance needs at least 2 samples on each side, got {len(x)} and {len(y)}")
    if subsets <= 1 or (len(x) <= subset_size and len(y) <= subset_size):  # all rows: one unbiased estimate
        values = [_poly_mmd2(x, y)]
    else:
        rng = np.random.default_rng(seed)
        values = [_poly_mmd2(x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)])
                  for _ in range(subsets)]
    return {"kid": float(np.mean(values)), "kid_std": float(np.std(values)), "n_x": len(x), "n_y": len(y)}


def frechet_distance(x, y) -> float:
    """||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x S_y)^(1/2)) of Gaussians fitted to feature sets (n, d)."""
    from scipy import linalg

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or len(y) < 2:
        raise MedgenError("frechet_distance needs at least 2 samples on each side")
    mx, my = x.mean(0), y.mean(0)
    sx, sy = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    covmean, _ = linalg.sqrtm(sx @ sy, disp=False)
    if not np.isfinite(covmean).all():  # singular product: nudge both (as the FID reference code does)
        eps = np.eye(len(sx)) * 1e-6
        covmean = linalg.sqrtm((sx + eps) @ (sy + eps))
    covmean = np.real(covmean)
    return float(np.sum((mx - my) ** 2) + np.trace(sx) + np.trace(sy) - 2.0 * np.trace(covmean))


def region_slices(volume, mask, axis: int = 2, size: int | None = None, min_area: float = 0.25,
                  background: float = -1.0) -> np.ndarray:
    """(n, size, size) slices of `volume` (3D, already in a fixed scale such as [-1, 1]) across voxel `axis`,
    outside `mask` set to `background`: the slices whose mask area is at least `min_area` of the largest one's
    (the edge slices with a sliver of tissue would otherwise dominate a small set), each centred and padded with
    the background or cropped to size x size (None: the largest in-plane side). Every set compared must use the
    same size: the features pool over the whole slice, background included."""
    v, m = np.asarray(volume, np.float32), np.asarray(mask) > 0
    if v.ndim != 3 or m.shape != v.shape:
        raise MedgenError(f"region_slices needs a 3D volume and a mask of its shape, got {v.shape} and {m.shape}")
    v, m = np.moveaxis(np.where(m, v, background), axis, 0), np.moveaxis(m, axis, 0)
    size = int(size or max(v.shape[1:]))
    area = m.sum(axis=(1, 2))
    keep = np.flatnonzero(area >= max(min_area * area.max(), 1))
    out = np.full((len(keep), size, size), background, np.float32)
    for i, z in enumerate(keep):
        src = tuple(slice(max(0, (n - size) // 2), max(0, (n - size) // 2) + min(n, size)) for n in v.shape[1:])
        dst = tuple(slice(max(0, (size - n) // 2), max(0, (size - n) // 2) + min(n, size)) for n in v.shape[1:])
        out[i][dst] = v[z][src]
    return out


class RandomConvFeatures(nn.Module):
    """Image features from a fixed random 2D CNN: `len(channels)` blocks of conv 3x3 + ReLU + 2x2 average
    pooling (kaiming-normal weights from `seed`, no training); the feature vector is each block's channel means
    and channel standard deviations, concatenated (2 x sum(channels) numbers per image). Images go in as (N, 1,
    H, W) in a fixed intensity scale (e.g. the [-1, 1] a preset maps to); any size from 16 px."""

    def __init__(self, channels=(16, 32, 64, 64), seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        blocks, cin = [], 1
        for c in channels:
            conv = nn.Conv2d(cin, c, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * np.sqrt(2.0 / (cin * 9)))
                conv.bias.zero_()
            blocks.append(conv)
            cin = c
        self.blocks = nn.ModuleList(blocks)
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, feats = images.float(), []
        for conv in self.blocks:
            h = torch.relu(conv(h))
            feats += [h.mean(dim=(2, 3)), h.std(dim=(2, 3))]
            h = nn.functional.avg_pool2d(h, 2)
        return torch.cat(feats, dim=1)

    def features(self, images, batch: int = 64) -> np.ndarray:
        """(N, H, W) or (N, 1, H, W) images (array or tensor) -> (N, d) features, in batches."""
        x = torch.as_tensor(np.asarray(images, np.float32))
        if x.dim() == 3:
            x = x[:, None]
        return torch.cat([self(x[i:i + batch]) for i in range(0, len(x), batch)]).numpy()
