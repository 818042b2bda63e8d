"""medgen.data.io: loading with clear errors and the OCT layouts."""

from __future__ import annotations

import gzip
import sys

import nibabel as nib
import numpy as np
import pytest

from medgen.data.io import load_bscan, load_header, load_image
from medgen.errors import DataError


def _save(path, data, affine=None):
    affine = np.diag([1.5, 1.0, 2.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def test_load_image_metadata_and_channel_first(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    p = _save(tmp_path / "a.nii.gz", data)
    img = load_image(p)
    assert tuple(img.shape) == (1, 4, 5, 6)
    np.testing.assert_array_equal(img[0].numpy(), data)
    np.testing.assert_allclose(img.meta["original_affine"], np.diag([1.5, 1.0, 2.0, 1.0]))
    np.testing.assert_allclose(img.affine.numpy(), np.diag([1.5, 1.0, 2.0, 1.0]))
    np.testing.assert_allclose(img.meta["spacing"], [1.5, 1.0, 2.0])
    assert img.meta["filename_or_obj"].endswith("a.nii.gz")
    assert tuple(load_image(p, ensure_channel_first=False).shape) == (4, 5, 6)


def test_header_is_cheap_and_right(tmp_path):
    p = _save(tmp_path / "h.nii", np.zeros((3, 4, 5), np.int16), np.diag([-2.0, -2.0, 2.0, 1.0]))
    h = load_header(p)
    assert h.shape == (3, 4, 5) and h.dtype == "int16" and h.axcodes == ("L", "P", "S")
    assert h.spacing == (2.0, 2.0, 2.0)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image(tmp_path / "nope.nii.gz")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_image(tmp_path / "empty.nii.gz")


def test_truncated_file_is_a_data_error(tmp_path):
    p = _save(tmp_path / "t.nii.gz", np.random.default_rng(0).random((16, 16, 16)).astype(np.float32))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="t.nii.gz"):
        load_image(p)


def test_garbage_file_is_a_data_error(tmp_path):
    p = tmp_path / "g.nii.gz"
    p.write_bytes(gzip.compress(b"not a nifti at all" * 50))
    with pytest.raises(DataError, match="g.nii.gz"):
        load_image(p)


def test_nonfinite_voxels(tmp_path):
    data = np.ones((4, 4, 4), np.float32)
    data[1, 1, 1] = np.nan
    data[2, 2, 2] = np.inf
    p = _save(tmp_path / "n.nii.gz", data)
    with pytest.raises(DataError, match="1 NaN and 1 Inf"):
        load_image(p)
    img = load_image(p, allow_nonfinite=True)
    assert int(np.isnan(img.numpy()).sum()) == 1


def test_zero_size_and_wrong_dims(tmp_path):
    p = _save(tmp_path / "z.nii", np.zeros((4, 0, 3), np.float32))
    with pytest.raises(DataError, match="zero-size"):
        load_image(p)
    p2 = _save(tmp_path / "two.nii.gz", np.zeros((8, 9), np.float32))
    with pytest.raises(DataError, match=r"expected a 3D image, got 2D shape \(8, 9\)"):
        load_image(p2, expect_dims=3)
    assert tuple(load_image(p2, expect_dims=2).shape) == (1, 8, 9)


def test_sitk_mha_matches_nifti_geometry(tmp_path):
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK is not installed (only MetaImage / NRRD reading needs it)")

    arr_ijk = np.random.default_rng(1).random((5, 6, 7)).astype(np.float32)
    img = sitk.GetImageFromArray(np.transpose(arr_ijk, (2, 1, 0)))  # sitk wants (z, y, x)
    img.SetSpacing((1.0, 2.0, 3.0))
    img.SetOrigin((10.0, 20.0, 30.0))
    sitk.WriteImage(img, str(tmp_path / "a.mha"))
    loaded = load_image(tmp_path / "a.mha")
    np.testing.assert_array_equal(loaded[0].numpy(), arr_ijk)
    # LPS origin (10, 20, 30) is RAS (-10, -20, 30); x and y axes flip
    np.testing.assert_allclose(loaded.meta["original_affine"],
                               [[-1, 0, 0, -10], [0, -2, 0, -20], [0, 0, 3, 30], [0, 0, 0, 1]])
    assert load_header(tmp_path / "a.mha").axcodes == ("L", "P", "S")


def test_itk_files_without_simpleitk_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # what `import SimpleITK` sees where it is not installed
    path = tmp_path / "a.mha"
    path.write_bytes(b"ObjectType = Image\n")
    for read in (load_image, load_header):
        with pytest.raises(DataError, match=r"a\.mha: reading DICOM series and MetaImage / NRRD files needs SimpleITK"):
            read(path)
    nifti = _save(tmp_path / "b.nii.gz", np.zeros((4, 5, 6), np.float32))  # NIfTI never needs it
    assert tuple(load_image(nifti).shape) == (1, 4, 5, 6)


def test_bscan_layouts(tmp_path):
    import skimage.io

    rng = np.random.default_rng(2)
    grey = rng.random((20, 30)).astype(np.float32)
    _save(tmp_path / "last.nii.gz", np.repeat(grey[..., None], 3, axis=-1))
    _save(tmp_path / "first.nii.gz", np.repeat(grey[None], 3, axis=0))
    _save(tmp_path / "plain.nii.gz", grey)
    for name in ("last", "first", "plain"):
        out = load_bscan(tmp_path / f"{name}.nii.gz")
        assert out.shape == (20, 30) and out.dtype == np.float32
        np.testing.assert_allclose(out, grey, atol=1e-6)
    u8 = (grey * 255).astype(np.uint8)
    skimage.io.imsave(str(tmp_path / "b.png"), u8, check_contrast=False)
    np.testing.assert_array_equal(load_bscan(tmp_path / "b.png"), u8.astype(np.float32))
    skimage.io.imsave(str(tmp_path / "b.tif"), np.stack([u8] * 3, -1), check_contrast=False)
    np.testing.assert_array_equal(load_bscan(tmp_path / "b.tif"), u8.astype(np.float32))
    colour = np.stack([grey, 1 - grey, grey], axis=-1)
    _save(tmp_path / "colour.nii.gz", colour)
    with pytest.raises(DataError, match="channels differ"):
        load_bscan(tmp_path / "colour.nii.gz")
