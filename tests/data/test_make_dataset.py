"""`medgen make-dataset`: each layout end to end through the CLI (make-dataset, then check-data), the split
rules, the refusals, and a smoke training of mr_synthesis on a built 3D dataset and a DICOM dataset."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medgen.cli import main
from medgen.data.datalist import load_datalist

from .dicom_series import oblique_affine, write_series

AFF = np.diag([1.2, 1.0, 1.5, 1.0])
AFF[:3, 3] = [-10.0, 5.0, 3.0]


def _head(shape=(20, 20, 20)):
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    return (sum(g ** 2 for g in grids) < 0.8).astype(np.float32), grids[0]


def _nii(path: Path, data, affine=AFF):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))


def _contrasts(seed: int, shape=(20, 20, 20)):
    rng = np.random.default_rng(seed)
    head, x = _head(shape)
    t1 = head * (100 + 20 * x + rng.normal(0, 2, shape))
    t2 = head * (80 - 30 * x + rng.normal(0, 2, shape))
    lesion = np.zeros(shape, np.uint8)
    lesion[8 + seed % 3: 11 + seed % 3, 9:12, 9:12] = 1
    return t1.astype(np.float32), t2.astype(np.float32), head.astype(np.uint8), lesion


def _json(out: Path) -> dict:
    return json.loads((out / "dataset.json").read_text())


def _ids(data: dict, split: str) -> list[str]:
    return [c["id"] for c in data[split]]


def _make(capsys, *argv) -> tuple[int, str]:
    rc = main(["make-dataset", *map(str, argv)])
    return rc, capsys.readouterr().out


# ----- layouts ----------------------------------------------------------------------------------------------


def test_subject_folders(tmp_path, capsys):
    src = tmp_path / "raw"
    for s in range(5):
        t1, t2, head, lesion = _contrasts(s)
        _nii(src / f"patient{s:02d}" / "T1.nii.gz", t1)
        _nii(src / f"patient{s:02d}" / "FLAIR.nii.gz", t2)
        _nii(src / f"patient{s:02d}" / "lesion_mask.nii.gz", lesion)
    (src / "notes.txt").write_text("not an image")
    write_series(src / "patient00" / "scanner_export", np.ones((4, 4, 3)), np.eye(4))  # slices are not keys
    rc, out = _make(capsys, src, src)
    assert rc == 0, out
    assert "layout: subjects (detected)" in out and "lesion  label     5  lesion_mask.nii.gz" in out
    assert "3 DICOM file(s)  (DICOM series are read with --layout dicom)" in out
    data = _json(src)
    assert data["keys"] == {"t1": "image", "flair": "image", "lesion": "label"} and data["spatial_dims"] == 3
    assert [len(data[s]) for s in ("training", "validation", "test")] == [3, 1, 1]
    case = data["training"][0]
    assert case["t1"] == f"{case['id']}/T1.nii.gz"  # relative to OUT (= SRC here)
    dl = load_datalist(src, keys=["t1", "flair", "lesion"])
    assert Path(dl.training[0]["t1"]).is_file()
    assert main(["check-data", str(src), "--summary"]) == 0
    assert capsys.readouterr().out.startswith("OK  ")


def test_nnunet_raw_folder(tmp_path, capsys):
    src = tmp_path / "Dataset001_Brain"
    for i, (folder, n) in enumerate((("imagesTr", 6), ("imagesTs", 2))):
        for c in range(n):
            cid = f"brain_{i}{c:02d}"
            t1, t2, _, lesion = _contrasts(c)
            _nii(src / folder / f"{cid}_0000.nii.gz", t1)
            _nii(src / folder / f"{cid}_0001.nii.gz", t2)
            if folder == "imagesTr":
                _nii(src / "labelsTr" / f"{cid}.nii.gz", lesion)
    (src / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "FLAIR"},
                                                  "labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"}))
    out_dir = tmp_path / "medgen_ds"
    # nnU-Net's own dataset.json is the input: never written over
    assert main(["make-dataset", str(src), str(src), "--overwrite"]) == 2
    assert "nnU-Net's own dataset.json" in capsys.readouterr().err
    rc, out = _make(capsys, src, out_dir, "--rename", "seg=lesion")
    assert rc == 0, out
    assert "channel 0000 'T1'" in out and "channel 0001 'FLAIR'" in out
    data = _json(out_dir)
    assert data["keys"] == {"t1": "image", "flair": "image", "lesion": "label"}
    assert data["label_values"] == {"lesion": [0, 1]}
    assert sorted(_ids(data, "test")) == ["brain_100", "brain_101"]  # imagesTs is the test split
    assert all("lesion" not in c for c in data["test"]) and all("lesion" in c for c in data["training"])
    assert len(data["training"]) + len(data["validation"]) == 6 and data["validation"]
    assert data["training"][0]["t1"].startswith(str(src))  # outside OUT: absolute
    assert main(["check-data", str(out_dir), "--summary"]) == 0


def test_bids_tree_sessions_and_stratified_split(tmp_path, capsys):
    src = tmp_path / "bids"
    groups = {}
    for s in range(1, 9):
        sessions = ["ses-1", "ses-2"] if s <= 4 else [None]
        groups[f"sub-{s:02d}"] = "patient" if s % 2 else "control"
        for ses in sessions:
            t1, t2, head, lesion = _contrasts(s)
            stem = f"sub-{s:02d}" + (f"_{ses}" if ses else "")
            anat = src / f"sub-{s:02d}" / (ses or "") / "anat"
            _nii(anat / f"{stem}_T1w.nii.gz", t1)
            _nii(anat / f"{stem}_FLAIR.nii.gz", t2)
            _nii(src / "derivatives" / "masks" / f"sub-{s:02d}" / (ses or "") / "anat" /
                 f"{stem}_label-lesion_mask.nii.gz", lesion)
            _nii(src / f"sub-{s:02d}" / (ses or "") / "func" / f"{stem}_task-rest_bold.nii.gz", np.zeros((4, 4, 4, 3), np.float32))
    lines = ["participant_id\tgroup"] + [f"{k}\t{v}" for k, v in groups.items()]
    (src / "participants.tsv").write_text("\n".join(lines) + "\n")
    out_dir = tmp_path / "ds"
    rc, out = _make(capsys, src, out_dir, "--stratify", "group", "--split", "0.5,0.25,0.25")
    assert rc == 0, out
    assert "layout: bids (detected)" in out and "left over: 12 image(s)" in out and "_bold" in out
    data = _json(out_dir)
    assert data["keys"] == {"t1": "image", "flair": "image", "lesion": "label", "group": "value"}
    split_of = {c["id"]: s for s in ("training", "validation", "test") for c in data[s]}
    assert len(split_of) == 12  # 4 subjects x 2 sessions + 4 subjects x 1
    for s in range(1, 5):  # both sessions of a subject in one split
        assert split_of[f"sub-{s:02d}_ses-1"] == split_of[f"sub-{s:02d}_ses-2"]
    for split in ("training", "validation", "test"):  # each split has both groups
        assert {c["group"] for c in data[split]} == {"patient", "control"}, split
    assert data["split"]["stratified_by"] == "group (from participants.tsv)"
    assert main(["check-data", str(out_dir), "--summary"]) == 0
    # the same seed gives the same split, another seed another one
    again = tmp_path / "again"
    _make(capsys, src, again, "--stratify", "group", "--split", "0.5,0.25,0.25")
    assert _json(again)["test"] == data["test"]
    other = tmp_path / "other"
    _make(capsys, src, other, "--stratify", "group", "--split", "0.5,0.25,0.25", "--seed", "3")
    assert {c["id"] for c in _json(other)["test"]} != {c["id"] for c in data["test"]}


def test_flat_folder_with_patterns(tmp_path, capsys):
    src = tmp_path / "flat"
    for c in range(4):
        t1, t2, head, _ = _contrasts(c)
        _nii(src / f"case{c:02d}_mr.nii.gz", t1)
        _nii(src / f"case{c:02d}_ctscan.nii.gz", t2 * 10 - 1000)
        _nii(src / f"case{c:02d}_head.nii.gz", head)
    _nii(src / "atlas.nii.gz", np.ones((4, 4, 4), np.float32))
    rc, out = _make(capsys, src, src, "--key", "mr=*_mr.nii.gz", "--key", "ct=*_ctscan.nii.gz",
                    "--key", "mask=*_head.nii.gz", "--split", "2,1,1")
    assert rc == 0, out
    assert "atlas.nii.gz  (matches no --key pattern)" in out
    data = _json(src)
    assert data["keys"] == {"ct": "image", "mr": "image", "mask": "label"}
    assert sorted(c["id"] for s in ("training", "validation", "test") for c in data[s]) == [f"case{c:02d}" for c in range(4)]
    assert data["training"][0]["mr"].endswith("_mr.nii.gz") and not data["training"][0]["mr"].startswith("/")
    # never over an existing dataset.json without --overwrite
    assert main(["make-dataset", str(src), str(src), "--key", "mr=*_mr.nii.gz"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["check-data", str(src), "--keys", "mr,ct", "--summary"]) == 0
    assert main(["check-data", str(src), "--keys", "mr", "ct", "mask", "--summary"]) == 0


def _dicom_tree(root: Path, n_subjects: int = 3, with_localizer: bool = True):
    aff = oblique_affine(spacing=(1.0, 1.2, 1.5), origin=(20.0, -15.0, 30.0))
    for s in range(n_subjects):
        t1, t2, _, _ = _contrasts(s)
        write_series(root / f"subj{s:02d}" / "series_3", np.rint(t1 * 10), aff, description="T1 MPRAGE SAG",
                     uid_seed=10 * s + 1)
        write_series(root / f"subj{s:02d}" / "series_4", np.rint(t2 * 10), aff, description="T2 TSE",
                     uid_seed=10 * s + 2)
        if with_localizer:
            write_series(root / f"subj{s:02d}" / "series_1", np.ones((20, 20, 3)), np.eye(4),
                         description="localizer", uid_seed=10 * s + 3)
    return aff


def test_dicom_series_folders(tmp_path, capsys):
    src = tmp_path / "dicom"
    aff = _dicom_tree(src)
    out_dir = tmp_path / "ds"
    rc, out = _make(capsys, src, out_dir)
    assert rc == 0, out
    assert "layout: dicom (detected)" in out and "description 'T1 MPRAGE SAG'" in out
    assert "series 'localizer'" in out and "left over: 3 image(s)" in out
    data = _json(out_dir)
    assert data["keys"] == {"t1": "image", "t2": "image"} and data["spatial_dims"] == 3
    case = data["training"][0]
    assert case["t1"] == str(src / case["id"] / "series_3")  # the series folder
    from medgen.data.io import load_header

    np.testing.assert_allclose(load_header(case["t1"]).affine, aff, atol=1e-5)
    assert main(["check-data", str(out_dir), "--summary"]) == 0
    # keys chosen by pattern on the series description instead
    rc, out = _make(capsys, src, tmp_path / "ds2", "--key", "anat=*mprage*")
    assert rc == 0 and _json(tmp_path / "ds2")["keys"] == {"anat": "image"}


def test_oct_folders(tmp_path, capsys):
    import skimage.io

    src = tmp_path / "oct"
    rng = np.random.default_rng(0)
    for i in range(8):
        (src / "normal").mkdir(parents=True, exist_ok=True)
        skimage.io.imsave(str(src / "normal" / f"n{i}.png"), rng.integers(0, 255, (32, 40)).astype(np.uint8),
                          check_contrast=False)
    for i in range(3):  # abnormal scans stored channel-first (3, H, W), like the public AMD scans
        grey = rng.random((32, 40)).astype(np.float32)
        _nii(src / "abnormal" / f"a{i}.nii.gz", np.repeat(grey[None], 3, axis=0), np.eye(4))
        mask = np.zeros((32, 40), np.uint8)
        mask[10:20, 10:20] = 1
        if i < 2:
            _nii(src / "masks" / f"a{i}.nii.gz", mask, np.eye(4))
    rc, out = _make(capsys, src, src)
    assert rc == 0, out
    data = _json(src)
    assert data["spatial_dims"] == 2 and data["keys"] == {"image": "image", "mask": "label", "label": "value"}
    assert all(c["label"] == 0 for s in ("training", "validation") for c in data[s])
    assert sorted(c["id"] for c in data["test"] if c["label"] == 1) == ["a0", "a1", "a2"]
    assert {c["id"]: "mask" in c for c in data["test"] if c["label"] == 1} == {"a0": True, "a1": True, "a2": False}
    assert main(["check-data", str(src), "--summary"]) == 0


# ----- split rules and refusals ---------------------------------------------------------------------------


def _three_subjects(root: Path, n: int = 3):
    for s in range(n):
        t1, t2, head, _ = _contrasts(s)
        _nii(root / f"p{s}" / "t1.nii.gz", t1)
        _nii(root / f"p{s}" / "t2.nii.gz", t2)
    return root


def test_three_subjects_fill_three_splits_and_two_are_refused(tmp_path, capsys):
    rc, out = _make(capsys, _three_subjects(tmp_path / "three"), tmp_path / "a")
    assert rc == 0
    assert [len(_json(tmp_path / "a")[s]) for s in ("training", "validation", "test")] == [1, 1, 1]
    two = _three_subjects(tmp_path / "two", 2)
    assert main(["make-dataset", str(two), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "the test split is empty (2 subject(s) cannot fill every split)" in err and "--allow-empty-splits" in err
    assert not (tmp_path / "b" / "dataset.json").exists()
    rc = main(["make-dataset", str(two), str(tmp_path / "b"), "--allow-empty-splits"])
    captured = capsys.readouterr()
    assert rc == 0 and "WARNING: the test" in captured.err and "nothing to evaluate" in captured.out
    assert _json(tmp_path / "b")["test"] == []


def test_wrong_layout_bad_options_and_out_are_one_line_errors(tmp_path, capsys):
    src = _three_subjects(tmp_path / "src")
    (tmp_path / "file").write_text("")
    for argv, expected in [
        (["--layout", "oct"], "the OCT layout needs a normal/ and / or an abnormal/ folder"),
        (["--layout", "nnunet"], "nnU-Net layout without images"),
        (["--split", "0.8,0.2"], "split must be three non-negative numbers"),
        (["--key", "t1"], "--key must be NAME=VALUE"),
        (["--key", "id=*_t1.nii.gz"], "'id' is not a usable key name"),
        (["--rename", "flair=t3"], "--rename names key(s) flair that the layout did not produce"),
        (["--keys", "flair"], "--keys asks for flair, but no image matched it"),
        (["--stratify", "group"], "no table to read it from"),
        (["--group", "("], "is not a regular expression"),
    ]:
        assert main(["make-dataset", str(src), str(tmp_path / "out"), *argv]) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, (argv, err)
    assert main(["make-dataset", str(src), str(tmp_path / "file")]) == 2
    assert "OUT must be a folder" in capsys.readouterr().err


def test_missing_keys_and_doubles_are_named(tmp_path, capsys):
    src = _three_subjects(tmp_path / "src", 4)
    (src / "p3" / "t2.nii.gz").unlink()
    assert main(["make-dataset", str(src), str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "1 of 4 case(s) lack a key: p3: no t2" in err and "--missing skip" in err
    rc, out = _make(capsys, src, tmp_path / "b", "--missing", "skip", "--allow-empty-splits")
    assert rc == 0 and "p3: no t2" in out and len(load_datalist(tmp_path / "b")) == 3
    rc, out = _make(capsys, src, tmp_path / "c", "--missing", "keep")
    assert rc == 0 and len(load_datalist(tmp_path / "c")) == 4
    assert json.loads((tmp_path / "c" / "dataset.json").read_text())["optional_keys"] == ["t2"]  # check-data: OK
    rc, out = _make(capsys, src, tmp_path / "d", "--keys", "t1")
    assert rc == 0 and "key 't2' not chosen by --keys" in out
    _nii(src / "p0" / "T1w.nii.gz", np.ones((20, 20, 20), np.float32))  # a second t1 for p0
    assert main(["make-dataset", str(src), str(tmp_path / "e"), "--missing", "keep"]) == 2
    assert "p0 / t1: p0/T1w.nii.gz, p0/t1.nii.gz" in capsys.readouterr().err


def test_bad_case_ids_from_file_names_are_refused(tmp_path, capsys):
    src = tmp_path / "src"
    for name in ("a", "b", "c"):
        _nii(src / f"{name}_t1.nii.gz", np.ones((4, 4, 4), np.float32))
    _nii(src / "bad\x07name_t1.nii.gz", np.ones((4, 4, 4), np.float32))  # a file name can hold control characters
    assert main(["make-dataset", str(src), str(src), "--key", "t1=*_t1.nii.gz"]) == 2
    err = capsys.readouterr().err
    assert "1 image(s) would get an unusable case id" in err and "contains control characters" in err


def test_make_dataset_reports_check_data_problems(tmp_path, capsys):
    src = _three_subjects(tmp_path / "src")
    _nii(src / "p1" / "t2.nii.gz", np.ones((20, 20, 19), np.float32))  # not on the t1 grid
    rc, out = _make(capsys, src, tmp_path / "ds")
    assert rc == 1 and "PROBLEMS" in out and "shape (20, 20, 19) differs from 't1'" in out
    assert (tmp_path / "ds" / "dataset.json").exists()


# ----- smoke training on built datasets -------------------------------------------------------------------


def _smoke_train(dataset: Path, runs: Path, name: str) -> Path:
    repo = Path(__file__).resolve().parents[2]
    rc = main(["train", "mr_synthesis", "-c", str(repo / "configs" / "mr_synthesis_smoke.yaml"),
               f"data.dataset={dataset}", f"output.root={runs}", f"output.name={name}", "train.iterations=4",
               "train.val_every=2"])
    assert rc == 0
    run = runs / "mr_synthesis" / name
    assert (run / "checkpoints" / "last.pt").exists()
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) > 1
    return run


@pytest.mark.slow
def test_train_on_a_built_subject_dataset(tmp_path, capsys):
    src = _three_subjects(tmp_path / "src")
    assert _make(capsys, src, tmp_path / "ds")[0] == 0
    _smoke_train(tmp_path / "ds", tmp_path / "runs", "subjects")


@pytest.mark.slow
def test_train_and_infer_on_a_dicom_dataset(tmp_path, capsys):
    src = tmp_path / "dicom"
    aff = _dicom_tree(src, with_localizer=False)
    assert _make(capsys, src, tmp_path / "ds")[0] == 0
    run = _smoke_train(tmp_path / "ds", tmp_path / "runs", "dicom")
    capsys.readouterr()
    assert main(["infer", str(run), str(tmp_path / "ds"), "--split", "test"]) == 0
    test_id = _json(tmp_path / "ds")["test"][0]["id"]
    preds = sorted((run / "predictions").glob(f"{test_id}_*.nii.gz"))
    assert preds, list((run / "predictions").iterdir())
    img = nib.load(str(preds[0]))
    assert img.shape == (20, 20, 20)
    np.testing.assert_allclose(img.affine, aff, atol=1e-4)  # written back in the series' geometry


# ----- the real data (skipped when ../shared/data is absent) ----------------------------------------------


@pytest.mark.shared_data
def test_real_subject_folders_and_oct(shared_data, tmp_path, capsys):
    ms = shared_data / "lesion_da" / "domainA_ms_ljubljana"
    rc, out = _make(capsys, ms, tmp_path / "ms")
    assert rc == 0, out
    data = _json(tmp_path / "ms")
    assert data["keys"] == {"t1": "image", "t1c": "image", "t2": "image", "flair": "image", "lesion": "label"}
    assert sorted(c["id"] for s in ("training", "validation", "test") for c in data[s]) == [
        "patient07", "patient19", "patient26"]
    assert [len(data[s]) for s in ("training", "validation", "test")] == [1, 1, 1]
    oct_dir = shared_data / "oct_anogan"
    rc, out = _make(capsys, oct_dir, tmp_path / "oct")
    assert rc == 0, out  # 512x512x3 normal and 3x512x512 abnormal scans both pass check-data
    data = _json(tmp_path / "oct")
    assert "unlabelled/ (12 images" in out
    labels = [c["label"] for s in ("training", "validation", "test") for c in data[s]]
    assert labels.count(0) == 8 and labels.count(1) == 9
    assert all(c["label"] == 0 for c in data["training"] + data["validation"])
    assert any("mask" in c for c in data["test"])
