"""medgen.data.writer: predictions come back in exactly the source geometry."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from medgen.data.presets import load_transforms
from medgen.data.writer import write_prediction
from medgen.errors import ConfigError, MedgenError

SHAPE = (20, 24, 16)


def _smooth(shape=SHAPE):
    i, j, k = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    return (np.sin(i / 5.0) + np.cos(j / 6.0) + k / 10.0).astype(np.float32)


def _oblique_lps_affine():
    th = 0.3
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    a = np.eye(4)
    a[:3, :3] = np.diag([-1, -1, 1]) @ rot @ np.diag([1.2, 0.9, 2.0])
    a[:3, 3] = [10, -20, 5]
    return a


def _write_source(path, affine, data=None, qcode=1, scode=2):
    img = nib.Nifti1Image(_smooth() if data is None else data, affine)
    img.set_qform(affine, code=qcode)
    img.set_sform(affine, code=scode)
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("affine", [np.diag([-1.0, -1.0, 1.5, 1.0]), _oblique_lps_affine()], ids=["LPS", "oblique"])
def test_orientation_and_spacing_are_inverted(tmp_path, affine):
    src = _write_source(tmp_path / "src.nii.gz", affine)
    assert nib.aff2axcodes(affine)[:2] == ("L", "P")
    t = load_transforms(image_keys=["image"], spacing=(1.5, 1.5, 1.5), orientation="RAS")
    x = t({"image": str(src)})["image"]
    assert tuple(x.shape[1:]) != SHAPE  # really resampled
    pred = x * 1.0  # "identity network": a MetaTensor op keeps the meta
    out = write_prediction(pred, src, tmp_path / "pred.nii.gz")
    s, o = nib.load(str(src)), nib.load(str(out))
    assert o.shape == s.shape
    np.testing.assert_array_equal(o.affine, s.affine)
    assert int(o.header["qform_code"]) == 1 and int(o.header["sform_code"]) == 2
    err = np.abs(o.get_fdata() - s.get_fdata())
    assert err[3:-3, 3:-3, 3:-3].max() < 0.05  # interpolation only: the image spans ~[-2, 3.5]
    assert np.corrcoef(o.get_fdata().ravel(), s.get_fdata().ravel())[0, 1] > 0.995


def test_orientation_only_is_exact(tmp_path):
    src = _write_source(tmp_path / "src.nii.gz", _oblique_lps_affine())
    x = load_transforms(image_keys=["image"])({"image": str(src)})["image"]
    out = write_prediction(x, x, tmp_path / "p.nii.gz")  # reference = the MetaTensor itself
    o, s = nib.load(str(out)), nib.load(str(src))
    np.testing.assert_array_equal(o.affine, s.affine)
    np.testing.assert_allclose(o.get_fdata(), s.get_fdata(), atol=1e-5)


def test_plain_array_in_source_space_and_dtypes(tmp_path):
    aff = np.diag([-0.8, 0.8, 3.0, 1.0])
    hu = np.linspace(-1000.4, 2000.6, np.prod(SHAPE)).reshape(SHAPE).astype(np.float32)
    src = _write_source(tmp_path / "ct.nii", aff, hu)
    out = write_prediction(torch.from_numpy(hu)[None], src, tmp_path / "o.nii.gz", dtype="int16")
    o = nib.load(str(out))
    assert o.get_data_dtype() == np.int16 and o.shape == SHAPE
    np.testing.assert_array_equal(np.asanyarray(o.dataobj), np.rint(hu).astype(np.int16))
    np.testing.assert_array_equal(o.affine, nib.load(str(src)).affine)
    mask = (hu > 0).astype(np.float32)
    out = write_prediction(mask, src, tmp_path / "m.nii.gz", dtype="uint8")
    assert nib.load(str(out)).get_data_dtype() == np.uint8
    with pytest.raises(MedgenError, match="source voxel grid"):
        write_prediction(np.zeros((4, 4, 4)), src, tmp_path / "bad.nii.gz")
    with pytest.raises(ConfigError):
        write_prediction(hu, src, tmp_path / "x.nii.gz", dtype="complex")


def test_refuses_overwrite_and_writes_atomically(tmp_path):
    src = _write_source(tmp_path / "s.nii.gz", np.eye(4))
    target = tmp_path / "out" / "p.nii.gz"
    write_prediction(_smooth(), src, target)
    with pytest.raises(MedgenError, match="p.nii.gz already exists"):
        write_prediction(_smooth() * 0, src, target)
    assert nib.load(str(target)).get_fdata().max() > 0
    write_prediction(_smooth() * 0, src, target, overwrite=True)
    assert nib.load(str(target)).get_fdata().max() == 0
    assert sorted(p.name for p in target.parent.iterdir()) == ["p.nii.gz"]  # no temp files left


def test_multichannel_and_meta_dict_reference(tmp_path):
    src = _write_source(tmp_path / "s.nii.gz", np.diag([2.0, 2.0, 2.0, 1.0]))
    x = load_transforms(image_keys=["image"])({"image": str(src)})["image"]
    two = torch.cat([x, x * 2], 0)
    meta = dict(x.meta)
    meta["filename_or_obj"] = str(tmp_path / "gone.nii.gz")  # source moved: geometry from the meta-dict
    out = write_prediction(np.asarray(two), meta, tmp_path / "two.nii.gz")
    o = nib.load(str(out))
    assert o.shape == SHAPE + (2,)
    np.testing.assert_allclose(o.get_fdata()[..., 1], 2 * _smooth(), rtol=1e-6)
    np.testing.assert_allclose(o.affine, np.diag([2.0, 2.0, 2.0, 1.0]))


def test_batched_network_output_goes_back(tmp_path):
    """What a pipeline does: DataLoader batch -> network -> (decollated) prediction -> writer."""
    from monai.data import DataLoader, Dataset, decollate_batch

    src = _write_source(tmp_path / "src.nii.gz", _oblique_lps_affine())
    t = load_transforms(image_keys=["image"], spacing=(1.5, 1.5, 1.5))
    batch = next(iter(DataLoader(Dataset([{"image": str(src)}], t), batch_size=1)))
    net = torch.nn.Conv3d(1, 1, 1, bias=False)
    torch.nn.init.constant_(net.weight, 2.0)
    with torch.no_grad():
        out = net(batch["image"])
    item = decollate_batch({"pred": out})[0]["pred"]
    for name, pred in (("batched", out), ("item", item)):
        written = nib.load(str(write_prediction(pred, src, tmp_path / f"{name}.nii.gz")))
        assert written.shape == SHAPE
        np.testing.assert_array_equal(written.affine, nib.load(str(src)).affine)
        err = np.abs(written.get_fdata() - 2 * _smooth())[3:-3, 3:-3, 3:-3]
        assert err.max() < 0.1
