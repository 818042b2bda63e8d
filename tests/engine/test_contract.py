"""The pipeline contract (medgen/pipelines/base.py): a missing piece fails at registration with a message that
names it, and a copy of the template is a working pipeline without touching any other file."""
import shutil
import sys

import pytest
import torch

from medgen.config.sections import PipelineConfig
from medgen.data.phantoms import write_phantom_dataset
from medgen.errors import ConfigError
from medgen.pipelines.base import Pipeline
from medgen.registry import PIPELINES, Registry, _check_pipeline

REPO_PIPELINES = __import__("medgen.pipelines", fromlist=["x"]).__path__[0]


def _registry():
    return Registry("pipeline", "medgen.pipelines", check=_check_pipeline)


def test_a_pipeline_missing_a_required_piece_is_refused_by_name():
    from dataclasses import dataclass

    @dataclass
    class HalfConfig(PipelineConfig):
        pipeline: str = "half_done"

    class HalfDone(Pipeline):
        name = "half_done"
        description = "builds networks but never trains"
        config_class = HalfConfig

        def build_networks(self):
            return {"G": torch.nn.Linear(1, 1)}

    with pytest.raises(ConfigError) as err:
        _registry().register()(HalfDone)
    said = str(err.value)
    for missing in ("build_optimizers", "train_step", "predict_case", "train_dataset", "outputs"):
        assert f"`{missing}` is not defined" in said
    assert "build_networks" not in said and "HalfDone" in said


def test_wrong_values_are_named():
    from medgen.pipelines._template.method import TemplateTranslation

    bad = type("TemplateTranslation", (TemplateTranslation,), {"key_metric_mode": "up", "baselines": ("magic",),
                                                               "phantom": "moon"})
    with pytest.raises(ConfigError) as err:
        _registry().register()(bad)
    said = str(err.value)
    assert "`key_metric_mode` must be 'min' or 'max'" in said
    assert "unknown baselines ['magic']" in said and "`phantom` 'moon'" in said


def test_a_copy_of_the_template_trains_and_predicts_untouched(tmp_path, monkeypatch):
    """Copy the folder, rename the class and the config default: the copy registers, trains, predicts and
    evaluates; no file outside the copy changes."""
    from medgen.engine.commands import build_config, evaluate, infer, train_config

    package = tmp_path / "mine" / "my_translation"
    shutil.copytree(f"{REPO_PIPELINES}/_template", package, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "mine" / "__init__.py").write_text("")
    for path in package.glob("*.py"):
        text = path.read_text().replace("medgen.pipelines._template", "mine.my_translation")
        text = text.replace("TemplateTranslation", "MyTranslation").replace('"template_translation"', '"my_translation"')
        path.write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        __import__("mine.my_translation")
        assert "my_translation" in PIPELINES.names()
        head = write_phantom_dataset("head", tmp_path / "head", n_cases=4, seed=0, shape=(24, 24, 24)).parent
        cls, cfg = build_config("my_translation", None, [
            f"data.dataset={head}", "data.patch_size=[16,16,16]", "train.iterations=2", "train.progress=off",
            f"output.root={tmp_path / 'runs'}", "output.name=r"])
        train_config(cls, cfg)
        run = tmp_path / "runs" / "my_translation" / "r"
        result = evaluate(infer(run, split="test")["out"], baselines=[])
        assert result["summary"]["n_cases"] >= 1 and "psnr" in result["summary"]["metrics"]
    finally:
        PIPELINES._items.pop("my_translation", None)
        for name in [m for m in sys.modules if m == "mine" or m.startswith("mine.")]:
            del sys.modules[name]
