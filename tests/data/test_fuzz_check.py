"""check-data on malformed datasets and load_image's dimensions: problems reported, never a traceback."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medgen.cli import main
from medgen.data.check import check_dataset
from medgen.data.io import load_header, load_image
from medgen.errors import DataError

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _files(root):
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), root / "ok.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((4, 4, 0), np.float32), np.eye(4)), root / "zero.nii.gz")
    nan = np.ones((4, 4, 4), np.float32)
    nan[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), root / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((4, 4), np.float32), np.eye(4)), root / "flat.nii.gz")
    rgb = np.zeros((4, 4, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), root / "rgb.nii.gz")
    (root / "junk.nii.gz").write_bytes(b"\x1f\x8b garbage")
    (root / "empty.nii").write_bytes(b"")
    (root / "folder.nii.gz").mkdir(exist_ok=True)
    (root / "table.csv").write_text("")


MALFORMED = [
    "",
    "[]",
    "null",
    "42",
    '{"training": 5}',
    '{"training": [5, "x.nii.gz", null]}',
    '{"keys": [1, 2], "training": []}',
    '{"keys": {"t1": 5}, "training": [{"id": "a", "t1": "ok.nii.gz"}]}',
    '{"training": [{"id": ["a"], "t1": "ok.nii.gz"}]}',
    '{"training": [{"id": {"x": 1}}]}',
    '{"keys": {"t1": "image"}, "training": [{"id": "a", "t1": 3}, {"id": "b", "t1": null}, {"id": "c", "t1": []}]}',
    '{"keys": {"t1": "image"}, "training": [{"id": "a", "t1": [["ok.nii.gz"]]}, {"id": "b", "t1": ["ok.nii.gz", "nan.nii.gz"]}]}',
    '{"keys": {"t1": "image"}, "training": [{"id": "a", "t1": "a\\u0000b.nii.gz"}, {"id": "b", "t1": "' + "x" * 5000 + '"}]}',
    '{"keys": {"t1": "image", "m": "label"}, "spatial_dims": 3, "training": [{"id": "a", "t1": "flat.nii.gz", "m": "zero.nii.gz"}]}',
    '{"keys": {"t1": "image"}, "spatial_dims": "3", "label_values": [0, 1], "training": [{"id": "a", "t1": "rgb.nii.gz"}]}',
    '{"label_values": {"seg": "0,1"}, "training": [{"id": "a", "seg": "junk.nii.gz", "t1": "empty.nii"}]}',
    '{"label_values": {"seg": [0, "x", null]}, "training": [{"id": "a", "seg": "nan.nii.gz"}]}',
    '{"keys": {"t1": "image"}, "training": [{"id": "a", "t1": "folder.nii.gz"}, {"id": "a", "t1": "ok.nii.gz"}]}',
    '{"keys": {"x": "tabular"}, "tables": ["a"], "training": [{"id": "a", "x": "table.csv"}]}',
    '{"tables": {"expr": 5, "labels": "missing.tsv", "more": "table.csv"}}',
    '{"training": [{"id": "a", "label": {"x": 1}, "mask": "nan.nii.gz"}], "spatial_dims": true}',
]


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_datasets_are_problems_not_tracebacks(tmp_path, capsys, text):
    _files(tmp_path)
    (tmp_path / "dataset.json").write_text(text)
    report = check_dataset(tmp_path)
    assert not report.ok
    assert report.format() and report.summary()
    assert main(["check-data", str(tmp_path)]) == 1
    assert main(["check-data", str(tmp_path), "--summary"]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_named_problems_of_the_malformed_inputs(tmp_path):
    _files(tmp_path)

    def problems(text):
        (tmp_path / "dataset.json").write_text(text)
        return "\n".join(p[3] for p in check_dataset(tmp_path).problems)

    assert "dataset JSON must be an object" in problems("[]")
    assert "'training' must be a list of cases, got int" in problems('{"training": 5}')
    text = problems(MALFORMED[12])
    assert "it contains a NUL character" in text and "'... (File name too long)" in text
    text = problems(MALFORMED[13])
    assert "expected a 3D image, got 2D shape (4, 4)" in text and "zero-size axis" in text
    text = problems(MALFORMED[14])
    assert "'spatial_dims' must be 2 or 3" in text and "'label_values' must map" in text and "not a plain number" in text
    assert "'tables' must map names to files" in problems(MALFORMED[18])
    assert "empty list of paths" in problems(MALFORMED[10])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True) |
    st.sampled_from(["ok.nii.gz", "nan.nii.gz", "zero.nii.gz", "flat.nii.gz", "junk.nii.gz", "rgb.nii.gz",
                     "missing.nii.gz", "folder.nii.gz", "../x", "", "image", "label", "tabular", "t1", "id"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["id", "t1", "mask", "seg", "label", "keys", "training", "test", "spatial_dims",
                         "label_values", "tables", "image"]), inner, max_size=4),
    max_leaves=12)


@FUZZ
@given(data=st.dictionaries(st.sampled_from(["keys", "training", "validation", "test", "spatial_dims",
                                             "label_values", "tables", "name"]), json_values, max_size=6))
def test_fuzzed_dataset_json_never_raises(tmp_path, data):
    _files(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    report = check_dataset(tmp_path, keys=None)
    report.format()
    report.summary()


# ----- load_image(expect_dims=3) never returns more than 3 spatial axes --------------------------------------


@pytest.mark.parametrize("shape,expected", [
    ((3, 4, 5, 1, 2), (2, 3, 4, 5)),  # NIfTI vector image (dim 5 = components): 2 channels
    ((3, 4, 5, 1, 1), (1, 3, 4, 5)),
    ((3, 4, 5, 1, 1, 2), (2, 3, 4, 5)),
    ((3, 4, 5, 2), (2, 3, 4, 5)),
    ((3, 4, 5, 2, 2), None),  # time and components: refused
    ((3, 4, 5, 2, 1, 3), None),
])
def test_extra_nifti_axes(tmp_path, shape, expected):
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(shape, np.float32), np.eye(4)), path)
    if expected is None:
        with pytest.raises(DataError, match="axes beyond the 3 spatial ones"):
            load_image(path, expect_dims=3)
    else:
        assert tuple(load_image(path, expect_dims=3).shape) == expected


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.lists(st.integers(1, 3), min_size=1, max_size=7), dims=st.sampled_from([2, 3]))
def test_expect_dims_is_what_comes_back(tmp_path, shape, dims):
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(shape, np.float32), np.eye(4)), path)
    try:
        img = load_image(path, expect_dims=dims)
    except DataError as err:
        assert str(path) in str(err)
        return
    assert img.ndim == dims + 1, (shape, tuple(img.shape))
    assert tuple(img.shape[1:]) == tuple(load_header(path).spatial_shape)
