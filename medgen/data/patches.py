"""Paired patch sampling (2D / 3D) that also serves valid-convolution networks.

One centre voxel is drawn per sample; input keys are cropped at `input_size` and target keys at
`output_size` around that SAME centre (start = centre - size // 2), so a network mapping 32^3 -> 16^3
(Nie et al. 2017) gets aligned pairs: input[16] and target[8] are the same voxel. Crops beyond the
volume are padded (reflect or constant) by index arithmetic, so they are exact at any border.

Why not MONAI's RandCropByPosNegLabeld / RandSpatialCropd: they crop every key at one size and draw
from a global RNG stream; here item i of a `PatchDataset` is a pure function of (seed, i), which is
what makes resumed training and DataLoader workers reproducible without storing sampler state.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from medgen.errors import ConfigError, DataError

MODES = ("uniform", "foreground", "lesion_balanced")
PAD_MODES = ("reflect", "constant", "edge")


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach()
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
        return x.cpu().numpy()
    return np.asarray(x)


def _tuple(size, ndim: int, what: str) -> tuple[int, ...]:
    if isinstance(size, (int, np.integer)):
        return (int(size),) * ndim
    size = tuple(int(s) for s in size)
    if len(size) != ndim:
        raise ConfigError(f"{what} {size} has {len(size)} dims but the image has {ndim} spatial dims")
    return size


def _axis_index(start: int, size: int, n: int, pad_mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Source indices along one axis for a crop [start, start+size) and a validity mask."""
    idx = np.arange(start, start + size)
    valid = (idx >= 0) & (idx < n)
    if pad_mode == "reflect" and n > 1:
        period = 2 * (n - 1)
        m = np.mod(idx, period)
        idx = np.where(m >= n, period - m, m)
    else:  # edge / constant (constant overwrites the invalid ones afterwards)
        idx = np.clip(idx, 0, n - 1)
    return idx, valid


def crop_centered(arr, centre: Sequence[int], size: Sequence[int], pad_mode: str = "reflect",
                  pad_value: float = 0.0) -> np.ndarray:
    """Crop (C, *spatial) `arr` at `size` with `centre` at index size // 2, padding outside the volume."""
    a = _as_numpy(arr)
    spatial = a.shape[1:]
    starts = [int(c) - s // 2 for c, s in zip(centre, size)]
    if all(st >= 0 and st + s <= n for st, s, n in zip(starts, size, spatial)):
        sl = (slice(None),) + tuple(slice(st, st + s) for st, s in zip(starts, size))
        return np.ascontiguousarray(a[sl])
    idxs, valids = zip(*(_axis_index(st, s, n, pad_mode) for st, s, n in zip(starts, size, spatial)))
    out = a[(slice(None),) + np.ix_(*idxs)]
    if pad_mode == "constant":
        valid = np.ones(tuple(size), dtype=bool)
        for ax, v in enumerate(valids):
            shape = [1] * len(size)
            shape[ax] = -1
            valid = valid & v.reshape(shape)
        out = np.where(valid[None], out, np.asarray(pad_value, dtype=out.dtype))
    return np.ascontiguousarray(out)


class PatchSampler:
    """Pick a centre, crop inputs at `input_size` and targets at `output_size` around it.

    mode: "uniform" (any voxel), "foreground" (a voxel of case[fg_key] > 0) or "lesion_balanced"
    (with probability `pos_fraction` a voxel of case[lesion_key] > 0, else a foreground voxel outside
    the lesion; the whole volume stands in for a missing fg_key). Empty masks fall back to uniform.
    `output_size` defaults to `input_size`; input - output must be even per axis (a valid-convolution
    network trims the same on both sides). pad_mode: "reflect", "constant" (`pad_value`, a float or
    a per-key dict) or "edge".
    """

    def __init__(self, input_size, output_size=None, mode: str = "uniform", fg_key: str | None = None,
                 lesion_key: str | None = None, pos_fraction: float = 0.5, pad_mode: str = "reflect",
                 pad_value: float | Mapping[str, float] = 0.0):
        if mode not in MODES:
            raise ConfigError(f"unknown patch mode {mode!r}; choose one of {', '.join(MODES)}")
        if pad_mode not in PAD_MODES:
            raise ConfigError(f"unknown pad_mode {pad_mode!r}; choose one of {', '.join(PAD_MODES)}")
        if mode == "foreground" and fg_key is None:
            raise ConfigError("patch mode 'foreground' needs fg_key (the mask key)")
        if mode == "lesion_balanced" and lesion_key is None:
            raise ConfigError("patch mode 'lesion_balanced' needs lesion_key (and optionally fg_key)")
        if not 0.0 <= pos_fraction <= 1.0:
            raise ConfigError(f"pos_fraction must be in [0, 1], got {pos_fraction}")
        self.input_size, self.output_size = input_size, output_size if output_size is not None else input_size
        self.mode, self.fg_key, self.lesion_key = mode, fg_key, lesion_key
        self.pos_fraction, self.pad_mode, self.pad_value = float(pos_fraction), pad_mode, pad_value

    def sizes(self, ndim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        ins = _tuple(self.input_size, ndim, "input_size")
        outs = _tuple(self.output_size, ndim, "output_size")
        for i, o in zip(ins, outs):
            if o > i or (i - o) % 2:
                raise ConfigError(f"output_size {outs} must be <= input_size {ins} with an even difference "
                                  "per axis (the network trims the same on both sides)")
        return ins, outs

    def _mask(self, case: Mapping, key: str) -> np.ndarray:
        if key not in case:
            raise DataError(None, f"case {case.get('id', '?')!r} has no mask key {key!r} needed by "
                                  f"patch mode {self.mode!r}; keys: {', '.join(map(str, case))}")
        m = _as_numpy(case[key])
        return (m > 0).any(axis=0) if m.ndim > 1 else m > 0

    def prepare(self, case: Mapping) -> dict[str, np.ndarray]:
        """Flat candidate-centre indices for this case (computed once per case by PatchDataset)."""
        out: dict[str, np.ndarray] = {}
        if self.mode == "uniform":
            return out
        fg = self._mask(case, self.fg_key) if self.fg_key is not None else None
        dtype = np.int64
        if self.mode == "foreground":
            out["fg"] = np.flatnonzero(fg).astype(dtype)
        else:
            lesion = self._mask(case, self.lesion_key)
            out["pos"] = np.flatnonzero(lesion).astype(dtype)
            neg = ~lesion if fg is None else (fg & ~lesion)
            out["neg"] = np.flatnonzero(neg).astype(dtype)
        return out

    def choose_centre(self, spatial: tuple[int, ...], rng: np.random.Generator,
                      prepared: Mapping[str, np.ndarray]) -> tuple[tuple[int, ...], bool | None]:
        """-> (centre voxel, positive?) ; positive is None outside lesion_balanced mode."""
        positive = None
        pool = None
        if self.mode == "foreground":
            pool = prepared["fg"]
        elif self.mode == "lesion_balanced":
            positive = bool(rng.random() < self.pos_fraction)
            pool = prepared["pos"] if positive else prepared["neg"]
            if pool.size == 0:  # no lesion (or nothing outside it): take the other side
                positive = not positive
                pool = prepared["pos"] if positive else prepared["neg"]
        if pool is None or pool.size == 0:
            centre = tuple(int(rng.integers(n)) for n in spatial)
        else:
            centre = tuple(int(v) for v in np.unravel_index(int(pool[rng.integers(pool.size)]), spatial))
        return centre, positive

    def sample(self, case: Mapping[str, Any], rng: np.random.Generator, input_keys: Sequence[str],
               target_keys: Sequence[str] = (), prepared: Mapping[str, np.ndarray] | None = None) -> dict:
        """Crop one aligned patch pair from `case` (a dict of (C, *spatial) arrays/tensors).

        Returns {key: patch array, ..., "centre": (ndim,) int array, "positive": bool (lesion mode)}.
        """
        keys = list(input_keys) + list(target_keys)
        if not keys:
            raise ConfigError("PatchSampler.sample needs at least one input key")
        missing = [k for k in keys if k not in case]
        if missing:
            raise DataError(None, f"case {case.get('id', '?')!r} lacks keys {missing}; has {', '.join(map(str, case))}")
        spatial = tuple(_as_numpy(case[keys[0]]).shape[1:])
        for k in keys[1:]:
            if tuple(case[k].shape[1:]) != spatial:
                raise DataError(None, f"case {case.get('id', '?')!r}: key {k!r} has spatial shape "
                                      f"{tuple(case[k].shape[1:])}, {keys[0]!r} has {spatial}")
        ins, outs = self.sizes(len(spatial))
        if prepared is None:
            prepared = self.prepare(case)
        centre, positive = self.choose_centre(spatial, rng, prepared)
        out: dict[str, Any] = {}
        for k in keys:
            size = ins if k in input_keys else outs
            pv = self.pad_value.get(k, 0.0) if isinstance(self.pad_value, Mapping) else self.pad_value
            out[k] = crop_centered(case[k], centre, size, self.pad_mode, pv)
        out["centre"] = np.asarray(centre, dtype=np.int64)
        if positive is not None:
            out["positive"] = positive
        return out


def _torch_dataset_base():
    from torch.utils.data import Dataset

    return Dataset


class PatchDataset(_torch_dataset_base()):
    """Item i = a patch from a case, both drawn with `numpy.random.default_rng([seed, i])`.

    Deterministic given (seed, i) whatever the worker, order or resume point. `cases` are pre-loaded
    dicts of (C, *spatial) arrays (a `Case`'s arrays, medgen.data.cases); `case_weights` optionally biases the case draw.
    Items are dicts of torch tensors plus "case_id", "case_index" and "centre". An endless dataset:
    `epoch_size` (default 100 patches per case) is what the trainer counts as one epoch.
    """

    def __init__(self, cases: Sequence[Mapping[str, Any]], sampler: PatchSampler, input_keys: Sequence[str],
                 target_keys: Sequence[str] = (), seed: int = 0, length: int = 10**9,
                 case_weights: Sequence[float] | None = None, epoch_size: int | None = None):
        if not cases:
            raise DataError(None, "PatchDataset got no cases")
        self.cases = list(cases)
        self.epoch_size = int(epoch_size) if epoch_size else 100 * len(self.cases)
        self.sampler, self.input_keys, self.target_keys = sampler, list(input_keys), list(target_keys)
        self.seed, self.length = int(seed), int(length)
        if case_weights is not None:
            w = np.asarray(case_weights, dtype=float)
            if w.shape != (len(self.cases),) or (w < 0).any() or w.sum() <= 0:
                raise ConfigError("case_weights must be one non-negative weight per case, not all zero")
            self.case_p = w / w.sum()
        else:
            self.case_p = None
        self._prepared = [sampler.prepare(c) for c in self.cases]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        import torch

        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, int(i)])
        ci = int(rng.choice(len(self.cases), p=self.case_p)) if self.case_p is not None \
            else int(rng.integers(len(self.cases)))
        case = self.cases[ci]
        patch = self.sampler.sample(case, rng, self.input_keys, self.target_keys, self._prepared[ci])
        out: dict[str, Any] = {k: torch.from_numpy(np.ascontiguousarray(v))
                               for k, v in patch.items() if isinstance(v, np.ndarray)}
        if "positive" in patch:
            out["positive"] = bool(patch["positive"])
        out["case_id"] = str(case.get("id", ci))
        out["case_index"] = ci
        return out


def patches_covering(cases, key: str, patch_size) -> int:
    """Patches whose voxels add up to one pass over every case's `key` volume (at least one per case): the
    patch count of an "epoch" equivalent to a pass over whole volumes."""
    import math

    patch = math.prod(int(p) for p in patch_size)
    return sum(max(1, math.ceil(math.prod(c[key].shape[1:]) / patch)) for c in cases)
