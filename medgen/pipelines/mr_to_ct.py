"""`mr_to_ct`: MRI -> CT in Hounsfield units with the context-aware FCN-GAN of Nie et al. (MICCAI 2017,
arXiv 1612.05362; reference code ginobilinie/medSynthesis (TF) and medSynthesisV1 (PyTorch)).

- Generator: the valid-convolution 3D FCN (`NETWORKS["nie_fcn"]`, 32^3 MR in -> 16^3 CT out, no pooling).
- Discriminator: `NETWORKS["nie_discriminator"]` on the CT patch alone, with a LINEAR logit (the reference
  code applies ReLU to it, which stops its gradient for negative logits; not reproduced).
- Generator loss: voxel loss (L2 as the paper / TF code, or L1 as V1) + lambda_gdl * gradient difference
  loss (alpha 2) + lambda_adv * BCE adversarial loss.
- Auto-context (ACM): `model.stages` generators trained in sequence by the engine's cascade runner; stage k
  sees [MR, stage k-1's CT estimate (normalised)] as two channels.
- Inference: `valid_sliding_window` (mirror padding by the valid-convolution margin, output windows tiling
  the volume, overlaps averaged); outputs written in HU on the MR's grid (float32 or int16).

Patch sizes must fit the network: `patch_sizes()` gives the output size for any input size, the error
for a size that does not fit names the nearest sizes that do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from medgen.config.sections import InferConfig, PipelineConfig
from medgen.errors import ConfigError, DataError
from medgen.pipelines.volume import VolumeDataConfig, VolumePipeline
from medgen.registry import NETWORKS, PIPELINES


# ----- config --------------------------------------------------------------------------------------------
@dataclass
class MrToCtDataConfig(VolumeDataConfig):
    patch_size: list[int] = field(default_factory=lambda: [32, 32, 32])  # spec: 32^3 MR patch in
    patch_sampling: Literal["uniform", "foreground", "lesion_balanced"] = "foreground"  # ours: centres in the head
    mask_key: str = "mask"  # head mask: patch centres, MR statistics and the metrics' mask ("" = none)
    hu_window: list[float] = field(default_factory=lambda: [-1000.0, 2000.0])  # ours: air to dense bone -> [-1, 1]; also the PSNR range

    def validate(self):
        if len(self.hu_window) != 2 or self.hu_window[1] <= self.hu_window[0]:
            raise ConfigError(f"data.hu_window must be [low, high] with low < high, got {self.hu_window}")


@dataclass
class MrToCtInferConfig(InferConfig):
    blend: Literal["gaussian", "constant"] = "constant"  # spec: overlaps are averaged
    window: list[int] = field(default_factory=list)  # ours: inference input window ([] = data.patch_size, as the
    # paper); a larger window (e.g. [64, 64, 64] -> 48^3 out) is the same fully convolutional net, much faster on CPU


@dataclass
class MrToCtModelConfig:
    stages: int = 2  # spec: 2-3 auto-context stages; 2 = one context refinement (ours, see docs)
    channels: list[int] = field(default_factory=lambda: [32, 32, 32, 32, 64, 64, 64, 32])  # spec (generator)
    kernel_sizes: list[int] = field(default_factory=lambda: [9, 3, 3, 3, 9, 3, 3, 3])  # spec
    valid: list[bool] = field(default_factory=lambda: [True, False, False, False, True, False, False, False])  # spec
    norm: str = "batch"  # spec: conv + BN + ReLU
    init: Literal["default", "normal", "xavier", "kaiming"] = "default"  # ours: PyTorch's init (learned faster than
    # Xavier / Kaiming-normal in our short CPU runs; the TF code's initialiser is not stated in the paper)
    voxel_loss: Literal["l1", "l2"] = "l2"  # paper / TF code L2; medSynthesisV1 L1
    lambda_voxel: float = 1.0  # paper
    lambda_gdl: float = 0.05  # medSynthesisV1 (paper value unverified); 0 = no GDL
    gdl_alpha: float = 2.0  # spec / paper
    adversarial: bool = True  # spec: CT-only discriminator, BCE
    lambda_adv: float = 5e-4  # ours, chosen on the phantom validation split. V1's lambda_AD 0.05 weighs BCE against
    # a voxel loss on UNnormalised intensities; medgen's voxel loss is on [-1, 1] (3000 HU -> 2), about 1500x (L1) or
    # 1500^2x (L2) smaller, so 0.05 here made the adversarial gradient on G's output 5-10x the voxel gradient
    # (docs/pipelines/mr_to_ct.md, "Loss weights")
    d_channels: list[int] = field(default_factory=lambda: [32, 64, 64, 32])  # spec
    d_kernel_sizes: list[int] = field(default_factory=lambda: [5, 3, 3, 3])  # spec
    d_fc_channels: int = 128  # spec
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


# ----- patch-size arithmetic (the answer to "which patch sizes fit the network?") ----------------------------
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


# ----- the pipeline ----------------------------------------------------------------------------------------
@PIPELINES.register("mr_to_ct")
class MrToCt(VolumePipeline):
    name = "mr_to_ct"
    description = "MRI -> CT in HU: valid-conv FCN-GAN + gradient difference loss + auto-context (Nie et al. 2017)"
    config_class = MrToCtConfig
    input_keys = ("mr",)
    target_keys = ("ct",)
    key_metric = "mae"  # HU inside the head mask
    key_metric_mode = "min"

    @classmethod
    def num_stages(cls, config) -> int:
        return config.model.stages

    # ----- data ----------------------------------------------------------------------------------------
    def ct_params(self) -> dict:
        lo, hi = self.config.data.hu_window
        return {"preset": "ct", "low": float(lo), "high": float(hi)}

    def presets(self):
        from medgen.data.presets import CTPreset, MRPreset

        lo, hi = self.config.data.hu_window
        return {"mr": MRPreset(), "ct": CTPreset(lo, hi), self.config.data.mask_key or "mask": "label"}

    def output_params(self, case):
        return self.ct_params()  # fixed window: test cases without a CT are still written in HU

    def output_patch_size(self):
        return patch_sizes(self.config, self.config.data.patch_size, "data.patch_size")

    def load_cases(self, split: str, dataset: str | None = None) -> list[dict]:
        if split not in self._cases:
            self._precheck(split)
        return super().load_cases(split, dataset)

    def _precheck(self, split: str) -> None:
        """Problems the shared loader would report late or vaguely: an empty mask (named as such, not as an
        MR without foreground) and a CT that is not in HU (display-scaled or Cormack-stretched)."""
        from medgen.data.io import load_image
        from medgen.pipelines.mr_to_ct_data import check_ct_units

        mask_key = self.config.data.mask_key
        for entry in self.datalist().split(split):
            mask = None
            if mask_key and mask_key in entry:
                mask = np.asarray(load_image(entry[mask_key], ensure_channel_first=False)) > 0
                if not mask.any():
                    raise DataError(entry[mask_key], f"empty mask (key '{mask_key}', case '{entry.get('id')}')")
            if "ct" in entry:
                ct = np.asarray(load_image(entry["ct"], ensure_channel_first=False))
                check_ct_units(ct, entry["ct"], mask if mask is not None and mask.shape == ct.shape[:3] else None)

    def prepare_case(self, case: dict) -> dict:
        ref = self.source_keys()[0]
        ref_shape = tuple(case[ref].shape[1:])
        ref_affine = np.asarray(case["meta"][ref].get("affine", np.eye(4)), dtype=np.float64)
        for key in case["paths"]:
            if case[key].shape[0] != 1:
                raise DataError(case["paths"][key], f"has {case[key].shape[0]} channels (a 4D image?); mr_to_ct "
                                                    f"expects one 3D volume per key ('{key}')")
            if tuple(case[key].shape[1:]) != ref_shape:
                raise DataError(case["paths"][key], f"shape {tuple(case[key].shape[1:])} differs from the MR "
                                                    f"{ref_shape} ({case['paths'][ref]}): resample '{key}' onto the MR grid")
            affine = case["meta"][key].get("affine")
            if affine is not None and not np.allclose(np.asarray(affine, dtype=np.float64), ref_affine, atol=1e-3):
                raise DataError(case["paths"][key], f"affine differs from the MR's ({case['paths'][ref]}): "
                                                    f"'{key}' must be co-registered on the MR grid")
        return case

    # ----- networks ------------------------------------------------------------------------------------
    def build_networks(self):
        from medgen.networks.init import init_weights

        m = self.config.model
        G = NETWORKS.build("nie_fcn", 3, in_channels=len(self.network_keys()), out_channels=1,
                           channels=tuple(m.channels), kernel_sizes=tuple(m.kernel_sizes), valid=tuple(m.valid),
                           norm=m.norm)
        nets = {"G": G}
        if m.adversarial:
            nets["D"] = NETWORKS.build("nie_discriminator", 3, in_channels=1, input_size=tuple(self.output_patch_size()),
                                       channels=tuple(m.d_channels), kernel_sizes=tuple(m.d_kernel_sizes),
                                       strides=(1,) * len(m.d_channels), fc_channels=m.d_fc_channels, norm=m.norm)
        if m.init != "default":
            for net in nets.values():
                init_weights(net, m.init, gain=1.0 if m.init in ("xavier", "orthogonal") else 0.02)
        return nets

    def build_optimizers(self, networks):
        m = self.config.model
        opts = {"G": torch.optim.Adam(networks["G"].parameters(), lr=m.lr, betas=tuple(m.betas))}
        if "D" in networks:
            opts["D"] = torch.optim.Adam(networks["D"].parameters(), lr=m.lr_d, betas=tuple(m.betas))
        return opts

    def build_schedulers(self, optimizers, total_steps):
        m = self.config.model
        if m.lr_decay_every <= 0:
            return {}
        return {k: torch.optim.lr_scheduler.StepLR(o, m.lr_decay_every, gamma=m.lr_decay) for k, o in optimizers.items()}

    # ----- training ------------------------------------------------------------------------------------
    def _adv(self):
        if not hasattr(self, "_adv_loss"):
            from medgen.losses import AdversarialLoss

            self._adv_loss = AdversarialLoss("vanilla")  # BCE on the linear logit
        return self._adv_loss

    def train_step(self, batch):
        from medgen.losses import gradient_difference_loss, real_fake_logits

        m = self.config.model
        x, y = self.network_input(batch), batch["ct"]
        fake = self.networks["G"](x)
        logs = {}
        if m.adversarial:
            D = self.networks["D"]
            d_real, d_fake = real_fake_logits(D, y, fake.detach(), m.d_shared_batch)
            loss_d = self._adv()(d_real, True) + self._adv()(d_fake, False)
            self.update("D", loss_d)
            logs["loss_d"] = loss_d.detach()
        voxel = torch.nn.functional.l1_loss(fake, y) if m.voxel_loss == "l1" else torch.nn.functional.mse_loss(fake, y)
        loss = m.lambda_voxel * voxel
        logs[f"loss_{m.voxel_loss}"] = voxel.detach()
        if m.lambda_gdl > 0:
            gdl = gradient_difference_loss(fake, y, alpha=m.gdl_alpha)
            loss = loss + m.lambda_gdl * gdl
            logs["loss_gdl"] = gdl.detach()
        if m.adversarial and m.lambda_adv > 0:
            with self.frozen("D"):
                adv = self._adv()(real_fake_logits(self.networks["D"], y, fake, m.d_shared_batch)[1], True,
                                  for_discriminator=False)
            loss = loss + m.lambda_adv * adv
            logs["loss_adv"] = adv.detach()
        self.update("G", loss)
        return logs

    # ----- inference -----------------------------------------------------------------------------------
    def predict_case(self, case: dict) -> dict:
        from medgen.inference.windows import valid_sliding_window

        inf = self.config.infer
        in_size = list(inf.window or self.config.data.patch_size)
        out_size = patch_sizes(self.config, in_size, "infer.window" if inf.window else "data.patch_size")
        x = self.network_input({k: case[k].unsqueeze(0) for k in self.network_keys()})
        out = valid_sliding_window(lambda w: self.infer_step({"input": w}), x, in_size, out_size,
                                   overlap=inf.overlap, window_batch=inf.window_batch, blend=inf.blend,
                                   device=self.device)
        return {k: v[0].float().cpu() for k, v in out.items()}

    def evaluate_case(self, prediction, case):
        from medgen.pipelines.mr_to_ct_data import ct_metrics

        if "ct" not in case:
            return {}
        lo, hi = self.config.data.hu_window
        pred = self.to_source_units(case, prediction[self.output_name], self.ct_params())[0]
        ref = self.target_in_source_units(case)[0]
        return ct_metrics(pred, ref, self.metric_mask(case), data_range=hi - lo)

    def write_outputs(self, case, prediction, out, suffix=""):
        entries = super().write_outputs(case, prediction, out, suffix=suffix)
        lo, hi = self.config.data.hu_window
        for e in entries:
            if e["reference_key"] == "ct":
                e.update(data_range=float(hi - lo), units="HU", stage=self.stage)  # PSNR / SSIM over the HU window
        return entries

    # ----- demo ----------------------------------------------------------------------------------------
    @classmethod
    def demo(cls, data_root, runs_root, seed: int = 0) -> dict:
        """Quick phantom run (about 2 minutes on 2 CPU cores): a narrow 2-stage model vs the intensity-to-HU
        regression baseline, metrics on the held-out phantom test cases."""
        from medgen.engine.commands import build_config, load_trained, train_config
        from medgen.engine.cascade import cascade_predict
        from medgen.metrics import format_table
        from medgen.pipelines.mr_to_ct_baselines import IntensityRegression

        head = Path(data_root) / "head"
        dataset = head if (head / "dataset.json").exists() else None
        overrides = [f"data.dataset={dataset}" if dataset else f"data.phantom_dir={data_root}",
                     "model.channels=[8,8,8,8,16,16,16,8]", "model.d_channels=[8,16,16,8]", "model.lr=5e-3",
                     "model.lr_d=2e-4", "model.betas=[0.5,0.999]", "train.iterations=80", "train.batch_size=2",
                     "train.val_every=80",
                     "train.progress=off", f"train.seed={seed}", "infer.window=[64,64,64]",
                     f"output.root={runs_root}", "output.name=mr_to_ct_demo", "output.overwrite=true"]
        t0 = time.perf_counter()
        cls_, cfg = build_config("mr_to_ct", None, overrides)
        summary = train_config(cls_, cfg, overwrite=True)
        _, _, stages, run_dir = load_trained(summary["run_dir"], device="cpu")
        train_cases = stages[0].load_cases("training")
        baseline = IntensityRegression().fit(train_cases)
        rows = []
        for case in stages[-1].load_cases("test"):
            preds = cascade_predict(stages, case)
            for k, (stage, pred) in enumerate(zip(stages, preds), start=1):
                rows.append({"id": case["id"], "method": f"FCN-GAN+GDL stage {k}", **stage.evaluate_case(pred, case)})
            rows.append({"id": case["id"], "method": "intensity->HU regression",
                         **stages[0].evaluate_case({"output": baseline.predict_normalised(case, stages[0])}, case)})
        cols = ["id", "method", "mae", "mae_bone", "psnr", "ssim", "bone_dice"]
        table = format_table([{c: r[c] for c in cols} for r in rows])
        return {"table": table + f"\n(train {cfg.train.iterations} steps x {cfg.model.stages} stages, "
                                 f"{time.perf_counter() - t0:.0f} s)", "run_dir": str(run_dir)}
