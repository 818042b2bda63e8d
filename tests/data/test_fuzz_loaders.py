"""Malformed files from hypothesis: the loaders either return a finite image or raise DataError naming
the file - never another exception from deep inside nibabel / MONAI / torch."""
import gzip
import struct

import nibabel as nib
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medgen.data.check import check_dataset
from medgen.data.io import load_bscan, load_image
from medgen.errors import DataError

FUZZ = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _loads_or_data_error(path, **kwargs):
    try:
        image = load_image(path, **kwargs)
    except DataError as exc:
        assert str(path) in str(exc)
        return None
    assert np.isfinite(np.asarray(image)).all()
    return image


@FUZZ
@given(data=st.binary(min_size=0, max_size=600), gz=st.booleans())
def test_random_bytes(tmp_path, data, gz):
    path = tmp_path / ("x.nii.gz" if gz else "x.nii")
    path.write_bytes(gzip.compress(data) if gz else data)
    _loads_or_data_error(path)


@FUZZ
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=5),
    fill=st.sampled_from([0.0, 1.5, np.nan, np.inf, -np.inf]),
    cut=st.integers(0, 400),
)
def test_odd_arrays_and_truncation(tmp_path, shape, fill, cut):
    path = tmp_path / "a.nii.gz"
    arr = np.full(shape, fill, dtype=np.float32)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), path)
    if cut:
        data = path.read_bytes()
        path.write_bytes(data[: max(len(data) - cut, 1)])
    image = _loads_or_data_error(path, expect_dims=3)
    if image is not None:  # only a well-formed, non-empty 3D image may load
        assert image.ndim == 4 and min(image.shape) > 0 and not cut


@FUZZ
@given(field=st.sampled_from(["dim", "pixdim", "vox_offset", "datatype", "bitpix"]), value=st.integers(-2**15, 2**15 - 1))
def test_corrupted_header_fields(tmp_path, field, value):
    path = tmp_path / "h.nii"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), path)
    raw = bytearray(path.read_bytes())
    offsets = {"dim": 40, "pixdim": 76, "vox_offset": 108, "datatype": 70, "bitpix": 72}
    fmt = {"dim": "<h", "pixdim": "<f", "vox_offset": "<f", "datatype": "<h", "bitpix": "<h"}[field]
    struct.pack_into(fmt, raw, offsets[field] + (2 if field == "dim" else 0), value if fmt == "<h" else float(value))
    path.write_bytes(bytes(raw))
    _loads_or_data_error(path)


@FUZZ
@given(shape=st.lists(st.integers(1, 6), min_size=2, max_size=4), fill=st.sampled_from([0.0, 0.5, np.nan]))
def test_bscan_loader(tmp_path, shape, fill):
    path = tmp_path / "b.nii.gz"
    nib.save(nib.Nifti1Image(np.full(shape, fill, np.float32), np.eye(4)), path)
    try:
        image = load_bscan(path)
    except DataError as exc:
        assert str(path) in str(exc)
        return
    assert image.ndim == 2 and np.isfinite(image).all()


def test_check_data_names_every_bad_file(tmp_path):
    import json

    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / "good.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 0), np.float32), np.eye(4)), tmp_path / "empty.nii.gz")
    cases = [{"id": "a", "t1": "good.nii.gz"}, {"id": "b", "t1": "junk.nii.gz"}, {"id": "c", "t1": "empty.nii.gz"},
             {"id": "d", "t1": "missing.nii.gz"}]
    (tmp_path / "dataset.json").write_text(json.dumps({"keys": {"t1": "image"}, "training": cases}))
    report = check_dataset(tmp_path)
    bad = {p[0] for p in report.problems}
    assert bad == {"b", "c", "d"} and not report.ok
