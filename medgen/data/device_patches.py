"""Training patches cut on the device: a `PatchDataset`'s volumes are copied to the device once, and each batch
is cut from them by one indexing operation per key, instead of being cropped on the CPU, collated and copied.

Why: a 3D patch batch is large (lesion_uda's DeepMedic context segments: 30 segments of several channels per
step; mr_synthesis: 6 x 128^3 x 3 keys), and cutting it with numpy in one process, then copying it over PCIe,
ran at 2-4 batches/s on the first H200 run, slower than the training step. Only the draws (which case, which
centre) stay on the CPU, in `PatchDataset.plan`, from the same `numpy.random.default_rng([seed, i])` as
`PatchDataset[i]`: item i stays a pure function of (seed, i), so the device path gives bit-identical patches
(tests/data/test_device_patches.py) and resume stays exact. Padding outside a volume uses the same index
arithmetic as `medgen.data.patches.crop_centered` (reflect / edge / constant).

`device_batches` is the trainer's loader for this path (`train.data_on_device`): a DataLoader over the plans
(workers, when `data.num_workers` > 0, compute only the draws) whose collated plans are turned into batches on
the device.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from medgen.errors import DataError


def axis_indices(starts: torch.Tensor, size: int, lengths: torch.Tensor, pad_mode: str):
    """Source indices (B, size) along one axis for crops [start, start + size) of axes of `lengths` (B,), and
    which of them fall inside the axis; the torch twin of `medgen.data.patches._axis_index`, per batch row."""
    idx = starts[:, None] + torch.arange(size, device=starts.device)
    n = lengths[:, None]
    valid = (idx >= 0) & (idx < n)
    clipped = torch.minimum(idx.clamp(min=0), n - 1)
    if pad_mode != "reflect":
        return clipped, valid
    period = (2 * (n - 1)).clamp(min=1)
    m = torch.remainder(idx, period)  # >= 0 for a positive period, as numpy's mod
    reflected = torch.where(m >= n, period - m, m)
    return torch.where(n > 1, reflected, clipped), valid  # an axis of length 1: edge, as crop_centered


def gather_patches(volumes: torch.Tensor, lengths: torch.Tensor, case_index: torch.Tensor, centres: torch.Tensor,
                   size: Sequence[int], pad_mode: str = "reflect", pad_value: float = 0.0) -> torch.Tensor:
    """Crops (B, C, *size) of `volumes` (N, C, *max_spatial; case n holds its voxels in the first `lengths[n]`
    of each axis) around `centres` (B, ndim), the centre at index size // 2, from cases `case_index` (B,)."""
    ndim = len(size)
    b = case_index.shape[0]
    channels = volumes.shape[1]
    own = lengths[case_index]  # (B, ndim): each row's own volume shape
    index: list[torch.Tensor] = [case_index.view(b, *([1] * (ndim + 1))),
                                 torch.arange(channels, device=volumes.device).view(1, channels, *([1] * ndim))]
    valid = None
    for ax, s in enumerate(size):
        idx, ok = axis_indices(centres[:, ax] - s // 2, int(s), own[:, ax], pad_mode)
        shape = [b, 1] + [1] * ndim
        shape[2 + ax] = int(s)
        index.append(idx.view(shape))
        valid = ok.view(shape) if valid is None else valid & ok.view(shape)
    out = volumes[tuple(index)]
    if pad_mode == "constant":
        out = torch.where(valid, out, torch.as_tensor(pad_value, dtype=out.dtype, device=out.device))
    return out


class ResidentVolumes:
    """A PatchDataset's cases on one device: per key a (N, C, *max_spatial) tensor (cases of different shapes
    padded at the far end, never read: each crop indexes inside its own case) and the cases' shapes."""

    def __init__(self, dataset, device):
        self.dataset = dataset
        self.device = torch.device(device)
        keys = dataset.input_keys + dataset.target_keys
        shapes = [dataset.sampler.spatial_shape(c, keys) for c in dataset.cases]
        ndim = len(shapes[0])
        if any(len(s) != ndim for s in shapes):
            raise DataError(None, "the training cases mix images of different dimensions")
        self.sizes = dataset.sampler.sizes(ndim)
        biggest = tuple(max(s[a] for s in shapes) for a in range(ndim))
        self.lengths = torch.tensor(shapes, dtype=torch.int64, device=self.device)
        self.volumes: dict[str, torch.Tensor] = {}
        for k in keys:
            arrays = [np.asarray(_numpy(c[k])) for c in dataset.cases]
            dtypes = {a.dtype for a in arrays}
            channels = {a.shape[0] for a in arrays}
            if len(dtypes) > 1 or len(channels) > 1:
                raise DataError(None, f"key {k!r}: the training cases differ in dtype or channels "
                                      f"({sorted(map(str, dtypes))}, {sorted(channels)}), so they cannot be batched")
            stack = np.zeros((len(arrays), arrays[0].shape[0], *biggest), dtype=arrays[0].dtype)
            for n, a in enumerate(arrays):
                stack[(n, slice(None)) + tuple(slice(0, s) for s in a.shape[1:])] = a
            self.volumes[k] = torch.from_numpy(stack).to(self.device)
        self.ids = [str(c.get("id", n)) for n, c in enumerate(dataset.cases)]

    def batch(self, plans: Mapping[str, Any]) -> dict:
        """The collated batch of the planned items (see `PatchDataset.device_batch`)."""
        ds = self.dataset
        ci = plans["case_index"].to(self.device)
        centres = plans["centre"].to(self.device)
        ins, outs = self.sizes
        out: dict[str, Any] = {}
        for k in ds.input_keys + ds.target_keys:
            size = ins if k in ds.input_keys else outs
            out[k] = gather_patches(self.volumes[k], self.lengths, ci, centres, size, ds.sampler.pad_mode,
                                    ds.sampler.key_pad_value(k))
        out["centre"] = centres
        if "positive" in plans:
            out["positive"] = plans["positive"].to(self.device)
        out["case_id"] = [self.ids[int(n)] for n in plans["case_index"]]
        out["case_index"] = ci
        return out

    @property
    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.volumes.values())


def _numpy(x):
    if torch.is_tensor(x):
        return x.detach().cpu().numpy()
    return x


def resident_volumes(dataset, device) -> ResidentVolumes:
    """The dataset's volumes on `device`, copied there once and kept on the dataset."""
    device = torch.device(device)
    cached = getattr(dataset, "_resident", None)
    if cached is None or cached.device != device:
        cached = ResidentVolumes(dataset, device)
        dataset._resident = cached
    return cached


def supports_device_batches(dataset) -> bool:
    return callable(getattr(dataset, "plan", None)) and callable(getattr(dataset, "device_batch", None))


def resident_bytes(dataset) -> int:
    """Bytes the dataset's volumes take on a device (all patch datasets it holds), without copying them."""
    parts = getattr(dataset, "patch_datasets", None)
    datasets = parts() if callable(parts) else [dataset]
    total = 0
    for ds in datasets:
        keys = ds.input_keys + ds.target_keys
        shapes = [tuple(np.shape(c[keys[0]])[1:]) for c in ds.cases]
        biggest = int(np.prod([max(s[a] for s in shapes) for a in range(len(shapes[0]))]))
        for k in keys:
            first = _numpy(ds.cases[0][k])
            total += len(ds.cases) * int(first.shape[0]) * biggest * np.dtype(first.dtype).itemsize
    return total


class _Plans(torch.utils.data.Dataset):
    """The dataset seen through its plans: what DataLoader workers compute on the device path."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.dataset.plan(i)


def device_batches(dataset, sampler, batch_size: int, device, num_workers: int = 0,
                   seed: int = 0) -> Iterator[dict]:
    """Endless batches on `device` for the index stream of `sampler`: the batches the trainer's DataLoader
    would give for the same indices, cut on the device."""
    loader = torch.utils.data.DataLoader(
        _Plans(dataset), batch_size=batch_size, sampler=sampler, num_workers=num_workers,
        persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed))
    for plans in loader:
        yield dataset.device_batch(plans, device)
