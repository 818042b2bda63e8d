"""medgen.data.check: every crafted problem is reported, a clean dataset passes."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medgen.data.check import check_dataset, main
from medgen.errors import DataError

AFF = np.diag([1.0, 1.0, 1.0, 1.0])


def _img(path, data, affine=AFF):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path.name


def _good_case(root, cid, shape=(8, 8, 8)):
    rng = np.random.default_rng(0)
    t1 = rng.random(shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[2:6, 2:6, 2:6] = 1
    _img(root / cid / "t1.nii.gz", t1)
    _img(root / cid / "t2.nii.gz", t1 * 2)
    _img(root / cid / "mask.nii.gz", mask)
    return {"id": cid, "t1": f"{cid}/t1.nii.gz", "t2": f"{cid}/t2.nii.gz", "mask": f"{cid}/mask.nii.gz"}


def _write(root, training, **extra):
    (root / "dataset.json").write_text(json.dumps(
        {"name": "t", "keys": {"t1": "image", "t2": "image", "mask": "label"}, "training": training, **extra}))
    return root


def _messages(report):
    return [(c, k, m) for c, k, _, m in report.problems]


def test_clean_dataset_is_ok(tmp_path, capsys):
    ds = _write(tmp_path, [_good_case(tmp_path, "a"), _good_case(tmp_path, "b")])
    rep = check_dataset(ds)
    assert rep.ok, rep.format()
    assert len(rep.rows) == 6
    row = rep.rows[0]
    assert row["shape"] == (8, 8, 8) and row["orient"] == "RAS" and row["dtype"] == "float32"
    assert 0 <= row["min"] <= row["p1"] <= row["p99"] <= row["max"] <= 1 and row["nonfinite"] == 0
    assert main(ds) == 0
    assert "no problems found" in capsys.readouterr().out


def test_every_crafted_problem_is_reported(tmp_path, capsys):
    cases = [_good_case(tmp_path, c) for c in ("missing", "trunc", "shape", "affine", "nan", "empty", "nonbin", "flat",
                                               "nokey")]
    (tmp_path / "missing" / "t2.nii.gz").unlink()
    p = tmp_path / "trunc" / "t1.nii.gz"
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) - 40])
    _img(tmp_path / "shape" / "t2.nii.gz", np.zeros((8, 8, 7), np.float32))
    _img(tmp_path / "affine" / "t2.nii.gz", np.ones((8, 8, 8), np.float32), np.diag([1.0, 1.0, 1.1, 1.0]))
    bad = np.ones((8, 8, 8), np.float32)
    bad[0, 0, :3] = np.nan
    _img(tmp_path / "nan" / "t2.nii.gz", bad)
    _img(tmp_path / "empty" / "mask.nii.gz", np.zeros((8, 8, 8), np.uint8))
    nb = np.zeros((8, 8, 8), np.uint8)
    nb[1, 1, 1], nb[2, 2, 2] = 1, 2
    _img(tmp_path / "nonbin" / "mask.nii.gz", nb)
    _img(tmp_path / "flat" / "t2.nii.gz", np.ones((8, 8), np.float32))
    del cases[-1]["t2"]
    ds = _write(tmp_path, cases, spatial_dims=3)
    rep = check_dataset(ds, keys=["t1", "t2", "mask"])
    msgs = _messages(rep)
    text = "\n".join(f"{c}|{k}|{m}" for c, k, m in msgs)

    def has(case, key, fragment):
        return any(c == case and k == key and fragment in m for c, k, m in msgs)

    assert has("missing", "t2", "missing file"), text
    assert has("trunc", "t1", "truncated or corrupt"), text
    assert has("shape", "t2", "shape (8, 8, 7) differs from 't1' shape (8, 8, 8)"), text
    assert has("affine", "t2", "affine differs from 't1'"), text
    assert has("nan", "t2", "3 NaN/Inf voxels"), text
    assert has("empty", "mask", "empty mask"), text
    assert has("nonbin", "mask", "non-binary mask, values {0, 1, 2}"), text
    assert has("flat", "t2", "expected a 3D image, got 2D shape (8, 8)"), text
    assert has("nokey", "t2", "has no key 't2'; keys present: t1, mask"), text
    assert not any(c == "affine" and k == "t1" for c, k, m in msgs)  # the reference itself is fine
    assert not rep.ok and main(ds, keys="t1,t2,mask") == 1
    out = capsys.readouterr().out
    assert "problem(s):" in out and "case trunc, key t1" in out


def test_bad_json_is_one_problem(tmp_path):
    (tmp_path / "dataset.json").write_text('{"training": [')
    rep = check_dataset(tmp_path)
    assert not rep.ok and "cannot parse the dataset JSON" in rep.problems[0][3]
    assert rep.problems[0][2].endswith("dataset.json")


def test_label_must_be_integer_and_tabular_checked(tmp_path):
    cases = [_good_case(tmp_path, "a")]
    _img(tmp_path / "a" / "mask.nii.gz", np.full((8, 8, 8), 0.5, np.float32))
    df = pd.DataFrame({"g1": [1.0, np.nan], "g2": [3.0, 4.0]}, index=["s1", "s2"])
    df.to_csv(tmp_path / "expr.csv")
    cases[0]["expr"] = "expr.csv"
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"keys": {"t1": "image", "t2": "image", "mask": "label", "expr": "tabular"}, "training": cases}))
    msgs = _messages(check_dataset(tmp_path))
    assert ("a", "mask", "label map has non-integer values") in msgs
    assert any(k == "expr" and "1 missing values" in m for _, k, m in msgs)


def test_labels_outside_the_expected_set(tmp_path):
    import json

    import nibabel as nib
    import numpy as np

    from medgen.data.check import check_dataset

    seg = np.zeros((6, 6, 6), np.uint8)
    seg[1:3, 1:3, 1:3] = 2
    seg[4, 4, 4] = 3  # not a BraTS label
    nib.save(nib.Nifti1Image(seg, np.eye(4)), tmp_path / "seg.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({
        "keys": {"seg": "label"}, "label_values": {"seg": [0, 1, 2, 4]},
        "training": [{"id": "a", "seg": "seg.nii.gz"}]}))
    report = check_dataset(tmp_path)
    assert [p[3] for p in report.problems] == ["labels outside the expected set [0.0, 1.0, 2.0, 4.0]: 3"]


# ----- dimensions, OCT layouts, --keys forms, summary -----------------------------------------------------


def test_4d_volumes_are_flagged(tmp_path):
    cases = [_good_case(tmp_path, "a"), _good_case(tmp_path, "b")]
    _img(tmp_path / "b" / "t2.nii.gz", np.ones((8, 8, 8, 5), np.float32))  # 5 time frames in one file
    for extra in ({}, {"spatial_dims": 3}):
        msgs = _messages(check_dataset(_write(tmp_path, cases, **extra)))
        assert ("b", "t2", "4D image, shape (8, 8, 8, 5): 5 volumes (time frames or channels) in one file, but a "
                           "key holds one 3D volume; split it into one file per volume") in msgs, msgs
        assert not any(c == "a" for c, _, _ in msgs)
    _img(tmp_path / "b" / "t2.nii.gz", np.ones((8, 8, 8, 1), np.float32))  # a trailing singleton is one volume
    assert check_dataset(_write(tmp_path, cases)).ok


def test_more_than_three_spatial_dims_are_flagged(tmp_path):
    import SimpleITK as sitk

    cases = [_good_case(tmp_path, "a")]
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, 8, 8, 8), np.float32), isVector=False), str(tmp_path / "a" / "t4.mha"))
    cases[0]["t4"] = "a/t4.mha"
    msgs = _messages(check_dataset(_write(tmp_path, cases)))
    assert any(k == "t4" and "4D image, shape (8, 8, 8, 2): medgen reads 2D and 3D images" in m for _, k, m in msgs), msgs


def _oct_dataset(root, spatial_dims=2):
    rng = np.random.default_rng(0)
    grey = rng.random((24, 32)).astype(np.float32)
    _img(root / "normal" / "n1.nii.gz", np.repeat(grey[..., None], 3, axis=-1))  # (H, W, 3): normal scans
    _img(root / "abnormal" / "a1.nii.gz", np.repeat(grey[None], 3, axis=0))  # (3, H, W): the AMD scans
    _img(root / "abnormal" / "a2.nii.gz", np.repeat(grey[..., None], 3, axis=-1))
    mask = np.zeros((24, 32), np.uint8)
    mask[5:9, 5:9] = 1
    _img(root / "masks" / "a2.nii.gz", mask)  # (H, W) mask of an (H, W, 3) scan
    _img(root / "masks" / "a1.nii.gz", mask)  # and of a (3, H, W) scan
    data = {"keys": {"image": "image", "mask": "label"},
            "training": [{"id": "n1", "image": "normal/n1.nii.gz", "label": 0}],
            "test": [{"id": "a1", "image": "abnormal/a1.nii.gz", "mask": "masks/a1.nii.gz", "label": 1},
                     {"id": "a2", "image": "abnormal/a2.nii.gz", "mask": "masks/a2.nii.gz", "label": 1}]}
    if spatial_dims:
        data["spatial_dims"] = spatial_dims
    (root / "dataset.json").write_text(json.dumps(data))
    return root


@pytest.mark.parametrize("spatial_dims", [2, None])
def test_oct_layouts_the_pipeline_reads_pass(tmp_path, spatial_dims):
    from medgen.data.io import load_bscan

    ds = _oct_dataset(tmp_path, spatial_dims)
    for f in ("normal/n1", "abnormal/a1", "abnormal/a2", "masks/a1"):  # what oct_anogan reads ...
        assert load_bscan(tmp_path / f"{f}.nii.gz").shape == (24, 32)
    rep = check_dataset(ds)  # ... check-data accepts
    assert rep.ok, rep.format()


def test_oct_files_the_pipeline_refuses_are_flagged(tmp_path):
    ds = _oct_dataset(tmp_path)
    grey = np.random.default_rng(1).random((24, 32)).astype(np.float32)
    _img(tmp_path / "abnormal" / "a1.nii.gz", np.stack([grey, 1 - grey, grey], axis=-1))  # a colour image
    _img(tmp_path / "masks" / "a2.nii.gz", np.zeros((24, 30), np.uint8))  # wrong size, and empty
    _img(tmp_path / "normal" / "n1.nii.gz", np.ones((5, 6, 7), np.float32))  # a volume, not a B-scan
    msgs = _messages(check_dataset(ds))
    text = "\n".join(map(str, msgs))
    assert any(c == "a1" and "colour image" in m for c, _, m in msgs), text
    assert any(c == "a2" and k == "mask" and "shape (24, 30) differs from 'image' shape (24, 32)" in m for c, k, m in msgs), text
    assert any(c == "n1" and "expected a 2D image" in m and "(5, 6, 7)" in m for c, _, m in msgs), text


def test_keys_as_one_comma_list_or_several_words(tmp_path, capsys):
    from medgen.cli import main as cli

    ds = _write(tmp_path, [_good_case(tmp_path, "a"), _good_case(tmp_path, "b")])
    assert main(ds, keys=["t1,t2,mask"]) == 0  # what argparse hands over for --keys t1,t2,mask
    assert cli(["check-data", str(ds), "--keys", "t1,t2,mask"]) == 0
    assert cli(["check-data", str(ds), "--keys", "t1", "t2", "mask"]) == 0
    assert cli(["check-data", str(ds), "--keys", "t1,", "mask"]) == 0
    assert "problem(s):" not in capsys.readouterr().out
    assert cli(["check-data", str(ds), "--keys", "t1,flair"]) == 1
    assert "has no key 'flair'" in capsys.readouterr().out


def test_summary_is_one_line_per_dataset(tmp_path, capsys):
    from medgen.cli import main as cli

    good = _write(tmp_path / "good", [_good_case(tmp_path / "good", "a"), _good_case(tmp_path / "good", "b")])
    bad = _write(tmp_path / "bad", [_good_case(tmp_path / "bad", "a")])
    (tmp_path / "bad" / "a" / "t2.nii.gz").unlink()
    assert cli(["check-data", str(good), "--summary"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"OK  {good / 'dataset.json'}: 2 case(s) (training 2, validation 0, test 0), 6 file(s), "
                   "keys t1, t2, mask, no problems"]
    assert cli(["check-data", str(good), str(bad), "--summary"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("OK  ") and out[1].startswith(f"PROBLEMS  {bad / 'dataset.json'}: 1 case(s)")
    assert out[1].endswith("1 problem(s):") and "case a, key t2: missing file" in out[2] and len(out) == 3


# ----- what the pipelines refuse, check-data reports -------------------------------------------------------------


def test_a_blank_image_is_flagged(tmp_path):
    cases = [_good_case(tmp_path, c) for c in ("a", "b", "c")]
    _img(tmp_path / "b" / "t1.nii.gz", np.zeros((8, 8, 8), np.float32))  # a blank export
    _img(tmp_path / "c" / "t2.nii.gz", -np.ones((8, 8, 8), np.float32))  # no foreground: the sign flipped
    msgs = _messages(check_dataset(_write(tmp_path, cases)))
    assert [(c, k) for c, k, m in msgs if "no voxel above 0" in m] == [("b", "t1"), ("c", "t2")], msgs
    assert not any(c == "a" for c, _, _ in msgs)


def test_an_image_key_missing_from_a_few_cases_is_flagged(tmp_path):
    cases = [_good_case(tmp_path, c) for c in "abcde"]
    del cases[1]["t1"], cases[3]["mask"]  # a label may be partial, an image may not
    msgs = _messages(check_dataset(_write(tmp_path, cases)))
    want = "case 'b' (training) has no key 't1', which 4 of the 5 cases have; keys present: t2, mask"
    assert msgs == [("b", "t1", want)], msgs
    assert check_dataset(_write(tmp_path, cases, optional_keys=["t1"])).ok  # make-dataset --missing keep


def test_a_typo_in_a_file_kind_is_flagged(tmp_path):
    cases = [_good_case(tmp_path, c) for c in "ab"]
    data = {"keys": {"t1": "picture", "t2": "image", "mask": "label", "site": "value", "source": "value"},
            "training": [dict(c, site="A", source=c["t2"]) for c in cases]}  # a path declared a value: on purpose
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    msgs = _messages(check_dataset(tmp_path))
    assert len(msgs) == 1 and msgs[0][1] == "t1" and "kind 'picture'" in msgs[0][2], msgs
    assert "not a file kind (image, label, tabular)" in msgs[0][2]


def _expression(root, values=None, ids=None):
    rng = np.random.default_rng(0)
    x = rng.random((6, 4)) if values is None else values
    pd.DataFrame(x, index=[f"S{i}" for i in range(6)], columns=list("abcd")).to_csv(root / "expression.tsv",
                                                                                    sep="\t")
    ids = ids or [f"S{i}" for i in range(6)]
    (root / "dataset.json").write_text(json.dumps({"tables": {"expression": "expression.tsv"},
                                                   "training": [{"id": i} for i in ids[:4]],
                                                   "test": [{"id": i} for i in ids[4:]]}))
    return root


def test_expression_sample_ids_and_a_constant_matrix(tmp_path):
    assert check_dataset(_expression(tmp_path)).ok
    msgs = _messages(check_dataset(_expression(tmp_path, ids=["S0", "S1", "S2", "S3", "S4", "NOT_A_SAMPLE"])))
    want = "1 'test' sample id(s) are not rows of tables.expression, e.g. NOT_A_SAMPLE"
    assert msgs == [("NOT_A_SAMPLE", "id", want)], msgs
    msgs = _messages(check_dataset(_expression(tmp_path, values=np.ones((6, 4)))))
    assert len(msgs) == 1 and "a constant matrix" in msgs[0][2], msgs


def _nifti_t1(tmp_path, arr, edit=None):
    """A one-case dataset whose t1 is `arr`, its header edited by edit(header)."""
    img = nib.Nifti1Image(np.asarray(arr), np.diag([2.0, 2.0, 2.0, 1.0]))
    if edit:
        edit(img.header)
    (tmp_path / "a").mkdir(exist_ok=True)
    nib.save(img, str(tmp_path / "a" / "t1.nii"))
    (tmp_path / "dataset.json").write_text(json.dumps({"keys": {"t1": "image"},
                                                       "test": [{"id": "a", "t1": "a/t1.nii"}]}))
    return check_dataset(tmp_path)


def _field(name, value, index=None):
    def edit(h):
        if index is None:
            h[name] = value
        else:
            h[name][index] = value
    return edit


@pytest.mark.parametrize("shape,edit,problem", [
    ((24, 24), None, "expected a 3D image, got 2D shape (24, 24)"),  # a t1 is a volume, not a B-scan
    ((13824,), None, "expected a 3D image, got 1D shape (13824,)"),
    ((8, 8, 8), _field("quatern_c", 1e30), "cannot read the NIfTI header"),  # a qform that cannot be computed
    ((8, 8, 8), _field("quatern_b", np.nan), "NaN or Inf values (pixdim"),
    ((8, 8, 8), _field("pixdim", np.nan, 3), "NaN or Inf values (pixdim"),
    ((8, 8, 8), lambda h: h.set_slope_inter(3.4e38, 0.0), "Inf voxels"),  # finite in float64, Inf in the loaders' float32
])
def test_headers_the_loaders_refuse_are_flagged(tmp_path, shape, edit, problem):
    from medgen.data.cases import check_same_grid
    from medgen.data.io import load_header, load_image

    arr = np.random.default_rng(0).random(shape).astype(np.float32) + 0.5
    rep = _nifti_t1(tmp_path, arr, edit)
    assert any(problem in m for _, _, m in _messages(rep)), rep.format()
    path = tmp_path / "a" / "t1.nii"
    with pytest.raises(DataError):  # what the pipelines then do with it: the grid check, then the loader
        check_same_grid({"t1": load_header(path)}, "a")
        load_image(path)


def test_non_scalar_voxels_are_refused_by_the_loader(tmp_path):
    from medgen.data.io import load_image

    path = tmp_path / "c.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.complex64), np.eye(4)), str(path))
    with pytest.raises(DataError, match="voxel type complex64 is not a plain number"):
        load_image(path)
