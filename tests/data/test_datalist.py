"""medgen.data.datalist: dataset.json validation and building from folders."""

from __future__ import annotations

import json

import pytest

from medgen.data.datalist import datalist_from_folder, load_datalist, save_datalist
from medgen.errors import DataError


def _touch(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def _dataset(tmp_path, cases, keys=None, **extra):
    for split in ("training", "validation", "test"):
        for c in cases.get(split, []):
            for k, v in c.items():
                if k != "id" and isinstance(v, str) and v.endswith(".nii.gz"):
                    _touch(tmp_path / v)
    data = {"name": "toy", "keys": keys or {"t1": "image", "mask": "label"}, **cases, **extra}
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    return tmp_path


def test_load_resolves_paths_and_keeps_metadata(tmp_path):
    ds = _dataset(tmp_path, {"training": [{"id": "a", "t1": "a/t1.nii.gz", "mask": "a/mask.nii.gz", "domain": "A"}],
                             "test": [{"id": "b", "t1": "b/t1.nii.gz", "mask": "b/mask.nii.gz"}]},
                  simulated={"dose": 0.25})
    dl = load_datalist(ds, keys=["t1", "mask"])
    assert [c["id"] for c in dl.training] == ["a"] and dl.validation == [] and len(dl.test) == 1
    assert dl.training[0]["t1"] == str((tmp_path / "a/t1.nii.gz").resolve())
    assert dl.training[0]["domain"] == "A"  # non-path values stay as they are
    assert dl.metadata["simulated"] == {"dose": 0.25} and dl.name == "toy"
    assert dl.kind("mask") == "label" and dl.kind("t1") == "image"
    assert load_datalist(tmp_path / "dataset.json").training[0]["id"] == "a"


def test_missing_key_names_case_and_keys_present(tmp_path):
    ds = _dataset(tmp_path, {"training": [{"id": "x", "t1": "x_t1.nii.gz", "mask": "x_mask.nii.gz"}]})
    with pytest.raises(DataError, match=r"case 'x' in dataset.json has no key 't2'; keys present: t1, mask"):
        load_datalist(ds, keys=["t1", "t2"])


def test_missing_file_names_case_key_path(tmp_path):
    ds = _dataset(tmp_path, {"training": [{"id": "x", "t1": "x_t1.nii.gz", "mask": "x_mask.nii.gz"}]})
    (tmp_path / "x_mask.nii.gz").unlink()
    with pytest.raises(DataError, match=r"x_mask.nii.gz.*missing file for case 'x' key 'mask'"):
        load_datalist(ds)
    assert load_datalist(ds, check_files=False).training[0]["mask"].endswith("x_mask.nii.gz")


def test_bad_json_and_missing_json(tmp_path):
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="dataset.json: cannot parse"):
        load_datalist(tmp_path)
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError, match="no dataset.json"):
        load_datalist(tmp_path / "sub")


def test_generated_ids_and_duplicates(tmp_path):
    ds = _dataset(tmp_path, {"training": [{"t1": "c1/t1.nii.gz"}, {"t1": "c2/t1.nii.gz"}, {"t1": "solo_t1.nii.gz"}]},
                  keys={"t1": "image"})
    ids = [c["id"] for c in load_datalist(ds).training]
    assert ids == ["c1_t1", "c2_t1", "solo_t1"]
    _dataset(tmp_path, {"training": [{"id": "a", "t1": "c1/t1.nii.gz"}], "test": [{"id": "a", "t1": "c2/t1.nii.gz"}]},
             keys={"t1": "image"})
    with pytest.raises(DataError, match="'a' appears twice"):
        load_datalist(tmp_path)


def test_from_folder_groups_by_case_and_splits(tmp_path):
    for i in range(10):
        _touch(tmp_path / f"sub{i:02d}_t1.nii.gz")
        _touch(tmp_path / "nested" / f"sub{i:02d}_mask.nii.gz")
    dl = datalist_from_folder(tmp_path, {"t1": "*_t1.nii.gz", "mask": "*_mask.nii.gz"}, split=(0.8, 0.1, 0.1), seed=3)
    assert (len(dl.training), len(dl.validation), len(dl.test)) == (8, 1, 1)
    ids = sorted(c["id"] for c in dl.all_cases)
    assert ids == [f"sub{i:02d}" for i in range(10)]
    case = dl.all_cases[0]
    assert case["t1"].endswith(f"{case['id']}_t1.nii.gz") and case["mask"].endswith(f"{case['id']}_mask.nii.gz")
    assert dl.keys == {"t1": "image", "mask": "label"}
    again = datalist_from_folder(tmp_path, {"t1": "*_t1.nii.gz", "mask": "*_mask.nii.gz"}, seed=3)
    assert [c["id"] for c in again.test] == [c["id"] for c in dl.test]
    # round trip through save / load, with relative paths in the file
    path = save_datalist(dl, tmp_path)
    text = json.loads(path.read_text())
    assert not text["training"][0]["t1"].startswith("/")
    back = load_datalist(tmp_path, keys=["t1", "mask"])
    assert [c["id"] for c in back.training] == [c["id"] for c in dl.training]
    assert back.training[0]["mask"] == dl.training[0]["mask"]


def test_from_folder_folder_patterns_and_incomplete(tmp_path):
    for c in ("case0", "case1", "case2"):
        _touch(tmp_path / c / "t1.nii.gz")
    _touch(tmp_path / "case0" / "ct.nii.gz")
    _touch(tmp_path / "case1" / "ct.nii.gz")
    with pytest.raises(DataError, match="case2: no ct"):
        datalist_from_folder(tmp_path, {"t1": "*/t1.nii.gz", "ct": "*/ct.nii.gz"})
    with pytest.warns(UserWarning, match="dropping 1"):
        dl = datalist_from_folder(tmp_path, {"t1": "*/t1.nii.gz", "ct": "*/ct.nii.gz"}, missing="skip",
                                  split=(1, 0, 0))
    assert sorted(c["id"] for c in dl.training) == ["case0", "case1"]


def test_from_folder_never_splits_three_subjects_three_zero_zero(tmp_path):
    import warnings as _warnings

    for c in ("s1", "s2", "s3"):
        _touch(tmp_path / f"{c}_t1.nii.gz")
    with _warnings.catch_warnings():
        _warnings.simplefilter("error")  # nothing to warn about: every split gets one subject
        dl = datalist_from_folder(tmp_path, {"t1": "*_t1.nii.gz"}, split=(0.8, 0.1, 0.1))
    assert (len(dl.training), len(dl.validation), len(dl.test)) == (1, 1, 1)
    (tmp_path / "s3_t1.nii.gz").unlink()
    with pytest.warns(UserWarning, match=r"leave the test split\(s\) empty \(training 1, validation 1, test 0\)"):
        datalist_from_folder(tmp_path, {"t1": "*_t1.nii.gz"})
