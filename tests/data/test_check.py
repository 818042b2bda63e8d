"""medgen.data.check: every crafted problem is reported, a clean dataset passes."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd

from medgen.data.check import check_dataset, main

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
