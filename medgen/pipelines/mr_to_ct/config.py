"""mr_to_ct's config: the settings of Nie et al., "Medical image synthesis with context-aware generative
adversarial networks", MICCAI 2017 (arXiv 1612.05362), and of its reference code (medSynthesis in TensorFlow,
medSynthesisV1 in PyTorch); "ours" marks medgen's own choices. `patch_sizes` answers which patch sizes fit
the valid-convolution network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from medgen.config.sections import ImageDataConfig, InferConfig, PipelineConfig
from medgen.errors import ConfigError


@dataclass
class MrToCtDataConfig(ImageDataConfig):
    patch_size: list[int] = field(default_factory=lambda: [32, 32, 32])  # paper: 32^3 MR patch in
    patch_sampling: Literal["uniform", "foreground", "lesion_balanced"] = "foreground"  # ours: centres in the head
    mask_key: str = "mask"  # head mask: patch centres, MR statistics and the metrics' mask ("" = none)
    hu_window: list[float] = field(default_factory=lambda: [-1000.0, 2000.0])  # ours: air to dense bone -> [-1, 1]; also the PSNR range

    def validate(self):
        if len(self.hu_window) != 2 or self.hu_window[1] <= self.hu_window[0]:
            raise ConfigError(f"data.hu_window must be [low, high] with low < high, got {self.hu_window}")


@dataclass
class MrToCtInferConfig(InferConfig):
    blend: Literal["gaussian", "constant"] = "constant"  # paper: overlaps are averaged
    window: list[int] = field(default_factory=list)  # ours: inference input window ([] = data.patch_size, as the
    # paper); a larger window (e.g. [64, 64, 64] -> 48^3 out) is the same fully convolutional net, much faster on CPU


@dataclass
class MrToCtModelConfig:
    stages: int = 2  # paper: 2-3 auto-context stages; 2 = one context refinement (ours, see docs)
    channels: list[int] = field(default_factory=lambda: [32, 32, 32, 32, 64, 64, 64, 32])  # paper (generator)
    kernel_sizes: list[int] = field(default_factory=lambda: [9, 3, 3, 3, 9, 3, 3, 3])  # paper
    valid: list[bool] = field(default_factory=lambda: [True, False, False, False, True, False, False, False])  # paper
    norm: str = "batch"  # paper: conv + BN + ReLU
    init: Literal["default", "normal", "xavier", "kaiming"] = "default"  # ours: PyTorch's init (learned faster than
    # Xavier / Kaiming-normal in our short CPU runs; the TF code's initialiser is not stated in the paper)
    voxel_loss: Literal["l1", "l2"] = "l2"  # paper / TF code L2; medSynthesisV1 L1
    lambda_voxel: float = 1.0  # paper
    lambda_gdl: float = 0.05  # medSynthesisV1 (paper value unverified); 0 = no GDL
    gdl_alpha: float = 2.0  # paper
    adversarial: bool = True  # paper: CT-only discriminator, BCE
    lambda_adv: float = 5e-4  # ours, chosen on the phantom validation split. V1's lambda_AD 0.05 weighs BCE against
    # a voxel loss on UNnormalised intensities; medgen's voxel loss is on [-1, 1] (3000 HU -> 2), about 1500x (L1) or
    # 1500^2x (L2) smaller, so 0.05 here made the adversarial gradient on G's output 5-10x the voxel gradient
    # (docs/pipelines/mr_to_ct.md, "Loss weights")
    d_channels: list[int] = field(default_factory=lambda: [32, 64, 64, 32])  # paper
    d_kernel_sizes: list[int] = field(default_factory=lambda: [5, 3, 3, 3])  # paper
    d_fc_channels: int = 128  # paper
    d_shared_batch: bool = True  # ours: real and generated patches go through D as one batch, so its batch norm
    # can compare their levels; with the reference's separate calls a shift of the whole generated batch is
    # normalised away before D sees it (docs/pipelines/mr_to_ct.md, "Discriminator batches")
    lr: float = 1e-4  # V1's --lr help text (its code default 5e-3 is for unnormalised data); TF: SGD on raw HU
    lr_d: float = 1e-4  # ours (V1 uses 1e-3 for its D; 1e-4 keeps D from overpowering G early)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam defaults (V1)
    lr_decay_every: int = 0  # TF code: x0.1 every 30000 steps (0 = constant lr)
    lr_decay: float = 0.1  # TF code

    def validate(self):
        if self.stages < 1:
            raise ConfigError(f"model.stages must be >= 1, got {self.stages}")
        if not (len(self.channels) == len(self.kernel_sizes) == len(self.valid)):
            raise ConfigError("model.channels, model.kernel_sizes and model.valid need one entry per layer "
                              f"(got {len(self.channels)}, {len(self.kernel_sizes)}, {len(self.valid)})")
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ConfigError(f"model.kernel_sizes must be odd, got {self.kernel_sizes}")
        if len(self.d_channels) != len(self.d_kernel_sizes):
            raise ConfigError("model.d_channels and model.d_kernel_sizes need one entry per layer")
        if min(self.lambda_voxel, self.lambda_gdl, self.lambda_adv) < 0:
            raise ConfigError("model.lambda_* must be >= 0")


@dataclass
class MrToCtConfig(PipelineConfig):
    pipeline: str = "mr_to_ct"
    data: MrToCtDataConfig = field(default_factory=MrToCtDataConfig)
    infer: MrToCtInferConfig = field(default_factory=MrToCtInferConfig)
    model: MrToCtModelConfig = field(default_factory=MrToCtModelConfig)

    def validate(self):
        patch_sizes(self, self.data.patch_size, what="data.patch_size")
        if self.infer.window:
            patch_sizes(self, self.infer.window, what="infer.window")


# ----- patch-size arithmetic (the answer to "which patch sizes fit the network?") ---------------------------
def fcn_margin(model_cfg: MrToCtModelConfig) -> int:
    """Voxels the generator loses per side: sum of (k - 1) / 2 over its valid convolutions (8 for the paper)."""
    return sum((int(k) - 1) // 2 for k, v in zip(model_cfg.kernel_sizes, model_cfg.valid) if v)


def min_output_size(model_cfg: MrToCtModelConfig) -> int:
    """Smallest output side: the discriminator's valid convolutions need it (11 for 5,3,3,3), GDL needs 2."""
    need = 2
    if model_cfg.adversarial:
        need = max(need, 1 + sum(int(k) - 1 for k in model_cfg.d_kernel_sizes))
    return need


def patch_sizes(config, input_size, what: str = "patch size") -> list[int]:
    """Output patch size of the generator for an input patch size; ConfigError naming the nearest valid
    input sizes when it does not fit (too small for the valid convolutions or for the discriminator)."""
    m = config.model
    margin, need = fcn_margin(m), min_output_size(m)
    size = [int(s) for s in input_size]
    if len(size) != 3:
        raise ConfigError(f"{what} needs 3 sizes (i, j, k), got {input_size}")
    smallest = 2 * margin + need
    bad = [s for s in size if s < smallest]
    if bad:
        raise ConfigError(
            f"{what} {size} does not fit the FCN: its valid convolutions lose {margin} voxels per side, so an "
            f"input of s voxels gives s - {2 * margin} output voxels, and the output must be at least {need} "
            f"({'the discriminator' if m.adversarial else 'the gradient difference loss'}). Nearest valid sizes: "
            f"{smallest} (-> {need}) or more, e.g. {2 * margin + 16} (-> 16, the paper's 32 -> 16 with the default layers)"
        )
    return [s - 2 * margin for s in size]
