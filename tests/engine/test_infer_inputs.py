"""`medgen infer RUN PATH` where PATH is a dataset folder, one image, a DICOM series or a folder of images: the
outputs come back in each source's geometry, and a pipeline that reads several keys asks for a dataset."""
import json

import nibabel as nib
import numpy as np
import pytest

import medgen.pipelines._template  # noqa: F401  (registers template_translation)
from medgen.cli import main
from medgen.data.phantoms import write_phantom_dataset
from medgen.engine.commands import build_config, train_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    head = write_phantom_dataset("head", root / "head", n_cases=5, seed=6, shape=(16, 16, 16))
    cls, cfg = build_config("template_translation", None, [f"data.dataset={head.parent}", "data.patch_size=[16,16,16]",
                                                           "train.iterations=2", "train.progress=off",
                                                           f"output.root={root}", "output.name=r"])
    train_config(cls, cfg)
    return root / "template_translation" / "r", head.parent


def _outputs(out):
    manifest = json.loads((out / "manifest.json").read_text())
    return {cid: e for cid, e in manifest["cases"].items()}


def test_one_image_file(run, tmp_path):
    run_dir, head = run
    t1 = sorted(head.glob("case*/t1.nii.gz"))[0]
    out = tmp_path / "one"
    assert main(["infer", str(run_dir), str(t1), "--out", str(out)]) == 0
    cases = _outputs(out)
    assert list(cases) == ["t1"] and cases["t1"]["status"] == "ok"
    written = nib.load(cases["t1"]["files"][0]["path"])
    np.testing.assert_array_equal(written.affine, nib.load(t1).affine)
    assert written.shape == nib.load(t1).shape


def test_a_folder_of_images(run, tmp_path):
    run_dir, head = run
    folder = tmp_path / "scans"
    folder.mkdir()
    for k, t1 in enumerate(sorted(head.glob("case*/t1.nii.gz"))[:3]):
        (folder / f"subject{k}.nii.gz").write_bytes(t1.read_bytes())
    out = tmp_path / "many"
    assert main(["infer", str(run_dir), str(folder), "--out", str(out)]) == 0
    assert sorted(_outputs(out)) == ["subject0", "subject1", "subject2"]


def test_a_dicom_series(run, tmp_path):
    pytest.importorskip("SimpleITK")
    from tests.data.dicom_series import oblique_affine, write_series

    run_dir, _ = run
    affine = oblique_affine()
    arr = (np.random.default_rng(0).random((16, 18, 12)) * 1000).astype(np.int16)
    write_series(tmp_path / "series", arr, affine)
    out = tmp_path / "dcm"
    assert main(["infer", str(run_dir), str(tmp_path / "series"), "--out", str(out)]) == 0
    entry = next(iter(_outputs(out).values()))
    written = nib.load(entry["files"][0]["path"])
    assert written.shape == arr.shape
    np.testing.assert_allclose(written.affine, affine, atol=1e-4)


def test_images_without_dataset_need_a_one_input_pipeline(tmp_path, capsys):
    from medgen.data.cases import images_datalist
    from medgen.errors import DataError

    with pytest.raises(DataError, match="reads several keys"):
        images_datalist(tmp_path, None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no dataset.json and no images"):
        images_datalist(empty, "t1")
