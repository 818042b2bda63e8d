"""The config of `lesion_uda` (Kamnitsas et al., IPMI 2017, arXiv 1612.08894): every default names its source
("paper": the method as the paper describes it; "DeepMedic": the segmenter's published defaults; "ours": a choice
of this implementation, explained in docs/pipelines/lesion_uda.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from medgen.config.sections import ImageDataConfig, InferConfig, PipelineConfig, TrainConfig
from medgen.errors import ConfigError

# A DeepMedic small enough for 2 CPU cores (tests, demo, benchmark): 4 layers, one x3 pathway, output 9^3
# (context 33^3). The demo (demo.yaml) repeats these overrides; a test checks that the two agree.
SMALL_DEEPMEDIC = ["model.dm_channels=[8,8,12,12]", "model.residual_layers=[4]", "model.feature_layers=[2,4]",
                   "model.subsample_factors=[3]", "model.fc_channels=[24,24]", "model.output_size=[9,9,9]",
                   "model.disc_channels=[16,16]", "infer.output_size=[24,24,24]", "model.dropout=0.2"]


@dataclass
class LesionUDADataConfig(ImageDataConfig):
    patch_size: list[int] = field(default_factory=lambda: [32, 32, 32])  # ours: U-Net training patch (DeepMedic's context patch follows model.output_size)
    patch_sampling: Literal["uniform", "foreground", "lesion_balanced"] = "lesion_balanced"  # DeepMedic: half the segments centred on lesion
    pos_fraction: float = 0.5  # DeepMedic default: 50 % lesion-centred segments
    mask_key: str = "brain_mask"  # ours: brain mask (DeepMedic's ROI mask): sampling, normalisation, inference region
    intensity: Literal["zscore", "robust"] = "zscore"  # DeepMedic: z-score inside the ROI mask; "robust": medgen's "mr" preset (0.5-99.5th percentiles -> [-1, 1], clipped)
    lesion_key: str = "lesion"  # dataset key of the lesion label map
    domain_key: str = "domain"  # per-case field naming the domain (paper: source / target domains)
    source_domain: str = "A"  # phantoms: scanner A (labelled)
    target_domain: str = "B"  # phantoms: scanner B (labels used only for evaluation / target_supervised)
    source_channels: list[str] = field(default_factory=lambda: ["t1", "t2", "flair"])  # sequences the source has
    target_channels: list[str] = field(default_factory=lambda: ["t1", "t2", "flair"])  # sequences the target has
    channels: list[str] = field(default_factory=list)  # network inputs; [] = common to both domains (paper: target lacked some sequences)
    phantom_cases: int = 8  # ours: phantom subjects per domain (the lesion_domains generator's default)
    phantom_shape: list[int] = field(default_factory=lambda: [48, 48, 48])  # ours: phantom volume size
    phantom_spacing: list[float] = field(default_factory=lambda: [3.0, 3.0, 3.0])  # ours: 3 mm so lesions span several voxels
    phantom_lesions: int = 5  # ours: lesions per phantom subject (-1: generator default 1-4)

    def validate(self):
        if not self.source_channels or not self.target_channels:
            raise ConfigError("data.source_channels and data.target_channels must name at least one sequence each")
        if self.source_domain == self.target_domain:
            raise ConfigError(f"data.source_domain and data.target_domain are both {self.source_domain!r}")
        if not 0.0 <= self.pos_fraction <= 1.0:
            raise ConfigError(f"data.pos_fraction must be in [0, 1], got {self.pos_fraction}")
        for key in self.channels:
            if key not in self.source_channels or key not in self.target_channels:
                raise ConfigError(f"data.channels: {key!r} is not in both data.source_channels "
                                  f"{self.source_channels} and data.target_channels {self.target_channels}")
        if not self.used_channels():
            raise ConfigError(f"data.source_channels {self.source_channels} and data.target_channels "
                              f"{self.target_channels} have no sequence in common")

    def used_channels(self) -> list[str]:
        if self.channels:
            return list(self.channels)
        return [c for c in self.source_channels if c in self.target_channels]


@dataclass
class LesionUDAModelConfig:
    mode: Literal["source_only", "uda", "uda_last_layer", "target_supervised"] = "uda"  # paper: the four settings
    segmenter: Literal["deepmedic", "unet"] = "deepmedic"  # paper: DeepMedic; a MONAI 3D U-Net as option
    # DeepMedic (Kamnitsas et al. 2017)
    dm_channels: list[int] = field(default_factory=lambda: [30, 30, 40, 40, 40, 40, 50, 50])  # paper
    subsample_factors: list[int] = field(default_factory=lambda: [3, 5])  # paper: subsampled pathways x3, x5
    residual_layers: list[int] = field(default_factory=lambda: [4, 6, 8])  # paper
    fc_channels: list[int] = field(default_factory=lambda: [150, 150])  # paper: two 1^3 FC layers, 150-250 channels
    dropout: float = 0.5  # DeepMedic default dropout of the FC layers
    feature_layers: list[int] = field(default_factory=lambda: [2, 4, 6, 8])  # ours: low- to high-level taps of every pathway (+ FC layers)
    output_size: list[int] = field(default_factory=lambda: [21, 21, 21])  # paper: training segments 37^3 -> output 21^3
    # MONAI BasicUNet alternative
    unet_features: list[int] = field(default_factory=lambda: [32, 32, 64, 128, 256, 32])  # MONAI BasicUNet default
    unet_feature_layers: list[str] = field(default_factory=lambda: ["down_1", "down_3", "upcat_3", "upcat_1"])  # ours
    # domain discriminator and adversarial schedule
    disc_channels: list[int] = field(default_factory=lambda: [64, 64, 128])  # ours: residual 3D CNN (paper: residual blocks, global pooling)
    disc_size: list[int] = field(default_factory=list)  # common feature size; [] = smallest tapped map (DeepMedic: crop; U-Net: resample)
    adversarial_scheme: Literal["gradient_reversal", "alternating"] = "gradient_reversal"  # paper: either
    bn_stats: Literal["target", "source", "mixed"] = "target"  # ours: "mixed" = one forward of the mixed batch (BN statistics over both domains); "source"/"target": one forward per domain (each normalised by its own batch statistics) and the running statistics used at test time follow that domain only
    disc_source: Literal["matched", "labelled"] = "matched"  # ours: D's source segments sampled like the target ones (brain mask), not the lesion-balanced labelled batch (see medgen.data.mixed_domain)
    alpha_max: float = 0.05  # ours (paper ramps alpha from 0 to a small maximum; value not given)
    warmup_fraction: float = 0.2  # ours: alpha = 0 for this fraction of the steps (paper: warm-up in epochs)
    ramp_fraction: float = 0.4  # ours: then linear to alpha_max over this fraction (paper: linear ramp)
    # losses and optimisers
    dice_weight: float = 0.0  # paper: CE (+ optional Dice); 0 = CE only as the paper
    lr: float = 1e-3  # DeepMedic's default learning rate
    lr_d: float = 1e-3  # ours: discriminator learning rate
    weight_decay: float = 1e-4  # DeepMedic default L2 regularisation
    selection: Literal["last", "validation"] = "last"  # ours: no target labels for model selection, so the last step

    def validate(self):
        if not 0.0 <= self.warmup_fraction <= 1.0 or not 0.0 <= self.ramp_fraction <= 1.0:
            raise ConfigError("model.warmup_fraction and model.ramp_fraction must be in [0, 1]")
        if self.alpha_max < 0:
            raise ConfigError(f"model.alpha_max must be >= 0, got {self.alpha_max}")
        if len(self.output_size) != 3 or min(self.output_size) < 1:
            raise ConfigError(f"model.output_size must be 3 positive sizes, got {self.output_size}")


@dataclass
class LesionUDAInferConfig(InferConfig):
    output_size: list[int] = field(default_factory=lambda: [45, 45, 45])  # ours: DeepMedic inference segment (larger = fewer windows, same result)
    threshold: float = 0.5  # lesion probability threshold (argmax of two classes)
    write_probabilities: bool = True  # also write the lesion probability map (float32)
    restrict_to_mask: bool = True  # DeepMedic: segment inside the ROI (brain) mask only
    overlap: float = 0.0  # valid-conv windows tile exactly; no blending needed


@dataclass
class LesionUDATrainConfig(TrainConfig):
    iterations: int = 3000  # ours (CPU-feasible); the paper trained DeepMedic for ~35 epochs on a GPU
    batch_size: int = 10  # paper: batches mix source and target equally; 10 segments per domain (DeepMedic-like)


@dataclass
class LesionUDAConfig(PipelineConfig):
    pipeline: str = "lesion_uda"
    data: LesionUDADataConfig = field(default_factory=LesionUDADataConfig)
    train: LesionUDATrainConfig = field(default_factory=LesionUDATrainConfig)
    infer: LesionUDAInferConfig = field(default_factory=LesionUDAInferConfig)
    model: LesionUDAModelConfig = field(default_factory=LesionUDAModelConfig)
