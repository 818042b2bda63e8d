"""Patch-wise scoring of a whole 2D image: tile it into overlapping patches, stitch per-patch maps back by
averaging, and aggregate per-patch scores into one image score (the mean of the top k).

Why not `medgen.inference.windows.sliding_window`: patch-based anomaly detection (oct_anogan) needs a
*score per patch*, to aggregate the image score from the top-k patches, and scores only a chosen subset of
the patches (those centred in the retina band); the shared sliding window returns stitched maps only. The
stitching here is the plain mean over overlapping patches (constant blend), so a pixel's residual is the
average of the residuals of the patches that cover it.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from medgen.errors import MedgenError


def tile_starts(size: int, patch: int, stride: int) -> list[int]:
    """Start offsets covering [0, size) with windows of `patch` at most `stride` apart (last one flush)."""
    if size <= patch:
        return [0]
    starts = list(range(0, size - patch + 1, max(1, stride)))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def tile_image(image: np.ndarray, patch: Sequence[int], overlap: float):
    """(H, W) -> (patches (N, p0, p1), corners (N, 2), padded shape). Images smaller than a patch are
    mirror-padded at the bottom / right first (the stitched map is cropped back)."""
    p0, p1 = int(patch[0]), int(patch[1])
    h, w = image.shape
    ph, pw = max(0, p0 - h), max(0, p1 - w)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw)), mode="reflect" if min(h, w) > 1 else "edge")
    H, W = image.shape
    s0, s1 = max(1, int(round(p0 * (1 - overlap)))), max(1, int(round(p1 * (1 - overlap))))
    corners = np.array([(a, b) for a in tile_starts(H, p0, s0) for b in tile_starts(W, p1, s1)], dtype=np.int64)
    patches = np.stack([image[a:a + p0, b:b + p1] for a, b in corners])
    return patches, corners, (H, W)


def stitch_mean(values: np.ndarray, corners: np.ndarray, padded_shape, out_shape) -> np.ndarray:
    """Average per-patch maps (N, p0, p1) over their overlaps; pixels no patch covers get 0."""
    acc = np.zeros(padded_shape, np.float64)
    cnt = np.zeros(padded_shape, np.float64)
    p0, p1 = values.shape[1:]
    for v, (a, b) in zip(values, corners):
        acc[a:a + p0, b:b + p1] += v
        cnt[a:a + p0, b:b + p1] += 1
    out = np.where(cnt > 0, acc / np.maximum(cnt, 1), 0.0)
    return out[: out_shape[0], : out_shape[1]].astype(np.float32)


def aggregate_scores(patch_scores: np.ndarray, top_k_fraction: float) -> float:
    """Image score = mean of the k highest patch scores, k = max(1, ceil(fraction * n)).

    Why top-k: anomalies (a cyst, a few drusen) cover a small part of a B-scan, so the mean over all
    patches dilutes them, while the single maximum is at the mercy of one noisy patch.
    """
    s = np.sort(np.asarray(patch_scores, np.float64).ravel())[::-1]
    if s.size == 0:
        raise MedgenError("no patch scores to aggregate")
    k = max(1, int(math.ceil(top_k_fraction * s.size)))
    return float(s[:k].mean())
