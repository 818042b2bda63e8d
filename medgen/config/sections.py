"""Config sections every pipeline shares. A pipeline config subclasses `PipelineConfig` and adds its own
`model` (and, where needed, `data`, `train`, `infer`) section with the paper's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from medgen.errors import ConfigError


@dataclass
class DataConfig:
    # A folder holding dataset.json (or the json itself). Empty: the pipeline's embedded phantom dataset,
    # written once under `phantom_dir`.
    dataset: str = ""
    phantom_dir: str = "demo_data"
    phantom_cases: int = 0  # 0: the phantom generator's default
    num_workers: int = 0  # DataLoader workers; patches are drawn deterministically per index either way
    skip_bad_cases: bool = False  # skip (and report) unreadable cases instead of stopping


@dataclass
class ImageDataConfig(DataConfig):
    """Data of the methods trained on patches of images or volumes."""

    patch_size: list[int] = field(default_factory=lambda: [64, 64, 64])  # network input window
    patch_sampling: Literal["uniform", "foreground", "lesion_balanced"] = "foreground"
    mask_key: str = "mask"  # head / brain mask: foreground sampling and the metrics' mask ("" = none)
    lesion_key: str = "lesion"  # for lesion_balanced sampling
    # an optional label map of a region (a lesion, a tumour): image-to-image metrics are then also reported inside it
    # (psnr_<key>) and in the mask outside it (psnr_outside_<key>), for the cases that have it ("" = none)
    region_mask_key: str = ""
    phantom_shape: list[int] = field(default_factory=list)  # phantom volume size ([] = generator default)


@dataclass
class TrainConfig:
    iterations: int = 1000  # optimisation steps of the main network (generator steps for GANs)
    epochs: float = 0.0  # > 0: train for this many epochs instead of `iterations`
    samples_per_epoch: int = 0  # for endless patch datasets: samples that make one "epoch" (0: 100 x cases)
    batch_size: int = 1
    val_every: int = 0  # steps between validations; 0: ten validations per run
    checkpoint_every: int = 0  # steps between checkpoints; 0: at every validation
    # Checkpoints kept beside best.pt, last.pt and last.prev.pt (the copy a damaged last.pt falls back to), as
    # checkpoints/step<N>.pt: the newest N; 0: none; -1: every one. Each costs a full checkpoint on disk.
    keep_checkpoints: int = 0
    log_every: int = 10
    seed: int = 0
    deterministic: bool = False  # bit-exact CPU runs (used by the resume tests)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # CPU threads for torch (0: torch's default); 1 is fastest on a loaded machine
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # auto: bf16 on CUDA, off on CPU
    compile: bool = False  # torch.compile the networks (GPU; costs about a minute per shape)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"  # reduce-overhead: CUDA graphs
    data_on_device: Literal["auto", "on", "off"] = "auto"  # patch volumes kept on the GPU, batches cut there (auto: CUDA, if they fit)
    fused_optimizer: Literal["auto", "on", "off"] = "auto"  # fused Adam / AdamW / SGD kernels (auto: on CUDA)
    channels_last: bool = False  # channels-last (3D: channels_last_3d) networks and batches
    cudnn_benchmark: bool = True  # let cuDNN time its convolution algorithms once per shape (CUDA, not deterministic)
    grad_clip: float = 0.0  # max gradient norm per update, 0 = off
    ema_decay: float = 0.0  # > 0: keep an exponential moving average of the pipeline's `ema_network`
    max_val_cases: int = 0  # 0: all validation cases
    max_bad_steps: int = 5  # skipped (non-finite) updates in a row, per optimizer, before the run stops
    max_abs_weight: float = 1e6  # a weight beyond this is divergence: never saved as a good checkpoint (0 = off)
    d_win_threshold: float = 1e-3  # a discriminator loss ("loss_d*") below this ...
    d_win_patience: int = 5  # ... at this many logged steps in a row is reported as winning outright
    progress: Literal["auto", "bar", "lines", "off"] = "auto"

    def validate(self):
        if self.iterations < 1 and self.epochs <= 0:
            raise ConfigError("train.iterations must be >= 1 (or set train.epochs)")
        if self.batch_size < 1:
            raise ConfigError("train.batch_size must be >= 1")
        if self.keep_checkpoints < -1:
            raise ConfigError("train.keep_checkpoints must be >= 0 (how many step checkpoints to keep) or -1 (all)")


@dataclass
class InferConfig:
    overlap: float = 0.5  # sliding-window overlap fraction
    window_batch: int = 4  # windows evaluated per forward pass
    blend: Literal["gaussian", "constant"] = "gaussian"
    stitch_on_cpu: Literal["auto", "always", "never"] = "auto"  # auto: when the volume exceeds 128^3 voxels
    output_dtype: str = "float32"
    # physical: images in the target's own units (the stored inverse of its normalisation: PET in the input's
    # units, CT in HU, MR on the target's intensity scale); normalised: the network's space, as trained on
    # (`medgen infer --units normalised`; such files cannot be scored by `medgen evaluate`). Validation always
    # scores physical units.
    units: Literal["physical", "normalised"] = "physical"

    def validate(self):
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError("infer.overlap must be in [0, 1)")


@dataclass
class OutputConfig:
    root: str = "runs"  # runs/<pipeline>/<name>
    name: str = ""  # empty: a time stamp
    overwrite: bool = False  # allow reusing an existing run directory


@dataclass
class PipelineConfig:
    pipeline: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
