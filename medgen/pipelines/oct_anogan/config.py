"""oct_anogan's config: every default names its source (Schlegl et al. 2017 = AnoGAN, IPMI; Schlegl et al.
2019 = f-AnoGAN, Medical Image Analysis; Gulrajani et al. 2017 = WGAN-GP; Radford et al. 2016 = DCGAN;
"ours" = a choice of this implementation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from medgen.config.sections import DataConfig, InferConfig, PipelineConfig, TrainConfig
from medgen.errors import ConfigError

METHODS = ("fanogan", "anogan", "autoencoder")


@dataclass
class OCTDataConfig(DataConfig):
    patch_size: list[int] = field(default_factory=lambda: [64, 64])  # Schlegl 2017 / 2019: 64 x 64 (a power of 2 >= 8)
    mask_key: str = "mask"  # ours: anomaly mask key, for pixel AUC when present ("" = none)
    label_key: str = "label"  # ours: 0 normal / 1 abnormal per case in dataset.json
    depth_axis: str = "auto"  # ours: "auto", "0" (rows are depth) or "1" (columns are depth)
    retina_smooth: float = 0.012  # ours: retina detector smoothing sigma, fraction of the larger side
    retina_closing: float = 0.03  # ours: closing radius, fraction of the larger side
    phantom_shape: list[int] = field(default_factory=list)  # ours: phantom B-scan size ([] = 256 x 256)

    def validate(self):
        p = self.patch_size
        if len(p) != 2 or p[0] != p[1] or p[0] < 8 or p[0] & (p[0] - 1):
            raise ConfigError(f"data.patch_size must be two equal powers of 2 >= 8 (e.g. [64, 64]), got {p}")
        if self.depth_axis not in ("auto", "0", "1"):
            raise ConfigError(f"data.depth_axis must be 'auto', '0' or '1', got {self.depth_axis!r}")


@dataclass
class OCTModelConfig:
    method: Literal["fanogan", "anogan", "autoencoder"] = "fanogan"  # ours: f-AnoGAN (Schlegl 2019, one pass per patch)
    # f-AnoGAN (Schlegl et al. 2019, sec. 2; WGAN-GP of Gulrajani et al. 2017)
    latent_dim: int = 128  # Schlegl 2019: z 128-d, N(0, 1)
    dim: int = 64  # Gulrajani 64x64 ResNet base width (G, critic and izi_f encoder)
    gradient_penalty: float = 10.0  # Schlegl 2019 / Gulrajani: lambda_GP 10
    gp_precision: Literal["fp32", "amp"] = "fp32"  # ours: the penalty's double backward outside bf16 autocast (see medgen.losses.gradient_penalty)
    critic_steps: int = 5  # Schlegl 2019: 5 critic iterations per generator iteration
    lr: float = 1e-4  # Schlegl 2019: Adam 1e-4
    betas: list[float] = field(default_factory=lambda: [0.0, 0.9])  # Schlegl 2019: Adam betas (0, 0.9)
    kappa: float = 1.0  # Schlegl 2019: izi_f feature-residual weight
    encoder_lr: float = 5e-5  # Schlegl 2019: RMSProp 5e-5 for the encoder
    encoder_iterations: int = 50000  # ours: the last steps of train.iterations train the encoder
    # AnoGAN (Schlegl et al. 2017; DCGAN of Radford et al. 2016)
    dcgan_latent_dim: int = 100  # Schlegl 2017: z 100-d
    dcgan_ngf: int = 64  # Radford et al.: G 512-256-128-64 at 64 px, D mirrored
    dcgan_lr: float = 2e-4  # Radford et al.: Adam 2e-4
    dcgan_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])  # Radford et al.: beta1 0.5
    mapping_steps: int = 500  # Schlegl 2017: ~500 backpropagation steps on z
    mapping_lambda: float = 0.1  # Schlegl 2017: lambda 0.1 on the discrimination (feature) loss
    mapping_lr: float = 0.01  # ours: Adam on z (the paper does not state the optimiser of the mapping)
    val_mapping_steps: int = 50  # ours: cheaper mapping for the in-training validation only
    # convolutional autoencoder baseline (ours)
    ae_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])  # ours: one per stride-2 conv
    ae_latent_dim: int = 128  # ours
    ae_lr: float = 1e-3  # ours: Adam

    def validate(self):
        if self.method not in METHODS:
            raise ConfigError(f"model.method must be one of {METHODS}, got {self.method!r}")
        if len(self.betas) != 2 or len(self.dcgan_betas) != 2:
            raise ConfigError("model.betas and model.dcgan_betas must be two numbers")
        if not 0.0 <= self.mapping_lambda <= 1.0:
            raise ConfigError(f"model.mapping_lambda must be in [0, 1], got {self.mapping_lambda}")
        if self.mapping_steps < 0 or self.encoder_iterations < 0 or self.critic_steps < 1:
            raise ConfigError("model.mapping_steps and model.encoder_iterations must be >= 0, model.critic_steps >= 1")


@dataclass
class OCTInferConfig(InferConfig):
    overlap: float = 0.5  # ours: patch overlap when tiling a B-scan (stride 32 at 64 px)
    window_batch: int = 64  # ours: patches per forward pass (AnoGAN maps this many at once)
    top_k_fraction: float = 0.1  # ours: image score = mean of the top 10 % patch scores
    specificity: float = 0.95  # ours: threshold = this quantile of the validation normals' scores
    retina_only: bool = True  # ours: score only patches centred in the detected retina band

    def validate(self):
        super().validate()
        if not 0.0 < self.top_k_fraction <= 1.0:
            raise ConfigError(f"infer.top_k_fraction must be in (0, 1], got {self.top_k_fraction}")
        if not 0.0 < self.specificity <= 1.0:
            raise ConfigError(f"infer.specificity must be in (0, 1], got {self.specificity}")


@dataclass
class OCTTrainConfig(TrainConfig):
    iterations: int = 150000  # ours: all steps; f-AnoGAN: GAN steps + model.encoder_iterations
    batch_size: int = 64  # Schlegl 2019: batch 64


@dataclass
class OCTAnoGANConfig(PipelineConfig):
    pipeline: str = "oct_anogan"
    data: OCTDataConfig = field(default_factory=OCTDataConfig)
    train: OCTTrainConfig = field(default_factory=OCTTrainConfig)
    infer: OCTInferConfig = field(default_factory=OCTInferConfig)
    model: OCTModelConfig = field(default_factory=OCTModelConfig)
