"""Case ids become output file names (`<id>_<output>.nii.gz`, previews): they must be plain names."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medgen.cli import main
from medgen.data.check import check_dataset
from medgen.data.datalist import case_id_problem, check_case_id, load_datalist
from medgen.errors import DataError

BAD = ["../evil", "/abs", "a/b", "..", ".", "a\\b", "", "  ", "a\x00b", "tab\there", "C:evil", "x" * 201]
GOOD = ["sub-01_ses-1", "case 1", "TCGA-DU-7294", "patient07", "a.b", "..x", 7]


@pytest.mark.parametrize("cid", BAD)
def test_unsafe_ids_are_refused(cid):
    assert case_id_problem(cid)
    with pytest.raises(DataError, match="case id"):
        check_case_id(cid, "dataset.json")


@pytest.mark.parametrize("cid", GOOD)
def test_plain_ids_pass(cid):
    assert case_id_problem(cid) is None and check_case_id(cid) == str(cid)


@pytest.mark.parametrize("cid", [["a"], {"x": 1}, True, 1.5])
def test_ids_of_the_wrong_type(cid):
    assert "must be a string" in case_id_problem(cid)


def _dataset(root, ids):
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), root / "t1.nii.gz")
    cases = [{"id": cid, "t1": "t1.nii.gz"} for cid in ids]
    (root / "dataset.json").write_text(json.dumps({"keys": {"t1": "image"}, "training": cases}))
    return root


@pytest.mark.parametrize("cid", ["../evil", "/abs", "a/b", ".."])
def test_load_datalist_names_the_json_and_the_id(tmp_path, cid):
    _dataset(tmp_path, ["good", cid])
    with pytest.raises(DataError) as info:
        load_datalist(tmp_path)
    assert str(tmp_path / "dataset.json") in str(info.value) and repr(cid) in str(info.value)


def test_check_data_reports_every_bad_id_and_checks_the_rest(tmp_path, capsys):
    _dataset(tmp_path, ["good", "../evil", "/abs", "a/b", ".."])
    report = check_dataset(tmp_path)
    bad = [p for p in report.problems if p[1] == "id"]
    assert len(bad) == 4 and all("case id" in p[3] for p in bad), report.problems
    assert len(report.rows) == 5  # the files of every case were still checked
    assert main(["check-data", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert "'../evil' contains a path separator" in out.out and "Traceback" not in out.err
