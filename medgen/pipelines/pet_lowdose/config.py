"""pet_lowdose's config: the paper's settings (Wang et al., NeuroImage 174 (2018) 550-562, and the pix2pix
code it builds on), each default naming its source; "ours" marks medgen's own choices."""

from __future__ import annotations

from dataclasses import dataclass, field

from medgen.config.sections import ImageDataConfig, PipelineConfig
from medgen.errors import ConfigError
from medgen.pipelines.image_to_image import check_patch_size


@dataclass
class PetLowdoseDataConfig(ImageDataConfig):
    input_key: str = "low_dose"  # ours: dataset.json key of the low-dose PET
    target_key: str = "full_dose"  # ours: dataset.json key of the full-dose PET (the head phantom's key)
    region_key: str = "tissue"  # label map for regional bias ("" = none); phantom tissue labels (ours)
    regions: dict[str, int] = field(default_factory=lambda: {"grey_matter": 4, "white_matter": 5})  # phantom labels
    # ours: the PET scale (99.5th percentile) is taken on the input smoothed by this Gaussian sigma (voxels), so it
    # does not grow with the counting noise (raw percentile: +8 % at 25 % dose, +27 % at 5 %); 0 = the raw preset
    scale_smoothing_vox: float = 2.0

    def validate(self):
        check_patch_size(self.patch_size)
        if not self.scale_smoothing_vox >= 0:
            raise ConfigError(f"data.scale_smoothing_vox must be >= 0, got {self.scale_smoothing_vox}")
        if not self.input_key or not self.target_key or self.input_key == self.target_key:
            raise ConfigError(f"data.input_key and data.target_key must be two different dataset keys, got "
                              f"{self.input_key!r} and {self.target_key!r}")


@dataclass
class PetLowdoseModelConfig:
    stages: int = 2  # concatenated cGANs, progressive refinement (Wang et al. 2018, sec. 2.3)
    adversarial: bool = True  # false: the paper's plain 3D U-Net comparison (L1 only, no discriminator)
    lambda_l1: float = 300.0  # weight of L1 vs the adversarial term (~300 in this group's released code)
    gan_mode: str = "vanilla"  # pix2pix BCE-on-logits GAN loss (the paper's model is a 3D pix2pix)
    ngf: int = 64  # generator base channels (pix2pix default)
    num_downs: int = 0  # U-Net levels; 0 = as deep as the patch allows (6 for 64^3, 12 conv layers as the paper)
    ndf: int = 64  # discriminator base channels (pix2pix default)
    d_layers: int = 3  # PatchGAN stride-2 layers (pix2pix 70-patch default)
    norm: str = "batch"  # BN in generator and discriminator (paper)
    dropout: float = 0.0  # the paper mentions no dropout (ours: off)
    out_act: str = "none"  # linear output (the paper: tanh or linear; linear keeps activities above the scale)
    lr: float = 2e-4  # Adam (the pix2pix default the paper uses)
    beta1: float = 0.5  # Adam betas (pix2pix)
    beta2: float = 0.999
    lr_decay_fraction: float = 0.5  # last fraction of the steps with lr decaying linearly to 0 (pix2pix: half)
    # ours, off by default (the paper's generator); on in the benchmark and the demo, where they were chosen on the
    # validation split (docs/pipelines/pet_lowdose.md) for short training:
    residual: bool = False  # true: G predicts full dose - low dose (the mapping is close to the identity)
    full_res_channels: int = 0  # > 0: 3^3 convs at full resolution on [input, U-Net estimate] (U-Net's finest is 1/2)
    init: str = "normal"  # N(0, 0.02) weights (pix2pix init)
    init_gain: float = 0.02

    def validate(self):
        if self.stages < 1:
            raise ConfigError(f"model.stages must be >= 1, got {self.stages}")
        if self.lambda_l1 < 0:
            raise ConfigError(f"model.lambda_l1 must be >= 0, got {self.lambda_l1}")
        if self.full_res_channels < 0:
            raise ConfigError(f"model.full_res_channels must be >= 0, got {self.full_res_channels}")
        if not 0.0 <= self.lr_decay_fraction <= 1.0:
            raise ConfigError(f"model.lr_decay_fraction must be in [0, 1], got {self.lr_decay_fraction}")
        if self.gan_mode not in ("vanilla", "lsgan"):
            raise ConfigError(f"model.gan_mode must be 'vanilla' or 'lsgan', got {self.gan_mode!r}")


@dataclass
class PetLowdoseConfig(PipelineConfig):
    pipeline: str = "pet_lowdose"
    data: PetLowdoseDataConfig = field(default_factory=PetLowdoseDataConfig)
    model: PetLowdoseModelConfig = field(default_factory=PetLowdoseModelConfig)
