import re
from dataclasses import dataclass, field

import pytest

from medgen.config import apply_overrides, from_dict, load_config, save_config, to_dict
from medgen.config.sections import PipelineConfig
from medgen.errors import ConfigError


@dataclass
class Inner:
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    patch: list[int] = field(default_factory=lambda: [64, 64, 64])


@dataclass
class Outer(PipelineConfig):
    model: Inner = field(default_factory=Inner)


def test_unknown_key_names_the_closest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"model\.lrr.*did you mean 'lr'"):
        load_config(Outer, path)


def test_unknown_override_key():
    with pytest.raises(ConfigError, match=r"train\.iteration.*did you mean 'iterations'"):
        load_config(Outer, None, ["train.iteration=5"])


def test_overrides_and_types(tmp_path):
    cfg = load_config(Outer, None, ["model.lr=1e-3", "model.patch=[32,32,32]", "train.iterations=7", "train.amp=off"])
    assert cfg.model.lr == 1e-3 and cfg.model.patch == [32, 32, 32] and cfg.train.iterations == 7
    assert cfg.model.betas == (0.5, 0.999)
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config(Outer, None, ["train.iterations=abc"])
    with pytest.raises(ConfigError, match="must be one of"):
        load_config(Outer, None, ["train.amp=fp8"])


def test_round_trip(tmp_path):
    cfg = load_config(Outer, None, ["model.lr=0.01"])
    save_config(cfg, tmp_path / "r.yaml")
    again = load_config(Outer, tmp_path / "r.yaml")
    assert to_dict(again) == to_dict(cfg)


def test_yaml_scientific_string_is_a_number():
    assert from_dict(Inner, {"lr": "1e-4"}).lr == 1e-4


def test_apply_overrides_creates_nested():
    assert apply_overrides({}, ["a.b.c=3"]) == {"a": {"b": {"c": 3}}}


def test_validation_hook():
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(Outer, None, ["train.batch_size=0"])


@dataclass
class Rates:
    lr: float = 2e-4
    lr_d: float = 1e-4
    encoder_lr: float = 5e-5
    lr_decay: float = 0.1
    lr_decay_fraction: float = 0.5


@dataclass
class RatesConfig(PipelineConfig):
    model: Rates = field(default_factory=Rates)


@pytest.mark.parametrize("override", ["model.lr=.nan", "model.lr=.inf", "model.lr=0", "model.lr=-1e-4",
                                      "model.lr_d=.nan", "model.encoder_lr=0", "model.lr_decay=.nan"])
def test_bad_learning_rate_is_a_config_error_naming_the_field(override):
    field_name = override.split("=")[0]
    with pytest.raises(ConfigError, match=re.escape(f"'{field_name}'")):
        load_config(RatesConfig, None, [override])


def test_lr_schedule_fields_may_be_zero():
    cfg = load_config(RatesConfig, None, ["model.lr_decay_fraction=0", "model.lr_decay=0"])
    assert cfg.model.lr_decay_fraction == 0 and cfg.model.lr == 2e-4


def test_every_pipeline_refuses_a_nan_learning_rate():
    from medgen.registry import PIPELINES

    for name in PIPELINES.names():
        cls = PIPELINES.get(name).config_class
        with pytest.raises(ConfigError, match=r"'model\.lr'"):
            load_config(cls, None, ["model.lr=.nan"])
