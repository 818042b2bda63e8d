"""The method's config: every default names its source (here: the template's own choices)."""

from __future__ import annotations

from dataclasses import dataclass, field

from medgen.config.sections import ImageDataConfig, PipelineConfig
from medgen.errors import ConfigError


@dataclass
class TemplateDataConfig(ImageDataConfig):
    source_key: str = "t1"  # ours: dataset.json key of the input contrast
    target_key: str = "t2"  # ours: dataset.json key of the contrast to synthesise
    patch_size: list[int] = field(default_factory=lambda: [32, 32, 32])  # ours: small patches for a CPU


@dataclass
class TemplateModelConfig:
    ngf: int = 8  # ours: U-Net base channels
    lr: float = 2e-3  # ours: Adam learning rate

    def validate(self):
        if self.ngf < 1 or self.lr <= 0:
            raise ConfigError("model.ngf must be >= 1 and model.lr > 0")


@dataclass
class TemplateConfig(PipelineConfig):
    pipeline: str = "template_translation"
    data: TemplateDataConfig = field(default_factory=TemplateDataConfig)
    model: TemplateModelConfig = field(default_factory=TemplateModelConfig)
