"""mr_synthesis's config: the settings of Yu et al., "Ea-GANs: edge-aware generative adversarial networks for
cross-modality MR image synthesis", IEEE TMI 38(7) 2019, and of their released code ("official code"); "ours"
marks medgen's own choices."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from medgen.config.sections import ImageDataConfig, PipelineConfig, TrainConfig
from medgen.errors import ConfigError
from medgen.pipelines.image_to_image import check_patch_size

VARIANTS = ("cgan", "gea", "dea")


@dataclass
class MRSynthesisModelConfig:
    variant: Literal["cgan", "gea", "dea"] = "dea"  # paper: dEa-GAN is its full method
    source_keys: list[str] = field(default_factory=lambda: ["t1"])  # paper: T1 -> T2 / FLAIR; several = multi-source (ours)
    target_key: str = "t2"  # paper: T1 -> T2 (and T1 -> FLAIR)
    ngf: int = 64  # paper / official code: generator base channels
    num_downs: int = 0  # paper: depth to match the patch (7 for 128^3); 0 = derived from data.patch_size
    dropout: float = 0.5  # paper / pix2pix: dropout 0.5 in the middle up blocks
    norm: Literal["batch", "instance"] = "batch"  # official code (pix2pix default --norm batch)
    ndf: int = 64  # paper: PatchGAN base channels
    n_layers_d: int = 3  # paper: 3-layer PatchGAN
    lambda_l1: float = 300.0  # paper: lambda_L1 = 300
    lambda_edge: float = 100.0  # paper: final edge weight 100 (gea / dea only)
    edge_ramp_epochs: float = 20.0  # paper: lambda_edge linear from 0 over the first 20 epochs, then held
    real_label_range: list[float] = field(default_factory=lambda: [0.7, 1.2])  # official scripts (drawn per step: ours)
    fake_label_range: list[float] = field(default_factory=lambda: [0.0, 0.3])  # official scripts (drawn per step: ours)
    lr: float = 2e-4  # paper: Adam 2e-4
    beta1: float = 0.5  # paper: betas (0.5, 0.999)
    beta2: float = 0.999  # paper
    epochs_constant: float = 100.0  # paper: 100 epochs at the full rate
    epochs_decay: float = 50.0  # paper: then 50 epochs of linear decay to 0
    init_gain: float = 0.02  # official code (pix2pix init_type normal, gain 0.02)
    mask_output: bool = True  # ours: estimate = background (-1) outside the brain mask, in training and inference

    def validate(self):
        if self.variant not in VARIANTS:
            raise ConfigError(f"model.variant must be one of {VARIANTS}, got {self.variant!r}")
        if not self.source_keys:
            raise ConfigError("model.source_keys must name at least one dataset key, e.g. ['t1']")
        if len(set(self.source_keys)) != len(self.source_keys):
            raise ConfigError(f"model.source_keys has a key twice: {self.source_keys}")
        if self.target_key in self.source_keys:
            raise ConfigError(f"model.target_key {self.target_key!r} is also a source key {self.source_keys}")
        for name in ("real_label_range", "fake_label_range"):
            value = getattr(self, name)
            if len(value) != 2 or value[0] > value[1]:
                raise ConfigError(f"model.{name} must be [low, high] with low <= high, got {value}")
        if self.lambda_l1 < 0 or self.lambda_edge < 0 or self.edge_ramp_epochs < 0:
            raise ConfigError("model.lambda_l1, model.lambda_edge and model.edge_ramp_epochs must be >= 0")
        if self.epochs_constant < 0 or self.epochs_decay < 0:
            raise ConfigError("model.epochs_constant and model.epochs_decay must be >= 0")


@dataclass
class MRSynthesisDataConfig(ImageDataConfig):
    patch_size: list[int] = field(default_factory=lambda: [128, 128, 128])  # paper: 128^3 (whole volumes there)
    mask_key: str = "brain_mask"  # ours: metrics inside the brain; derived from the sources' nonzero region if absent


@dataclass
class MRSynthesisTrainConfig(TrainConfig):
    batch_size: int = 6  # paper: batch 6 of 128^3
    epochs: float = 150.0  # paper: 100 constant + 50 decay epochs (an epoch: see samples_per_epoch)
    # samples_per_epoch 0: one epoch = as many patches as cover every training volume once (voxel count),
    # i.e. about the voxels of the reference's pass over whole volumes (ours).


@dataclass
class MRSynthesisConfig(PipelineConfig):
    pipeline: str = "mr_synthesis"
    data: MRSynthesisDataConfig = field(default_factory=MRSynthesisDataConfig)
    train: MRSynthesisTrainConfig = field(default_factory=MRSynthesisTrainConfig)
    model: MRSynthesisModelConfig = field(default_factory=MRSynthesisModelConfig)

    def validate(self):
        check_patch_size(self.data.patch_size)
        mask = self.data.mask_key
        if mask and (mask in self.model.source_keys or mask == self.model.target_key):
            raise ConfigError(f"data.mask_key {mask!r} is also an image key of the model")
