"""Baselines by name: fitted on the training split, tuned on validation, scored by the pipeline's own
evaluate_case beside the model, reachable from the command line."""
import json

import nibabel as nib
import numpy as np
import pytest

import medgen.pipelines._template  # noqa: F401  (registers template_translation)
from medgen.baselines.registry import BASELINES, Gaussian, fit_baselines
from medgen.cli import main
from medgen.data.phantoms import write_phantom_dataset
from medgen.engine.commands import build_config
from medgen.errors import ConfigError, MedgenError
from medgen.registry import PIPELINES


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    return write_phantom_dataset("head", tmp_path_factory.mktemp("bl") / "head", n_cases=6, seed=2,
                                 shape=(24, 24, 24)).parent


def _pipeline(name, dataset, *overrides):
    cls, cfg = build_config(name, None, [f"data.dataset={dataset}", *overrides])
    return cls(cfg)


def test_every_declared_baseline_is_registered_and_undeclared_ones_are_refused(head):
    for name in PIPELINES.names():
        assert set(PIPELINES.get(name).baselines) <= set(BASELINES), name
    p = _pipeline("mr_synthesis", head)
    with pytest.raises(ConfigError, match="has no baseline 'gaussian'.*histogram_matching, linear_regression"):
        fit_baselines(p, ["gaussian"])


def test_the_gaussian_sigma_is_the_best_on_validation_and_beats_the_low_dose(head):
    p = _pipeline("pet_lowdose", head)
    g = Gaussian().fit(p)
    assert g.value in Gaussian.candidates
    assert g.validation_scores[g.value] == max(g.validation_scores.values())
    # Margin fixed before the first run: smoothing Poisson noise helps PSNR on every test phantom.
    for case in p.data.load("test"):
        smoothed = p.evaluate_case(g.values(case), case)["psnr"]
        low_dose = p.evaluate_case(p.floors(case)["input"], case)["psnr"]
        assert smoothed > low_dose + 0.5, (case.id, smoothed, low_dose)


def test_a_linear_map_beats_the_best_constant_and_keeps_the_geometry(head, tmp_path, capsys):
    assert main(["baselines", "mr_synthesis", f"data.dataset={head}", "--out", str(tmp_path / "b"),
                 "--only", "linear_regression"]) == 0
    assert "baseline: linear_regression" in capsys.readouterr().out
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    methods = summary["methods"]
    # Margin fixed before the first run: T1 -> T2 is close to a linear (inverted) map inside the brain.
    assert (methods["baseline: linear_regression"]["metrics"]["psnr"]["mean"]
            >= methods["floor: target_mean"]["metrics"]["psnr"]["mean"] + 3.0)
    entry = json.loads((head / "dataset.json").read_text())["test"][0]
    written = nib.load(tmp_path / "b" / "predictions" / f"{entry['id']}_output_linear_regression.nii.gz")
    source = nib.load(head / entry["t1"])
    assert written.shape == source.shape and np.allclose(written.affine, source.affine)
    # nothing replaced without being asked
    assert main(["baselines", "mr_synthesis", f"data.dataset={head}", "--out", str(tmp_path / "b")]) == 2
    assert "already holds a baseline evaluation" in capsys.readouterr().err


def test_pca_reconstructs_better_than_the_training_mean(tmp_path):
    from medgen.engine.baseline_runs import run_baselines

    expr = write_phantom_dataset("expression", tmp_path / "expr", seed=0).parent
    result = run_baselines("expression_vae", None, [f"data.dataset={expr}", "model.latent_dim=10"],
                           out=tmp_path / "b")
    methods = result["summary"]["methods"]
    pca, mean = methods["baseline: pca"]["metrics"], methods["floor: training_mean"]["metrics"]
    assert pca["mse"]["mean"] <= 0.9 * mean["mse"]["mean"]  # margin fixed before the first run
    assert (tmp_path / "b" / "predictions" / "test_latent_pca.tsv").exists()


def test_evaluate_scores_the_baselines_beside_the_model_with_a_verdict(tmp_path, head):
    from medgen.engine.commands import evaluate, infer, train_config

    cls, cfg = build_config("template_translation", None, [
        f"data.dataset={head}", "data.patch_size=[16,16,16]", "train.iterations=2", "train.progress=off",
        f"output.root={tmp_path}", "output.name=r"])
    train_config(cls, cfg)
    result = evaluate(infer(tmp_path / "template_translation" / "r", split="test")["out"])
    summary = result["summary"]
    assert set(summary["baselines"]) == {"linear_regression"}
    assert summary["baselines"]["linear_regression"]["n_cases"] == summary["n_cases"]
    # two steps of training cannot beat a fitted linear map: the verdict says so rather than staying silent
    assert "does not beat linear_regression" in summary["verdicts"]["linear_regression"]
    assert "baseline: linear_regression" in result["table"]
    with pytest.raises(MedgenError, match="already holds an evaluation"):
        evaluate(tmp_path / "template_translation" / "r" / "predictions", baselines=[])
