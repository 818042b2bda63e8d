"""benchmarks/unpaired_translation.py's real part: it skips with its reason when the real data is absent, and its
data preparation (masks inside the skull, 2 mm RAS copies, the dataset.json's domains and held-out CT) on a tiny
synthetic stand-in of the real folder's layout."""
import json

import nibabel as nib
import numpy as np
import pytest

from tests.child_env import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/unpaired_translation.py", "unpaired_benchmark_under_test")


def _skull(shape, radius, width: int = 2) -> np.ndarray:
    """A display-scaled CT stand-in: a bright ring (240) `width` voxels thick with a gap, black inside, a grey
    insert (150)."""
    x, y = np.meshgrid(np.arange(shape[0]) - shape[0] / 2, np.arange(shape[1]) - shape[1] / 2, indexing="ij")
    r = np.hypot(x, y)
    ring = (r >= radius) & (r < radius + width) & ~((np.abs(y) < 2) & (x > 0))  # open on one side, as a
    # thin skull is in many slices
    ct = np.where(ring, 240.0, 0.0)
    ct[(np.abs(x) < 3) & (np.abs(y) < 3)] = 150.0
    return np.repeat(ct[:, :, None], shape[2], axis=2).astype(np.float32)


def test_real_part_skips_with_its_reason_when_the_data_is_absent(bench, tmp_path, capsys):
    absent = tmp_path / "no_data"
    assert bench.main(["--part", "real", "--data", str(absent), "--out", str(tmp_path / "out")]) == 0
    said = capsys.readouterr().out
    assert "real part skipped" in said and str(absent) in said
    assert not (tmp_path / "out").exists()  # nothing measured, nothing written


def test_inside_the_skull_even_where_its_ring_is_open(bench):
    ct = _skull((48, 48, 4), 16)
    mask = bench.intracranial_mask(ct, bench.BONE_LEVEL)
    c = 24
    assert mask[c, c].all() and mask[c + 8, c].all()  # the insert and the black interior
    assert not mask[ct > bench.BONE_LEVEL].any() and not mask[0, 0].any() and not mask[c + 19, c].any()
    assert mask[c + 14, c].all() and mask[c + 17, c].all()  # at the gap: the hull bridges it, nothing leaks out


def test_axial_slices_keep_the_large_slices_on_a_background_of_minus_one(bench):
    vol = np.full((20, 30, 5), 255.0, np.float32)
    mask = np.zeros(vol.shape, np.uint8)
    mask[5:15, 5:25, :3] = 1
    mask[9:11, 9:11, 3] = 1  # slice 3 holds 2 % of the largest slice's area, slice 4 none: both left out
    s = bench.axial_slices(vol, mask, size=32)
    assert s.shape == (3, 32, 32)
    assert s.max() == 1.0 and s.min() == -1.0 and int((s[0] == 1.0).sum()) == 200


def test_prepare_real_writes_two_unpaired_domains_and_holds_a_ct_out(bench, tmp_path):
    data = tmp_path / "data"
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    x, y, z = np.meshgrid(*(np.arange(n) - n / 2 for n in (40, 40, 12)), indexing="ij")
    brain = np.where((x / 14) ** 2 + (y / 16) ** 2 + (z / 8) ** 2 < 1, 100.0 + 2 * x + 50, 0.0).astype(np.float32)
    for rel in bench.REAL_MR.values():
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(brain, affine), str(data / rel))
    ct = _skull((60, 60, 12), 22, width=5).astype(np.uint8)
    for _, rel in (bench.REAL_CT_TRAIN, bench.REAL_CT_HELD_OUT):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(ct, affine), str(data / rel))
    prep = bench.prepare_real(data, tmp_path / "prep")
    ds = json.loads((prep["dataset"] / "dataset.json").read_text())
    train_ids = {e["id"]: e["domain"] for e in ds["training"]}
    assert train_ids == {**{c: "a" for c in bench.REAL_MR if c not in bench.REAL_MR_TEST}, "ct_pitch": "b"}
    assert [e["id"] for e in ds["test"]] == list(bench.REAL_MR_TEST) and all("ct" not in e for e in ds["test"])
    held, held_mask = (nib.load(str(f)) for f in prep["held_out_ct"])
    assert "ct_avm" not in json.dumps(ds) and held.shape == held_mask.shape
    img = nib.load(str(prep["dataset"] / "ct_pitch_ct.nii.gz"))
    mask = np.asarray(nib.load(str(prep["dataset"] / "ct_pitch_mask.nii.gz")).dataobj)
    assert np.allclose(img.header.get_zooms()[:3], 2.0)
    values = np.asarray(img.dataobj)
    assert values[mask == 0].max() == 0 and values[mask > 0].max() >= 100  # skull gone, the insert kept
    assert img.shape[0] < 30  # cropped to the inside of the skull (radius 22 mm at 2 mm: about 22 voxels)
