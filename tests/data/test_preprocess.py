"""`medgen preprocess`: the benchmarks' resampling, cropping and brain masks as a command on any dataset."""

import json

import nibabel as nib
import numpy as np
import pytest

from medgen.cli import main
from medgen.data.check import check_dataset
from medgen.data.preprocess import preprocess_dataset, resample_block, resample_linear
from medgen.errors import DataError, MedgenError


def _dataset(root, stripped=True):
    """Two cases of 12^3 at 1 mm: t1, flair, a lesion (labels 0 / 1) and a tumour map (labels 0, 2, 4)."""
    rng = np.random.default_rng(0)
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    aff[:3, 3] = [-6, -7, -8]
    cases = []
    for i in range(2):
        brain = np.zeros((12, 12, 12), bool)
        brain[2:10, 3:11, 2:9] = True
        entry = {"id": f"c{i}", "domain": "A"}
        for k in ("t1", "flair"):
            a = (rng.random((12, 12, 12)) + 1).astype(np.float32)
            if stripped:
                a = a * brain
            nib.save(nib.Nifti1Image(a, aff), str(root / f"c{i}_{k}.nii.gz"))
            entry[k] = f"c{i}_{k}.nii.gz"
        lesion = np.zeros((12, 12, 12), np.uint8)
        lesion[3:6, 3:6, 3:6] = 1
        tumour = np.zeros((12, 12, 12), np.uint8)
        tumour[3:6, 3:6, 3:6], tumour[6:9, 6:9, 6:9] = 2, 4
        for k, a in (("lesion", lesion), ("tumour_seg", tumour)):
            nib.save(nib.Nifti1Image(a, aff), str(root / f"c{i}_{k}.nii.gz"))
            entry[k] = f"c{i}_{k}.nii.gz"
        cases.append(entry)
    (root / "dataset.json").write_text(json.dumps({"keys": {"tumour_seg": "label"}, "training": cases[:1],
                                                   "test": cases[1:]}))
    return root


def test_block_and_linear_resampling_keep_the_geometry():
    a = np.arange(6 * 6 * 6, dtype=np.float32).reshape(6, 6, 6)
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    out, new = resample_block(a, aff, 3.0, label=False)
    assert out.shape == (2, 2, 2) and out[0, 0, 0] == pytest.approx(a[:3, :3, :3].mean())
    # the new voxel (0,0,0) is centred on its block: world position of input voxel (1,1,1)
    np.testing.assert_allclose(new @ [0, 0, 0, 1], aff @ [1, 1, 1, 1])
    np.testing.assert_allclose(np.diag(new)[:3], [3, 3, 3])
    lin, new = resample_linear(a, aff, 2.0, label=False)
    assert lin.shape == (3, 3, 3) and lin[1, 1, 1] == pytest.approx(a[2, 2, 2])
    np.testing.assert_allclose(new @ [1, 1, 1, 1], aff @ [2, 2, 2, 1])  # same world point
    with pytest.raises(MedgenError, match="whole-number factor"):
        resample_block(a, aff, 2.5, label=False)


def test_preprocess_command_writes_a_checked_copy(tmp_path, capsys):
    src = _dataset(tmp_path)
    rc = main(["preprocess", str(src), str(tmp_path / "out"), "--spacing", "3", "--method", "block",
               "--brain-mask", "brain_mask"])
    assert rc == 0, capsys.readouterr()
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert [c["id"] for c in meta["training"]] == ["c0"] and meta["test"][0]["domain"] == "A"  # splits and fields
    assert meta["preprocessing"]["method"] == "block" and meta["preprocessing"]["brain_mask"]["key"] == "brain_mask"
    case = meta["training"][0]
    t1 = nib.load(tmp_path / "out" / case["t1"])
    assert t1.shape == (4, 4, 4) and np.allclose(np.diag(t1.affine)[:3], 3)
    tumour = np.asarray(nib.load(tmp_path / "out" / case["tumour_seg"]).dataobj)
    assert set(np.unique(tumour)) <= {0, 2, 4} and (tumour == 4).any()  # multi-label maps keep their labels
    brain = np.asarray(nib.load(tmp_path / "out" / case["brain_mask"]).dataobj)
    assert brain.dtype == np.uint8 and 0 < brain.mean() < 1
    assert check_dataset(tmp_path / "out").ok
    # crop to the brain: every key cropped the same way, the affine moved with it
    assert preprocess_dataset(src, tmp_path / "crop", crop_to="t1", margin=0).exists()
    crop = json.loads((tmp_path / "crop" / "dataset.json").read_text())["training"][0]
    t1c = nib.load(tmp_path / "crop" / crop["t1"])
    assert t1c.shape == (8, 8, 7) and np.allclose(t1c.affine[:3, 3], [-4, -4, -6])
    with pytest.raises(MedgenError, match="--overwrite"):
        preprocess_dataset(src, tmp_path / "crop", crop_to="t1")


def test_brain_mask_of_a_whole_head_is_refused(tmp_path):
    src = tmp_path / "head"
    src.mkdir()
    _dataset(src, stripped=False)
    with pytest.raises(DataError, match="c0_t1.nii.gz.*does not look skull-stripped"):
        preprocess_dataset(src, tmp_path / "out", brain_mask="brain_mask")
