"""Outputs in physical units by default (the target's own: PET in the input's units, CT in HU, MR on the
target's intensity scale), the network's normalised space only on request, and the manifest and the report
saying which."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import medgen.pipelines._template  # noqa: F401  (registers template_translation)
from medgen.data.phantoms import write_phantom_dataset
from medgen.engine.commands import build_config, evaluate, infer, load_trained, train_config
from medgen.errors import MedgenError
from tests.datalists import absolute_datalist

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# pipeline -> (smoke config or None, overrides, target key)
PIPELINES = {
    "pet_lowdose": ("pet_lowdose_smoke.yaml", ["model.stages=1"], "full_dose"),
    "mr_synthesis": ("mr_synthesis_smoke.yaml", [], "t2"),
    "mr_to_ct": ("mr_to_ct_smoke.yaml", ["model.stages=1"], "ct"),
    "template_translation": (None, ["data.patch_size=[16,16,16]"], "t2"),
}


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    return write_phantom_dataset("head", tmp_path_factory.mktemp("units") / "head", n_cases=5, seed=3,
                                 shape=(24, 24, 24)).parent


@pytest.fixture(scope="module")
def runs(head, tmp_path_factory):
    """Each image pipeline trained 2 steps: its written values need no skill, only the right scale."""
    root = tmp_path_factory.mktemp("runs")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    for name, (config, extra, _) in PIPELINES.items():
        cls, cfg = build_config(name, CONFIGS / config if config else None, [
            f"data.dataset={head}", "train.iterations=2", "train.val_every=2", "train.progress=off",
            f"output.root={root}", "output.name=r", *extra])
        train_config(cls, cfg)
        out[name] = root / name / "r"
    torch.set_num_threads(before)
    return out


def _written(manifest_path: Path) -> dict:
    manifest = json.loads(manifest_path.read_text())
    return manifest, {cid: e["files"][-1] for cid, e in manifest["cases"].items() if e.get("status") == "ok"}


@pytest.mark.parametrize("name", list(PIPELINES))
def test_outputs_are_in_the_targets_units_unless_normalised_is_asked(name, runs, head, tmp_path):
    run, target_key = runs[name], PIPELINES[name][2]
    physical = infer(run, out=tmp_path / "physical")
    normalised = infer(run, out=tmp_path / "normalised", units="normalised")
    assert physical["failed"] == normalised["failed"] == 0 and physical["written"] >= 1
    manifest_p, files_p = _written(tmp_path / "physical" / "manifest.json")
    manifest_n, files_n = _written(tmp_path / "normalised" / "manifest.json")
    assert manifest_p["units"] == "physical" and manifest_n["units"] == "normalised"
    declared = json.loads((head / "dataset.json").read_text())["units"][target_key]
    _, _, stages, _ = load_trained(run)
    stage = stages[-1]
    for case in stage.data.load("test"):
        p, n = files_p[case.id], files_n[case.id]
        assert p["units"] == declared and n["units"].startswith("normalised")
        written_p = np.asarray(nib.load(p["path"]).dataobj, dtype=np.float32)
        written_n = np.asarray(nib.load(n["path"]).dataobj, dtype=np.float32)
        # the physical file is the normalised one mapped back with the target's stored inverse, exactly
        expected = stage.to_source_units(case, torch.from_numpy(written_n)[None], stage.output_params(case))[0]
        np.testing.assert_allclose(written_p, expected, rtol=1e-5, atol=1e-3 * float(np.abs(expected).max()))
        # ... and it lies on the reference's own scale (hundreds to thousands here), the normalised one does not
        ref = stage.reference(case)
        mask = stage.metric_mask(case)
        inside = written_p[mask] if mask is not None else written_p.ravel()
        span = float(ref.max() - ref.min())
        assert span > 100
        assert ref.min() - span <= np.median(inside) <= ref.max() + span
        assert np.abs(written_p).max() > 10 * max(np.abs(written_n).max(), 1.0)
        assert np.abs(written_n).max() < span / 10


def test_evaluate_reports_the_units_and_refuses_normalised_files(runs, tmp_path):
    run = runs["mr_to_ct"]
    result = evaluate(infer(run, out=tmp_path / "physical")["out"], out=tmp_path / "eval")
    assert result["summary"]["units"] == "HU"
    assert "Units of the outputs and references: HU (physical)." in (tmp_path / "eval" / "report.md").read_text()
    infer(run, out=tmp_path / "normalised", units="normalised")
    with pytest.raises(MedgenError, match="normalised units .* predict again without --units"):
        evaluate(tmp_path / "normalised", out=tmp_path / "eval2")
    with pytest.raises(MedgenError, match="holds predictions in physical units"):
        infer(run, out=tmp_path / "physical", units="normalised")  # never two scales in one folder


def test_validation_scores_physical_units_whatever_infer_units_says(runs, head):
    _, _, stages, _ = load_trained(runs["mr_to_ct"])
    stage = stages[0]
    case = stage.data.load("test")[0]
    prediction = stage.predict_case(case)
    stage.config.infer.units = "normalised"  # the config field chooses what infer writes, nothing else
    values = stage.output_values(case, prediction)[stage.output_name]
    assert float(np.abs(values).max()) > 100  # HU


@pytest.mark.parametrize("name", ["mr_synthesis", "template_translation"])
def test_a_case_without_its_target_is_written_on_the_training_targets_scale(name, runs, head, tmp_path):
    """New data has no target to take a scale from: the output is written on the training targets' scale
    (saved with the model), not in the network's [-1, 1]."""
    target_key = PIPELINES[name][2]
    meta = absolute_datalist(head)
    for case in meta["test"]:
        del case[target_key]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dataset.json").write_text(json.dumps(meta))
    physical = infer(runs[name], tmp_path / "data", out=tmp_path / "physical")
    infer(runs[name], tmp_path / "data", out=tmp_path / "normalised", units="normalised")
    assert physical["failed"] == 0 and physical["written"] == len(meta["test"])
    _, files_p = _written(tmp_path / "physical" / "manifest.json")
    _, files_n = _written(tmp_path / "normalised" / "manifest.json")
    _, _, stages, _ = load_trained(runs[name], dataset=tmp_path / "data")
    stage = stages[-1]
    scale = stage.target_scale()
    assert scale and scale["preset"] == "mr" and scale["high"] > 100
    from medgen.engine.checkpoint import load_checkpoint

    saved = load_checkpoint(runs[name] / "checkpoints" / "best.pt")["pipeline_state"]["target_params"]
    assert saved == scale  # learnt from the training targets and saved with the model
    for case in stage.data.load("test"):
        assert target_key not in case.norm
        assert files_p[case.id]["units"] == "a.u."
        written_p = np.asarray(nib.load(files_p[case.id]["path"]).dataobj, dtype=np.float32)
        written_n = np.asarray(nib.load(files_n[case.id]["path"]).dataobj, dtype=np.float32)
        expected = stage.to_source_units(case, torch.from_numpy(written_n)[None], scale)[0]
        np.testing.assert_allclose(written_p, expected, rtol=1e-5, atol=1e-3 * float(np.abs(expected).max()))
        assert np.abs(written_p).max() > 100 > 10 * np.abs(written_n).max()
