"""Safe by default: no code from a checkpoint, no write outside its folder, no stale or silently lost results,
a divergence guard that cannot be defeated, and inference that isolates a bad case."""
import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import medgen.pipelines._template  # noqa: F401  (registers template_translation)
from medgen.cli import main
from medgen.data.phantoms import write_phantom_dataset
from medgen.engine.commands import build_config, evaluate, infer, train_config
from medgen.engine.checkpoint import load_checkpoint, save_checkpoint
from medgen.engine.outputs import OutputFolder
from medgen.engine.rundir import claimed_run_dir
from medgen.engine.trainer import TrainingDiverged
from medgen.errors import MedgenError, RunDirError
from medgen.files import contained_path

TOY = ["train.val_every=2", "train.log_every=1", "train.progress=off", "train.batch_size=2"]


class _Marker:
    """Pickles to `open(path, "w")`: loading it with a full unpickler creates the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _plant(checkpoint: Path, marker: Path) -> None:
    """Add a pickled callable to a real checkpoint, with a matching .sha256 beside it (as an attacker ships)."""
    state = torch.load(checkpoint, weights_only=True)
    state["evil"] = _Marker(marker)
    torch.save(state, checkpoint)
    (checkpoint.parent / (checkpoint.name + ".sha256")).write_text(hashlib.sha256(checkpoint.read_bytes()).hexdigest())


def test_a_checkpoint_carrying_code_is_refused_on_every_load_path(tmp_path, capsys):
    root = tmp_path / "runs"
    assert main(["train", "toy_denoise", "train.iterations=2", *TOY, "model.stages=2", f"output.root={root}",
                 "output.name=r"]) == 0
    run = root / "toy_denoise" / "r"
    marker = tmp_path / "code_ran"
    clean = tmp_path / "clean_stage1"
    shutil.copytree(run / "stage1" / "checkpoints", clean)
    for stage in ("stage1", "stage2"):
        planted = set()  # best.pt and last.pt of one step are one file (a hard link): plant it once
        for name in ("best.pt", "last.pt"):
            path = run / stage / "checkpoints" / name
            if path.stat().st_ino not in planted:
                _plant(path, marker)
                planted.add(path.stat().st_ino)
            else:
                (path.parent / (name + ".sha256")).write_text(hashlib.sha256(path.read_bytes()).hexdigest())
    capsys.readouterr()
    paths = {
        "infer a run": ["infer", str(run)],
        "infer a checkpoint": ["infer", str(run / "stage2" / "checkpoints" / "best.pt")],
        "export": ["export", str(run)],
        "resume": ["train", "toy_denoise", "train.iterations=4", *TOY, "model.stages=2", f"output.root={root}",
                   "output.name=r", "--resume"],
    }
    for what, argv in paths.items():
        assert main(argv) == 2, what
        err = capsys.readouterr().err
        assert "refused" in err and "Traceback" not in err, (what, err)
        assert not marker.exists(), what
    # the cascade's later stage alone (stage 1 clean): loading stage 2 is refused too
    shutil.rmtree(run / "stage1" / "checkpoints")
    shutil.copytree(clean, run / "stage1" / "checkpoints")
    from medgen.engine.commands import load_trained

    with pytest.raises(MedgenError, match="refused"):
        load_trained(run)
    assert not marker.exists()


def test_altered_weights_without_their_sidecar_are_detected(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"networks": {"G": {"w": torch.ones(3)}}, "step": 1}, path, keep_previous=False)
    (tmp_path / "last.pt.sha256").unlink()
    state = torch.load(path, weights_only=True)
    state["networks"]["G"]["w"][1] = 5.0  # a flipped value; the stored digest is kept
    torch.save(state, path)
    with pytest.raises(MedgenError, match="do not match the digest"):
        load_checkpoint(path, fallback=False)


def test_names_never_leave_their_folder(tmp_path):
    for bad in ("../evil.nii.gz", "/abs/evil.nii.gz", "a/../../evil", ".."):
        with pytest.raises(MedgenError, match="outside|dot name"):
            contained_path(tmp_path / "out", bad)
        with pytest.raises(MedgenError):
            OutputFolder(tmp_path / "out").path(bad)
    assert contained_path(tmp_path, "case_1_output.nii.gz") == (tmp_path / "case_1_output.nii.gz").resolve()


def test_one_training_per_run_folder(tmp_path):
    with claimed_run_dir(tmp_path, "toy_denoise", "r") as run:
        (run / "config.yaml").write_text("a run\n")
        with pytest.raises(RunDirError, match="in use by process"):
            with claimed_run_dir(tmp_path, "toy_denoise", "r", resume=True):
                pass
    with claimed_run_dir(tmp_path, "toy_denoise", "r", resume=True):  # released at the end of the block
        pass


def test_resume_of_a_run_that_does_not_exist_is_an_error(tmp_path, capsys):
    assert main(["train", "toy_denoise", "train.iterations=2", *TOY, f"output.root={tmp_path}", "output.name=exp1"]) == 0
    capsys.readouterr()
    assert main(["train", "toy_denoise", "train.iterations=4", *TOY, f"output.root={tmp_path}", "output.name=exp2",
                 "--resume"]) == 2
    err = capsys.readouterr().err
    assert "nothing to resume" in err and "did you mean 'exp1'" in err


def test_overwrite_clears_the_replaced_run(tmp_path):
    assert main(["train", "toy_denoise", "train.iterations=4", *TOY, f"output.root={tmp_path}", "output.name=r"]) == 0
    run = tmp_path / "toy_denoise" / "r"
    assert (run / "checkpoints" / "best.pt").exists()
    (run / "predictions").mkdir()
    (run / "predictions" / "old_output.nii.gz").write_bytes(b"from the replaced run")
    # a shorter retrain: nothing of the old run (its step-4 best.pt, its predictions) may survive to be used
    assert main(["train", "toy_denoise", "train.iterations=2", *TOY, f"output.root={tmp_path}", "output.name=r",
                 "--overwrite"]) == 0
    assert load_checkpoint(run / "checkpoints" / "best.pt")["step"] == 2
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2
    assert not (run / "predictions").exists()
    # a folder that is not a medgen run is never cleared
    (tmp_path / "toy_denoise" / "mine").mkdir()
    (tmp_path / "toy_denoise" / "mine" / "notes.txt").write_text("keep me")
    assert main(["train", "toy_denoise", "train.iterations=2", *TOY, f"output.root={tmp_path}", "output.name=mine",
                 "--overwrite"]) == 2
    assert (tmp_path / "toy_denoise" / "mine" / "notes.txt").read_text() == "keep me"


def test_divergence_of_one_optimizer_stops_the_run(tmp_path):
    """The generator's loss is infinite at every step while the discriminator's is fine: the run must stop."""
    cls, cfg = build_config("toy_denoise", None, ["train.iterations=40", *TOY, "model.adversarial=true",
                                                  "model.lambda_adv=1e39", "train.max_bad_steps=3",
                                                  f"output.root={tmp_path}", "output.name=r"])
    with pytest.raises(TrainingDiverged, match="optimizer 'G'"):
        train_config(cls, cfg)


def test_exploding_weights_are_never_saved_as_good(tmp_path):
    cls, cfg = build_config("toy_denoise", None, ["train.iterations=40", *TOY, "model.lr=1e6",
                                                  f"output.root={tmp_path}", "output.name=r"])
    with pytest.raises(TrainingDiverged):
        train_config(cls, cfg)
    for ckpt in (tmp_path / "toy_denoise" / "r" / "checkpoints").glob("*.pt"):
        for net in load_checkpoint(ckpt, fallback=False)["networks"].values():
            for value in net.values():
                assert torch.isfinite(value).all() and float(value.abs().max()) <= 1e6


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    head = write_phantom_dataset("head", root / "head", n_cases=10, seed=4, shape=(16, 16, 16))
    cls, cfg = build_config("template_translation", None, [f"data.dataset={head.parent}", "data.patch_size=[16,16,16]",
                                                     "train.iterations=4", "train.val_every=2", "train.progress=off",
                                                     f"output.root={root}", "output.name=r"])
    train_config(cls, cfg)
    return root / "template_translation" / "r", head


def _copy_dataset(head: Path, dest: Path) -> Path:
    shutil.copytree(head.parent, dest)
    return dest


def test_infer_predicts_again_when_the_model_or_an_input_changed(trained, tmp_path):
    run, head = trained
    data = _copy_dataset(head, tmp_path / "data")
    out = tmp_path / "pred"
    first = infer(run, data, out=out)
    n = first["written"]
    assert n >= 2 and infer(run, data, out=out)["skipped"] == n  # nothing changed: nothing redone
    # another checkpoint of the same run: every case again (best and last differ in weights)
    best, last = (load_checkpoint(run / "checkpoints" / f"{k}.pt")["file_sha256"] for k in ("best", "last"))
    if best != last:
        again = infer(run, data, out=out, checkpoint="last")
        assert again["written"] == n and again["skipped"] == 0
    # one input file replaced: that case alone again
    case = json.loads((data / "dataset.json").read_text())["test"][0]
    img = nib.load(data / case["t1"])
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 1.5, img.affine), str(data / case["t1"]))
    result = infer(run, data, out=out, checkpoint="last")
    assert result["written"] == 1 and result["skipped"] == n - 1


def test_an_unknown_checkpoint_name_is_an_error_listing_the_names(trained, tmp_path):
    run, head = trained
    for name in ("bset", "../checkpoints/best", ""):
        with pytest.raises(MedgenError, match=r"no checkpoint named .*this run has: best, last"):
            infer(run, head.parent, out=tmp_path / "pred", checkpoint=name)
    assert not (tmp_path / "pred").exists()
    assert infer(run, head.parent, out=tmp_path / "pred", checkpoint="last")["written"] >= 1


def test_infer_never_replaces_a_users_file(trained, tmp_path):
    run, head = trained
    out = tmp_path / "pred"
    out.mkdir()
    case_id = json.loads(head.read_text())["test"][0]["id"]
    mine = out / f"{case_id}_output.nii.gz"
    mine.write_bytes(b"my own analysis")
    result = infer(run, head.parent, out=out)
    assert result["failed"] == 1 and result["written"] >= 1
    assert mine.read_bytes() == b"my own analysis"
    entry = json.loads((out / "manifest.json").read_text())["cases"][case_id]
    assert entry["status"] == "failed" and "not written by medgen" in entry["error"]


def test_a_second_evaluation_does_not_replace_the_first(trained, tmp_path, capsys):
    run, head = trained
    out = tmp_path / "pred"
    infer(run, head.parent, out=out)
    evaluate(out, head.parent)
    before = (tmp_path / "eval" / "per_case.csv").read_text()
    assert main(["evaluate", str(out), str(head.parent)]) == 2
    assert "already holds an evaluation" in capsys.readouterr().err
    assert (tmp_path / "eval" / "per_case.csv").read_text() == before
    assert main(["evaluate", str(out), str(head.parent), "--overwrite"]) == 0


def _bad_dataset(head: Path, dest: Path, how: str) -> Path:
    data = _copy_dataset(head, dest)
    meta = json.loads((data / "dataset.json").read_text())
    first = meta["test"][0]
    src = nib.load(data / first["t1"])
    arr = np.asarray(src.dataobj)
    if how == "4d":
        nib.save(nib.Nifti1Image(np.stack([arr, arr, arr], -1), src.affine), str(data / "bad.nii.gz"))
        first["t1"] = "bad.nii.gz"
    elif how == "2d":
        nib.save(nib.Nifti1Image(arr[:, :, 0], src.affine), str(data / "bad.nii.gz"))
        first["t1"] = "bad.nii.gz"
    elif how == "list":
        first["t1"] = [first["t1"], first["t1"]]
    (data / "dataset.json").write_text(json.dumps(meta))
    return data


@pytest.mark.parametrize("how", ["4d", "2d", "list"])
def test_one_bad_case_first_does_not_stop_the_others(trained, tmp_path, how, capsys):
    run, head = trained
    data = _bad_dataset(head, tmp_path / "data", how)
    out = tmp_path / "pred"
    assert main(["infer", str(run), str(data), "--out", str(out)]) == 1  # failures show in the exit code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    manifest = json.loads((out / "manifest.json").read_text())
    statuses = [manifest["cases"][c["id"]]["status"] for c in json.loads((data / "dataset.json").read_text())["test"]]
    assert statuses[0] == "failed" and all(s == "ok" for s in statuses[1:])


def test_a_list_of_paths_for_one_image_names_the_case_and_key(trained, tmp_path, capsys):
    _, head = trained
    data = _copy_dataset(head, tmp_path / "data")
    meta = json.loads((data / "dataset.json").read_text())
    case = meta["training"][0]
    case["t1"] = [case["t1"], case["t1"]]
    (data / "dataset.json").write_text(json.dumps(meta))
    assert main(["train", "template_translation", f"data.dataset={data}", "data.patch_size=[16,16,16]", *TOY,
                 "train.iterations=2", f"output.root={tmp_path / 'runs'}", "output.name=r"]) == 2
    err = capsys.readouterr().err
    assert f"case '{case['id']}' (training) key 't1': expected one file path, got a list of 2" in err
    assert "TypeError" not in err and "dataset.json" in err


@pytest.mark.parametrize("text", ["{}", '{"training": [], "test": []}'])
def test_infer_on_an_empty_split_is_an_error(trained, tmp_path, text, capsys):
    run, _ = trained
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.json").write_text(text)
    assert main(["infer", str(run), str(data), "--out", str(tmp_path / "pred")]) == 2
    err = capsys.readouterr().err
    assert "dataset.json" in err and "no cases to predict: the 'test' split is empty or missing" in err
    assert not (tmp_path / "pred").exists()


def test_a_prediction_that_is_not_finite_is_never_marked_ok(trained, tmp_path, monkeypatch):
    run, head = trained
    from medgen.pipelines.image_to_image import ImageToImagePipeline

    original = ImageToImagePipeline.predict_case

    def poisoned(self, case):
        out = original(self, case)
        out["output"][0, 0, 0, 0] = float("nan")
        return out

    monkeypatch.setattr(ImageToImagePipeline, "predict_case", poisoned)
    result = infer(run, head.parent, out=tmp_path / "pred")
    assert result["written"] == 0 and result["failed"] >= 1
    manifest = json.loads((tmp_path / "pred" / "manifest.json").read_text())
    assert all(e["status"] == "failed" and "non-finite" in e["error"] for e in manifest["cases"].values())
    assert not list((tmp_path / "pred").glob("*.nii.gz"))


def test_an_unwritable_output_folder_is_a_clear_error(trained, tmp_path, capsys):
    import os

    run, head = trained
    out = tmp_path / "ro"
    out.mkdir()
    os.chmod(out, 0o555)
    try:
        if os.access(out, os.W_OK):  # root ignores permissions: nothing to show here
            pytest.skip("running as root: a read-only folder is still writable")
        assert main(["infer", str(run), str(head.parent), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "cannot write" in err and "Traceback" not in err
    finally:
        os.chmod(out, 0o755)


def test_an_output_folder_that_cannot_be_made_is_a_clear_error(trained, tmp_path, capsys):
    run, head = trained
    blocker = tmp_path / "taken"
    blocker.write_text("a file where the folder should be")
    assert main(["infer", str(run), str(head.parent), "--out", str(blocker / "pred")]) == 2
    err = capsys.readouterr().err
    assert "cannot create the output folder" in err and "Traceback" not in err


def test_demo_seeds_never_share_phantoms(tmp_path):
    from medgen.engine.demo import write_phantoms

    folder = tmp_path / "head"
    write_phantom_dataset("head", folder, n_cases=2, seed=0, shape=(8, 8, 8))
    with pytest.raises(MedgenError, match="seed 0, not 1"):
        write_phantoms(tmp_path, seed=1)
