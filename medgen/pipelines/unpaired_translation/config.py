"""unpaired_translation's config: the settings of Zhu, Park, Isola, Efros, "Unpaired image-to-image translation
using cycle-consistent adversarial networks", ICCV 2017 (arXiv 1703.10593; "paper") and of its reference code
(junyanz/pytorch-CycleGAN-and-pix2pix; "code"); "ours" marks medgen's own choices (docs/pipelines/
unpaired_translation.md says why)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from medgen.config.sections import DataConfig, InferConfig, PipelineConfig, TrainConfig
from medgen.errors import ConfigError

DOWNSAMPLINGS = 2  # paper / code: the ResNet generator halves the image twice, so sides are multiples of 4


@dataclass
class UnpairedDataConfig(DataConfig):
    key_a: str = "mr"  # ours: dataset.json key of domain A, the source of the main translation A -> B
    key_b: str = "ct"  # ours: dataset.json key of domain B, its target (the head phantom: T1 MR -> CT in HU)
    preset_a: Literal["mr", "ct", "window"] = "mr"  # ours: mr = robust percentiles per image; ct = HU window,
    preset_b: Literal["mr", "ct", "window"] = "ct"  # units checked; window = any fixed intensity range -> [-1, 1]
    window_a: list[float] = field(default_factory=lambda: [-1000.0, 2000.0])  # ours: ct / window presets: the
    window_b: list[float] = field(default_factory=lambda: [-1000.0, 2000.0])  # range -> [-1, 1], and the PSNR range
    domain_key: str = "domain"  # ours: an entry's field naming its domain ("a" or "b"); "" = by its keys only
    image_dims: Literal[2, 3] = 3  # ours: the dataset's images: 3 volumes, 2 images (PNG, 2D NIfTI ...)
    slice_axis: int = 2  # ours: a 2D network on volumes reads slices across this voxel axis (2: axial for RAS)
    patch_size: list[int] = field(default_factory=list)  # ours: [] = the whole slice / image / volume (the largest
    # of the training set, rounded up to a multiple of 4); the paper crops 256 px from photos resized to 286 px
    flip: bool = True  # paper / code: random flips (here along the first spatial axis: left-right for RAS volumes)
    mask_key: str = "mask"  # head / body mask: slices drawn, the metrics' region ("" = none: derived per image)
    lesion_key: str = "lesion"  # ours: lesion labels of test cases: the hallucination check ("" = none)
    phantom_shape: list[int] = field(default_factory=list)  # head phantom size ([] = the generator's default)
    phantom_lesions: int = -1  # head phantom lesions per subject (-1 = the generator's draw of 1-4)

    def validate(self):
        if not self.key_a or not self.key_b or self.key_a == self.key_b:
            raise ConfigError(f"data.key_a and data.key_b must name two different dataset keys, got "
                              f"{self.key_a!r} and {self.key_b!r}")
        for side in ("a", "b"):
            w = getattr(self, f"window_{side}")
            if len(w) != 2 or w[1] <= w[0]:
                raise ConfigError(f"data.window_{side} must be [low, high] with low < high, got {w}")
        if self.slice_axis not in (0, 1, 2):
            raise ConfigError(f"data.slice_axis must be 0, 1 or 2 (a voxel axis of the volumes), got {self.slice_axis}")


@dataclass
class UnpairedModelConfig:
    spatial_dims: Literal[2, 3] = 2  # paper: 2D networks; 3 = 3D networks on 3D patches (ours)
    ngf: int = 64  # code: generator base channels
    n_blocks: int = 0  # paper: 6 residual blocks for 128 px images, 9 for 256 px; 0 = that rule on data.patch_size
    ndf: int = 64  # code: discriminator base channels
    n_layers_d: int = 3  # paper: the 70x70 PatchGAN (3 stride-2 layers; in 3D a 70^3 receptive field)
    norm: Literal["instance", "batch"] = "instance"  # paper: instance normalisation
    gan_mode: Literal["lsgan", "vanilla"] = "lsgan"  # paper sec. 4: least-squares GAN loss (Mao et al. 2017)
    lambda_cycle: float = 10.0  # paper sec. 4: lambda = 10
    lambda_identity: float = 0.5  # code default (paper sec. 5.2): identity loss weight 0.5 x lambda_cycle; 0 = off
    pool_size: int = 50  # paper sec. 4: a history of the 50 last generated images for each discriminator
    lr: float = 2e-4  # paper: Adam, learning rate 0.0002
    beta1: float = 0.5  # code: Adam beta1 0.5
    beta2: float = 0.999  # code
    epochs_constant: float = 100.0  # paper: the same learning rate for the first 100 epochs ...
    epochs_decay: float = 100.0  # paper: ... then linearly decayed to zero over the next 100
    init_gain: float = 0.02  # code: weights from N(0, 0.02)

    def validate(self):
        if min(self.ngf, self.ndf, self.n_layers_d) < 1 or self.n_blocks < 0:
            raise ConfigError("model.ngf, model.ndf and model.n_layers_d must be >= 1 and model.n_blocks >= 0")
        if min(self.lambda_cycle, self.lambda_identity, self.lr) < 0 or self.lr == 0:
            raise ConfigError("model.lambda_cycle and model.lambda_identity must be >= 0 and model.lr > 0")
        if self.pool_size < 0 or self.epochs_constant < 0 or self.epochs_decay < 0:
            raise ConfigError("model.pool_size, model.epochs_constant and model.epochs_decay must be >= 0")


@dataclass
class UnpairedTrainConfig(TrainConfig):
    batch_size: int = 1  # paper: batch size 1
    epochs: float = 200.0  # paper: 100 + 100 epochs (an epoch: as many images as the larger domain holds)


@dataclass
class UnpairedInferConfig(InferConfig):
    window_batch: int = 8  # ours: slices (or windows) per forward pass


@dataclass
class UnpairedConfig(PipelineConfig):
    pipeline: str = "unpaired_translation"
    data: UnpairedDataConfig = field(default_factory=UnpairedDataConfig)
    model: UnpairedModelConfig = field(default_factory=UnpairedModelConfig)
    train: UnpairedTrainConfig = field(default_factory=UnpairedTrainConfig)
    infer: UnpairedInferConfig = field(default_factory=UnpairedInferConfig)

    def validate(self):
        d, m = self.data, self.model
        if m.spatial_dims == 3 and d.image_dims == 2:
            raise ConfigError("model.spatial_dims=3 needs volumes (data.image_dims=3); 2D images take a 2D model")
        if d.patch_size:
            check_patch_size(d.patch_size, m.spatial_dims, m.n_layers_d)


def min_side(n_layers_d: int) -> int:
    """The smallest image side both networks take: a multiple of 4 (the generator's two halvings) that still
    leaves the PatchGAN a logit (24 for the 3-layer PatchGAN)."""
    s = 1
    while True:
        t = s
        for k, stride in [(4, 2)] * n_layers_d + [(4, 1), (4, 1)]:
            t = (t + 2 - k) // stride + 1
        if t >= 1 and s % 2**DOWNSAMPLINGS == 0:
            return s
        s += 1


def check_patch_size(size, spatial_dims: int, n_layers_d: int) -> None:
    factor, smallest = 2**DOWNSAMPLINGS, min_side(n_layers_d)
    if len(size) != spatial_dims:
        raise ConfigError(f"data.patch_size {list(size)} needs {spatial_dims} sizes (model.spatial_dims={spatial_dims})")
    bad = [int(s) for s in size if int(s) % factor or int(s) < smallest]
    if bad:
        near = sorted({max(smallest, factor * n) for s in bad for n in (s // factor, -(-s // factor))})
        raise ConfigError(f"data.patch_size {list(size)}: every side must be a multiple of {factor} (the generator "
                          f"halves it {DOWNSAMPLINGS} times) and at least {smallest} (the {n_layers_d}-layer "
                          f"PatchGAN); nearest valid sides: {', '.join(map(str, near))}")
