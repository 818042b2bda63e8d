"""The shared 3D image-to-image machinery, end to end, on the head phantom."""
import json

import nibabel as nib
import numpy as np
import pytest

import medgen.pipelines._template  # noqa: F401  (registers template_translation)
from medgen.data.phantoms import write_phantom_dataset
from medgen.engine.commands import build_config, evaluate, infer, train_config


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    root = tmp_path_factory.mktemp("head")
    return write_phantom_dataset("head", root / "head", n_cases=5, seed=3, shape=(24, 24, 24))


def test_train_resume_infer_evaluate(head, tmp_path):
    common = [f"data.dataset={head.parent}", "data.patch_size=[16,16,16]", "train.val_every=10",
              "train.progress=off", f"output.root={tmp_path}", "output.name=r", "infer.overlap=0.25"]
    cls, cfg = build_config("template_translation", None, ["train.iterations=10", *common])
    train_config(cls, cfg)
    cls, cfg = build_config("template_translation", None, ["train.iterations=30", *common])
    summary = train_config(cls, cfg, resume=True)
    run = tmp_path / "template_translation" / "r"
    assert summary["best_metric"] is not None
    result = infer(run)
    assert result["written"] >= 1 and result["failed"] == 0
    manifest = json.loads((run / "predictions" / "manifest.json").read_text())
    datalist = json.loads(head.read_text())
    for case in datalist["test"]:
        entry = manifest["cases"][case["id"]]
        src = nib.load(head.parent / case["t1"])
        out = nib.load(entry["files"][0]["path"])
        assert out.shape == src.shape
        np.testing.assert_array_equal(out.affine, src.affine)
    again = infer(run)
    assert again["written"] == 0 and again["skipped"] == result["written"]  # reruns do only what is missing
    ev = evaluate(run / "predictions", head.parent)
    assert (run / "eval" / "per_case.csv").exists() and (run / "eval" / "report.md").exists()
    assert ev["summary"]["metrics"]["psnr"]["n"] == len(datalist["test"])


def test_export_cli_round_trip(head, tmp_path):
    from medgen.cli import main

    common = [f"data.dataset={head.parent}", "data.patch_size=[16,16,16]", "train.iterations=2",
              "train.progress=off", f"output.root={tmp_path}", "output.name=e"]
    assert main(["train", "template_translation", *common]) == 0
    run = tmp_path / "template_translation" / "e"
    assert main(["export", str(run), "--format", "torchscript"]) == 0
    assert (run / "export" / "G.ts").exists()
    assert main(["export", str(run), "--network", "D"]) == 2  # a clear error, not a traceback


def test_one_bad_case_does_not_stop_inference(tmp_path):
    import shutil

    root = tmp_path / "data"
    dataset = write_phantom_dataset("head", root, n_cases=5, seed=4, shape=(24, 24, 24))
    common = [f"data.dataset={root}", "data.patch_size=[16,16,16]", "train.iterations=2", "train.progress=off",
              f"output.root={tmp_path}", "output.name=b"]
    cls, cfg = build_config("template_translation", None, common)
    train_config(cls, cfg)
    datalist = json.loads(dataset.read_text())
    bad = datalist["test"][0]
    t1 = root / bad["t1"]
    shutil.copy(t1, tmp_path / "t1_backup.nii.gz")
    t1.write_bytes(t1.read_bytes()[:200])  # truncated file
    result = infer(tmp_path / "template_translation" / "b")
    assert result["failed"] == 1 and result["written"] == len(datalist["test"]) - 1
    manifest = json.loads((tmp_path / "template_translation" / "b" / "predictions" / "manifest.json").read_text())
    assert manifest["cases"][bad["id"]]["status"] == "failed"
    assert bad["t1"].split("/")[-1] in manifest["cases"][bad["id"]]["error"]  # the error names the file
    shutil.copy(tmp_path / "t1_backup.nii.gz", t1)
    rerun = infer(tmp_path / "template_translation" / "b")  # only the missing case is processed
    assert rerun == dict(rerun, written=1, failed=0, skipped=len(datalist["test"]) - 1)


def test_bad_training_case_refused_or_skipped(tmp_path):
    from medgen.errors import DataError
    from medgen.pipelines._template import TemplateTranslation

    root = tmp_path / "data"
    dataset = write_phantom_dataset("head", root, n_cases=5, seed=5, shape=(16, 16, 16))
    bad = json.loads(dataset.read_text())["training"][0]
    (root / bad["t2"]).write_bytes(b"\x00" * 10)
    cls, cfg = build_config("template_translation", None, [f"data.dataset={root}"])
    with pytest.raises(DataError, match=bad["t2"].split("/")[-1]):
        TemplateTranslation(cfg).data.load("training")
    cls, cfg = build_config("template_translation", None, [f"data.dataset={root}", "data.skip_bad_cases=true"])
    pipeline = TemplateTranslation(cfg)
    with pytest.warns(UserWarning, match="skipping case"):
        cases = pipeline.data.load("training")
    assert bad["id"] not in {c.id for c in cases} and pipeline.data.skipped[0].id == bad["id"]


def test_phantom_folder_per_request_and_stale_folders_refused(tmp_path):
    """data.phantom_dir is written on first use: configs asking for different phantoms get different folders
    (two smoke configs sharing demo_data never read each other's cases), and a folder whose phantom differs from
    the request gives a clear error naming the folder and the difference instead of silent reuse."""
    from medgen.errors import MedgenError
    from medgen.config.sections import ImageDataConfig
    from medgen.data.phantoms import phantom_dataset

    cfg = ImageDataConfig(phantom_dir=str(tmp_path), phantom_cases=3, phantom_shape=[16, 16, 16])
    folder = phantom_dataset("head", cfg, seed=0)
    assert folder == tmp_path / "head_3cases_16x16x16"
    assert json.loads((folder / "dataset.json").read_text())["phantom"]["n_cases"] == 3
    assert phantom_dataset("head", cfg, seed=0) == folder  # same request: reused as it is
    other = ImageDataConfig(phantom_dir=str(tmp_path), phantom_cases=4, phantom_shape=[16, 16, 16])
    assert phantom_dataset("head", other, seed=0) == tmp_path / "head_4cases_16x16x16"
    with pytest.raises(MedgenError, match=r"n_cases=3 \(asked: 4\)") as err:
        phantom_dataset("head", other, seed=0, folder=folder)
    assert str(folder) in str(err.value)
    with pytest.raises(MedgenError, match=r"seed=0 \(asked: 1\)"):
        phantom_dataset("head", cfg, seed=1)
