"""medgen.data.device_patches: patches cut from device-resident volumes are bit-identical to PatchDataset's own
(CPU) patches for the same (seed, i), in every sampling and padding mode, and the trainer's loader gives the same
batches either way."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from medgen.data.device_patches import device_batches, gather_patches, resident_bytes
from medgen.data.mixed_domain import MixedDomainDataset
from medgen.data.patches import PatchDataset, PatchSampler, crop_centered
from medgen.engine.sampling import StepSampler

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _case(cid, shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, *shape)).astype(np.float32)  # two channels, every voxel distinct
    fg = np.zeros((1, *shape), np.float32)
    fg[(slice(None),) + tuple(slice(1, s - 1) for s in shape)] = 1
    lesion = np.zeros((1, *shape), np.uint8)
    lesion[(slice(None),) + tuple(slice(s // 2, s // 2 + 2) for s in shape)] = 1
    return {"id": cid, "x": x, "y": x[:1] * 3.0, "fg": fg, "lesion": lesion}


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if torch.is_tensor(a[k]):
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            assert torch.equal(a[k].cpu(), b[k].cpu()), k
        else:
            assert a[k] == b[k], k


CASES_3D = [_case("a", (12, 10, 9), 0), _case("b", (7, 11, 6), 1), _case("c", (1, 8, 8), 2)]  # one flat axis


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode,pad", [("uniform", "reflect"), ("foreground", "constant"),
                                      ("lesion_balanced", "edge"), ("lesion_balanced", "reflect")])
def test_device_batches_equal_the_cpu_items(device, mode, pad):
    """Patches larger than the volumes (reflect beyond one period), a valid-convolution target window, cases of
    different shapes (one with an axis of length 1), a per-key constant pad value, weighted case draws."""
    sampler = PatchSampler((16, 14, 12), (6, 4, 2), mode=mode, fg_key="fg", lesion_key="lesion", pos_fraction=0.4,
                           pad_mode=pad, pad_value={"x": -1.5, "lesion": 0.0})
    ds = PatchDataset(CASES_3D, sampler, ["x"], ["y", "lesion"], seed=3, length=1000, case_weights=[1, 2, 1])
    for indices in ([0, 1, 2, 3], [17, 999, 500, 4, 4, 250]):
        cpu = default_collate([ds[i] for i in indices])
        dev = ds.device_batch(default_collate([ds.plan(i) for i in indices]), device)
        assert all(v.device.type == device for v in dev.values() if torch.is_tensor(v))
        _same(cpu, dev)


@pytest.mark.parametrize("device", DEVICES)
def test_2d_foreground_as_oct(device):
    img = np.arange(40 * 30, dtype=np.float32).reshape(1, 40, 30) / 7.0
    band = np.zeros_like(img)
    band[:, 5:12] = 1
    cases = [{"id": "s0", "image": img, "retina": band}, {"id": "s1", "image": img[:, :20] * -1, "retina": band[:, :20]}]
    ds = PatchDataset(cases, PatchSampler([16, 16], mode="foreground", fg_key="retina"), ["image"], seed=0)
    indices = list(range(0, 64))
    _same(default_collate([ds[i] for i in indices]), ds.device_batch(default_collate([ds.plan(i) for i in indices]),
                                                                      device))


def test_gather_matches_crop_centered_everywhere():
    """Every centre of a small 2D image, every pad mode, a window wider than the image."""
    img = np.arange(35, dtype=np.float32).reshape(1, 5, 7)
    vol = torch.from_numpy(img)[None]
    lengths = torch.tensor([[5, 7]])
    for pad in ("reflect", "edge", "constant"):
        centres = torch.tensor([(i, j) for i in range(-2, 7) for j in range(-2, 9)])
        got = gather_patches(vol, lengths, torch.zeros(len(centres), dtype=torch.int64), centres, (13, 4), pad, -9.0)
        for n, c in enumerate(centres.tolist()):
            np.testing.assert_array_equal(got[n].numpy(), crop_centered(img, c, (13, 4), pad, -9.0))


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_domain_batches_equal(device):
    sampler = PatchSampler(8, 4, mode="lesion_balanced", fg_key="fg", lesion_key="lesion")
    unlabelled = PatchSampler(8, 4, mode="foreground", fg_key="fg")
    src = PatchDataset(CASES_3D[:2], sampler, ["x"], ["lesion", "fg"], seed=1)
    tgt = PatchDataset(CASES_3D[1:], unlabelled, ["x"], ["fg"], seed=2)
    adv = PatchDataset(CASES_3D[:2], unlabelled, ["x"], ["fg"], seed=4)
    ds = MixedDomainDataset(src, tgt, adv)
    indices = [5, 6, 7, 100]
    cpu = default_collate([ds[i] for i in indices])
    dev = ds.device_batch(default_collate([ds.plan(i) for i in indices]), device)
    assert cpu.keys() == dev.keys()
    for part in cpu:
        _same(cpu[part], dev[part])
    assert resident_bytes(ds) == sum(v.numel() * v.element_size()
                                     for d in (src, tgt, adv) for v in d._resident.volumes.values())


def test_loader_stream_equals_the_dataloader_and_resumes(tmp_path):
    """The device loader yields, batch for batch, what the trainer's DataLoader yields, from any start batch
    and with workers computing the plans."""
    ds = PatchDataset(CASES_3D, PatchSampler(8, mode="foreground", fg_key="fg"), ["x"], ["y"], seed=9)
    ref = iter(torch.utils.data.DataLoader(ds, batch_size=3, sampler=StepSampler(ds, 3, seed=9)))
    expect = [next(ref) for _ in range(6)]
    fast = device_batches(ds, StepSampler(ds, 3, seed=9), 3, "cpu")
    for want in expect:
        _same(want, next(fast))
    resumed = device_batches(ds, StepSampler(ds, 3, seed=9, start_batch=4), 3, "cpu", num_workers=2)
    _same(expect[4], next(resumed))
    _same(expect[5], next(resumed))
