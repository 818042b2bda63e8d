"""`medgen simulate-pet`: a paired low / full-dose dataset from full-dose PET, split by subject or by slabs
of one subject, that check-data accepts as it is and pet_lowdose reads."""

import json

import nibabel as nib
import numpy as np
import pytest

from medgen.cli import main
from medgen.data.check import check_dataset
from medgen.data.simulate_pet import simulate_paired_dataset, slab_parts, subject_splits
from medgen.errors import MedgenError


def _pet(path, seed=0, shape=(24, 20, 16)):
    rng = np.random.default_rng(seed)
    act = np.zeros(shape, np.float32)
    act[4:-4, 3:-3, 2:-2] = 8000 + rng.normal(0, 300, (shape[0] - 8, shape[1] - 6, shape[2] - 4))
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(act, aff), str(path))
    return path


def test_slabs_of_one_subject_pass_check_data(tmp_path, capsys):
    src = _pet(tmp_path / "s01" / "pet.nii.gz")
    rc = main(["simulate-pet", str(src), str(tmp_path / "sim"), "--split-by", "slabs", "--slabs", "0.5,0.6"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "no problems" in out and "unseen anatomy of the SAME subject" in out
    meta = json.loads((tmp_path / "sim" / "dataset.json").read_text())
    assert [len(meta[s]) for s in ("training", "validation", "test")] == [1, 1, 1]
    assert meta["training"][0]["part"]["stop"] == 12 and meta["test"][0]["part"]["start"] == 14
    report = check_dataset(tmp_path / "sim")  # the provenance field `source` is not an image of the case
    assert report.ok, report.format()


def test_subjects_split_by_fractions_or_lists(tmp_path, capsys):
    srcs = [str(_pet(tmp_path / f"s{i:02d}" / "pet.nii.gz", seed=i)) for i in range(5)]
    assert main(["simulate-pet", *srcs, str(tmp_path / "a"), "--split", "0.6,0.2,0.2", "--seed", "3"]) == 0
    meta = json.loads((tmp_path / "a" / "dataset.json").read_text())
    ids = {s: [c["id"] for c in meta[s]] for s in ("training", "validation", "test")}
    assert [len(v) for v in ids.values()] == [3, 1, 1]
    assert sorted(sum(ids.values(), [])) == [f"s{i:02d}" for i in range(5)]
    assert ids == subject_splits([f"s{i:02d}" for i in range(5)], (0.6, 0.2, 0.2), seed=3)
    assert check_dataset(tmp_path / "a").ok
    capsys.readouterr()
    assert main(["simulate-pet", *srcs[:3], str(tmp_path / "b"), "--training", "s00,s01", "--test", "s02"]) == 0
    meta = json.loads((tmp_path / "b" / "dataset.json").read_text())
    assert [c["id"] for c in meta["training"]] == ["s00", "s01"] and [c["id"] for c in meta["test"]] == ["s02"]
    assert main(["simulate-pet", *srcs[:2], str(tmp_path / "c"), "--split-by", "test"]) == 0
    assert len(json.loads((tmp_path / "c" / "dataset.json").read_text())["test"]) == 2


def test_bad_split_options_are_clear_errors(tmp_path, capsys):
    srcs = [str(_pet(tmp_path / f"s{i}" / "pet.nii.gz", seed=i)) for i in range(2)]
    assert main(["simulate-pet", *srcs, str(tmp_path / "x"), "--split-by", "slabs"]) == 2
    assert "ONE subject" in capsys.readouterr().err
    assert main(["simulate-pet", srcs[0], str(tmp_path / "y"), "--slabs", "0.7,0.2"]) == 2
    assert "0 < a <= b < 1" in capsys.readouterr().err
    assert main(["simulate-pet", *srcs, str(tmp_path / "z"), "--training", "s0", "--test", "nope"]) == 2
    assert "unknown case ids ['nope']" in capsys.readouterr().err
    with pytest.raises(MedgenError):
        slab_parts("0.5")
    assert slab_parts("0.5,0.5") == {"training": (0.0, 0.5), "test": (0.5, 1.0)}


def test_simulated_dataset_trains_pet_lowdose(tmp_path):
    """The written dataset is read by the pipeline as it is: one training step and a prediction."""
    from medgen.engine.commands import build_config, train_config

    src = _pet(tmp_path / "s01" / "pet.nii.gz", shape=(40, 20, 16))
    simulate_paired_dataset([src], tmp_path / "sim", parts=slab_parts("0.5,0.6"))
    cls, cfg = build_config("pet_lowdose", None, [
        f"data.dataset={tmp_path / 'sim'}", "data.patch_size=[16,16,16]", "data.region_key=", "model.ngf=4", "model.d_layers=2",
        "model.ndf=4", "model.stages=1", "train.iterations=1", "train.batch_size=1", "train.progress=off",
        f"output.root={tmp_path}", "output.name=r", "train.device=cpu"])
    summary = train_config(cls, cfg)
    assert summary["steps"] == 1
