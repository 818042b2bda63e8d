"""DICOM series read like NIfTI: same voxels, same RAS affine, usable as a writer reference and in check-data."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medgen.data.check import check_dataset
from medgen.data.io import load_bscan, load_header, load_image
from medgen.errors import DataError

from .dicom_series import oblique_affine, write_series


def _volume(shape=(5, 6, 7), seed=0):
    return np.random.default_rng(seed).integers(-1000, 3000, size=shape).astype(np.int16)


def _reorient_like(arr, aff_from, aff_to):
    """`arr` (on the grid of aff_from) permuted / flipped onto the grid of aff_to (same world box)."""
    ornt = nib.orientations.ornt_transform(nib.io_orientation(aff_from), nib.io_orientation(aff_to))
    return nib.orientations.apply_orientation(arr, ornt)


@pytest.mark.parametrize("flip", [(-1, -1, 1), (1, 1, 1), (1, -1, -1)])
def test_series_matches_the_same_image_as_nifti(tmp_path, flip):
    arr = _volume()
    aff = oblique_affine(flip=flip)
    write_series(tmp_path / "series", arr, aff)
    nib.save(nib.Nifti1Image(arr, aff), tmp_path / "same.nii.gz")

    dcm = load_image(tmp_path / "series")
    nii = load_image(tmp_path / "same.nii.gz")
    assert tuple(dcm.shape) == (1, 5, 6, 7)
    np.testing.assert_array_equal(dcm.numpy(), nii.numpy())
    np.testing.assert_allclose(dcm.meta["original_affine"], nii.meta["original_affine"], atol=1e-5)
    np.testing.assert_allclose(dcm.meta["spacing"], [0.8, 1.1, 2.5], atol=1e-6)
    # the header alone (first / last slice tags) gives the geometry the voxel read gives
    h = load_header(tmp_path / "series")
    assert h.shape == (5, 6, 7) and h.dtype == "16-bit signed integer"
    np.testing.assert_allclose(h.affine, dcm.meta["original_affine"], atol=1e-6)
    assert h.axcodes == load_header(tmp_path / "same.nii.gz").axcodes
    # any .dcm of the series names the whole series
    one_file = sorted((tmp_path / "series").glob("*.dcm"))[3]
    np.testing.assert_array_equal(load_image(one_file).numpy(), nii.numpy())


def test_left_handed_grid_comes_back_as_the_same_world(tmp_path):
    """A left-handed voxel grid cannot survive DICOM (slices are stacked along the normal): the series
    comes back with k reversed, and every voxel still sits at the same world position."""
    arr = _volume(seed=1)
    aff = oblique_affine(flip=(1, 1, -1))
    write_series(tmp_path / "s", arr, aff)
    dcm = load_image(tmp_path / "s")
    dcm_aff = np.asarray(dcm.meta["original_affine"])
    assert np.linalg.det(dcm_aff[:3, :3]) * np.linalg.det(aff[:3, :3]) < 0  # handedness flipped
    np.testing.assert_array_equal(dcm[0].numpy(), _reorient_like(arr, aff, dcm_aff))
    ijk = np.array([1, 2, 3, 1.0])
    world = aff @ ijk
    back = np.linalg.solve(dcm_aff, world)
    assert np.allclose(back, np.round(back), atol=1e-4)
    assert dcm[0].numpy()[tuple(np.round(back[:3]).astype(int))] == arr[1, 2, 3]


def test_writer_takes_a_series_as_reference(tmp_path):
    from medgen.data.writer import write_prediction

    arr = _volume()
    aff = oblique_affine()
    write_series(tmp_path / "series", arr, aff)
    out = write_prediction(arr.astype(np.float32) * 0.5, tmp_path / "series", tmp_path / "pred.nii.gz")
    img = nib.load(out)
    np.testing.assert_allclose(img.affine, aff, atol=1e-5)
    np.testing.assert_allclose(img.get_fdata(), arr * 0.5)
    # a MetaTensor prediction that went through orientation goes back onto the series grid
    from monai.transforms import Orientation

    loaded = load_image(tmp_path / "series")
    ras = Orientation(axcodes="RAS")(loaded)
    out2 = write_prediction(ras, tmp_path / "series", tmp_path / "pred2.nii.gz")
    np.testing.assert_allclose(nib.load(out2).get_fdata(), arr, atol=1e-3)


def test_dicom_errors_name_the_folder(tmp_path):
    arr = _volume()
    write_series(tmp_path / "two", arr, oblique_affine(), description="T1", uid_seed=1)
    write_series(tmp_path / "two", arr, oblique_affine(), description="T2", uid_seed=2, prefix="B")
    with pytest.raises(DataError, match=r"holds 2 DICOM series \(T1: 7 file\(s\)"):
        load_header(tmp_path / "two")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="folder without a DICOM series"):
        load_image(tmp_path / "empty")
    write_series(tmp_path / "gap", arr, oblique_affine())
    (tmp_path / "gap" / "IM0003.dcm").unlink()
    with pytest.raises(DataError, match="not evenly spaced"):
        load_image(tmp_path / "gap")
    (tmp_path / "junk.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    with pytest.raises(DataError, match="junk.dcm"):
        load_image(tmp_path / "junk.dcm")
    # one of two series, picked by a file of it
    t2 = load_image(tmp_path / "two" / "B0000.dcm")
    assert tuple(t2.shape) == (1, 5, 6, 7)


def test_a_dicom_key_passes_check_data(tmp_path):
    arr = np.abs(_volume())
    aff = oblique_affine()
    write_series(tmp_path / "sub01" / "t1", arr, aff)
    mask = (arr > 1000).astype(np.uint8)
    nib.save(nib.Nifti1Image(mask, aff), tmp_path / "sub01" / "mask.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({
        "keys": {"t1": "image", "mask": "label"}, "spatial_dims": 3,
        "training": [{"id": "sub01", "t1": "sub01/t1", "mask": "sub01/mask.nii.gz"}]}))
    report = check_dataset(tmp_path)
    assert report.ok, report.format()
    assert report.rows[0]["shape"] == (5, 6, 7) and report.rows[0]["max"] == float(arr.max())
    # the mask on another grid is caught against the series' geometry
    nib.save(nib.Nifti1Image(mask, oblique_affine(origin=(0, 0, 0))), tmp_path / "sub01" / "mask.nii.gz")
    assert any("affine differs from 't1'" in p[3] for p in check_dataset(tmp_path).problems)


def test_bscan_from_a_single_slice_series(tmp_path):
    grey = np.random.default_rng(3).integers(0, 255, size=(20, 30, 1)).astype(np.int16)
    write_series(tmp_path / "oct", grey, np.eye(4), modality="OPT")
    np.testing.assert_array_equal(load_bscan(tmp_path / "oct"), grey[..., 0].astype(np.float32))
