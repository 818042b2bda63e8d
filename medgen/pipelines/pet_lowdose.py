"""`pet_lowdose`: 3D conditional GAN for low-dose -> full-dose PET with progressive refinement.

Wang et al., "3D conditional generative adversarial networks for high-quality PET image estimation at low
dose", NeuroImage 174 (2018) 550-562 (spec: ../shared/specs/pet_lowdose.md). A 3D U-Net generator (4^3
stride-2 conv + BN + LeakyReLU(0.2) encoder, ReLU + 4^3 transposed conv + BN decoder, concatenating skips)
maps the low-dose PET to the full-dose PET; a 3D PatchGAN sees [condition, real or estimated full dose];
the generator minimises adversarial loss + lambda * L1 (lambda 300). Progressive refinement: stage 2 is a
second cGAN whose input is [low dose, stage 1's estimate], trained on stage 1's whole-volume outputs and run
after it at test time (the engine's cascade runner). `model.adversarial: false` gives the paper's plain
3D U-Net comparison (L1 only).

Units: input and target are divided by the SAME scale (the PET preset fitted on the low-dose input), so the
network maps like to like and every metric and written image is back in the input's units (Bq/mL or SUV).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from medgen.config.sections import PipelineConfig
from medgen.errors import ConfigError, DataError
from medgen.pipelines.volume import VolumeDataConfig, VolumePipeline, check_patch_size
from medgen.registry import NETWORKS, PIPELINES


@dataclass
class PetLowdoseDataConfig(VolumeDataConfig):
    input_key: str = "low_dose"  # dataset.json key of the low-dose PET (issue 4)
    target_key: str = "full_dose"  # dataset.json key of the full-dose PET (issue 4; the head phantom's key)
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
    lambda_l1: float = 300.0  # weight of L1 vs the adversarial term (spec: ~300 in this group's code)
    gan_mode: str = "vanilla"  # pix2pix BCE-on-logits GAN loss (spec: 3D port of pix2pix)
    ngf: int = 64  # generator base channels (pix2pix default)
    num_downs: int = 0  # U-Net levels; 0 = as deep as the patch allows (6 for 64^3, 12 conv layers as the paper)
    ndf: int = 64  # discriminator base channels (pix2pix default)
    d_layers: int = 3  # PatchGAN stride-2 layers (pix2pix 70-patch default)
    norm: str = "batch"  # BN in generator and discriminator (paper)
    dropout: float = 0.0  # the paper mentions no dropout (ours: off)
    out_act: str = "none"  # linear output (spec: "tanh (or linear)"; linear keeps activities above the scale)
    lr: float = 2e-4  # Adam (spec: pix2pix default used by the paper)
    beta1: float = 0.5  # Adam betas (spec)
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


class ResidualOnInput(torch.nn.Module):
    """G(x) + x[:, :1]: the generator learns the correction to the low-dose input (model.residual, ours)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x) + x[:, :1]


class FullResolutionHead(torch.nn.Module):
    """U-Net estimate + a correction from three 3^3 convolutions at full resolution on [input, estimate]
    (model.full_res_channels, ours): the pix2pix U-Net's finest level is at half resolution."""

    def __init__(self, net: torch.nn.Module, in_channels: int, channels: int):
        super().__init__()
        self.net = net
        conv = lambda i, o: torch.nn.Conv3d(i, o, 3, padding=1)  # noqa: E731
        act = lambda: torch.nn.LeakyReLU(0.2)  # noqa: E731
        self.head = torch.nn.Sequential(conv(in_channels + 1, channels), act(), conv(channels, channels), act(),
                                        conv(channels, 1))

    def forward(self, x):
        y = self.net(x)
        return y + self.head(torch.cat([x, y], dim=1))


@PIPELINES.register("pet_lowdose")
class PetLowdose(VolumePipeline):
    name = "pet_lowdose"
    description = "3D cGAN low-dose -> full-dose PET with progressive refinement (Wang et al. 2018)"
    config_class = PetLowdoseConfig
    input_keys = ("low_dose",)
    target_keys = ("full_dose",)
    phantom_kind = "head"
    key_metric, key_metric_mode = "psnr", "max"

    # ----- keys, presets, units ------------------------------------------------------------------
    @classmethod
    def num_stages(cls, config) -> int:
        return int(config.model.stages)

    def source_keys(self) -> list[str]:
        return [self.config.data.input_key]

    def target_key(self) -> str:
        return self.config.data.target_key

    def extra_keys(self) -> list[str]:
        return [self.config.data.region_key] if self.config.data.region_key else []

    def presets(self) -> dict[str, str]:
        d = self.config.data
        out = {d.input_key: "pet", d.target_key: "pet"}
        for key in (d.mask_key, d.region_key):
            if key:
                out[key] = "label"
        return out

    def prepare_case(self, case: dict) -> dict:
        """Check shapes / channels / mask, then put the target on the INPUT's scale (one scale for both)."""
        src, tgt = self.config.data.input_key, self.config.data.target_key
        x = case[src]
        if x.shape[0] != 1:
            raise DataError(case["paths"][src], f"'{src}' has {x.shape[0]} channels/frames; pet_lowdose expects "
                                                "one static 3D PET volume")
        if x.ndim != 4:
            raise DataError(case["paths"][src], f"'{src}' must be a 3D volume, got shape {tuple(x.shape[1:])}")
        for key, path in case["paths"].items():
            if key != src and tuple(case[key].shape[1:]) != tuple(x.shape[1:]):
                raise DataError(path, f"'{key}' has shape {tuple(case[key].shape[1:])} but '{src}' has "
                                      f"{tuple(x.shape[1:])} (case '{case['id']}'): resample them onto one grid")
        if case[src].shape[0] and tgt in case and case[tgt].shape[0] != 1:
            raise DataError(case["paths"][tgt], f"'{tgt}' has {case[tgt].shape[0]} channels; expected one")
        mk = self.config.data.mask_key
        if mk and mk in case and not bool((case[mk] > 0).any()):
            raise DataError(case["paths"][mk], f"mask '{mk}' of case '{case['id']}' is empty")
        rel = self._noise_robust_rescale(case[src], case["norm"][src])
        if rel != 1.0:
            case[src] = case[src] / rel
            case["norm"][src] = dict(case["norm"][src], scale=float(case["norm"][src]["scale"]) * rel,
                                     scale_smoothing_vox=float(self.config.data.scale_smoothing_vox))
        if tgt in case:
            s_in = float(case["norm"][src]["scale"])
            s_tgt = float(case["norm"][tgt]["scale"])
            case[tgt] = case[tgt] * (s_tgt / s_in)
            case["norm"][tgt] = dict(case["norm"][src])
        return case

    def _noise_robust_rescale(self, x: torch.Tensor, params: dict) -> float:
        """Factor that moves the PET preset's scale (99.5th percentile of the raw, noisy input) to the same
        percentile of the input smoothed by `data.scale_smoothing_vox`: a noisy image's high percentile is
        mostly noise, so the raw scale - and with it the normalised input and target - depended on the dose.
        SUV scaling (dose / weight known) is noise-free and kept as it is."""
        import numpy as np
        from scipy.ndimage import gaussian_filter

        sigma = float(self.config.data.scale_smoothing_vox)
        if sigma <= 0 or float(params.get("suv_factor", 0.0) or 0.0) > 0:
            return 1.0
        smooth = gaussian_filter(x[0].double().numpy(), sigma, mode="nearest")
        pos = smooth[smooth > 0]
        rel = float(np.percentile(pos, 99.5)) if pos.size else 0.0
        return rel if np.isfinite(rel) and rel > 0 else 1.0

    def output_params(self, case: dict) -> dict:
        return case["norm"][self.config.data.input_key]

    # ----- networks -------------------------------------------------------------------------------
    def build_networks(self):
        from medgen.networks import init_weights

        m = self.config.model
        n_in = len(self.network_keys())
        G = NETWORKS.build("unet_generator", 3, in_channels=n_in, out_channels=1, ngf=m.ngf,
                           num_downs=m.num_downs or None, patch_size=list(self.config.data.patch_size),
                           norm=m.norm, dropout=m.dropout, out_act=m.out_act)
        G = init_weights(G, m.init, m.init_gain)
        if m.full_res_channels > 0:
            G = FullResolutionHead(G, n_in, m.full_res_channels)
            G.head = init_weights(G.head, m.init, m.init_gain)
        nets = {"G": ResidualOnInput(G) if m.residual else G}
        if m.adversarial:
            D = NETWORKS.build("patch_discriminator", 3, in_channels=n_in + 1, ndf=m.ndf, n_layers=m.d_layers, norm=m.norm)
            D.output_size(tuple(self.config.data.patch_size))  # a clear ConfigError if the patch is too small
            nets["D"] = init_weights(D, m.init, m.init_gain)
        return nets

    def build_optimizers(self, networks):
        m = self.config.model
        return {k: torch.optim.Adam(net.parameters(), lr=m.lr, betas=(m.beta1, m.beta2)) for k, net in networks.items()}

    def build_schedulers(self, optimizers, total_steps):
        """pix2pix's rule in steps: constant lr, then linear decay to 0 over the last `lr_decay_fraction`."""
        from medgen.losses import constant_then_linear_decay

        frac = float(self.config.model.lr_decay_fraction)
        if frac <= 0:
            return {}
        decay = max(1, int(round(frac * total_steps)))
        rule = constant_then_linear_decay(total_steps - decay, decay)
        return {k: torch.optim.lr_scheduler.LambdaLR(opt, rule) for k, opt in optimizers.items()}

    # ----- training ---------------------------------------------------------------------------------
    def _criterion(self):
        from medgen.losses import AdversarialLoss

        if not hasattr(self, "_adv"):
            self._adv = AdversarialLoss(self.config.model.gan_mode)
        return self._adv

    def train_step(self, batch):
        m = self.config.model
        x = self.network_input(batch)
        y = batch[self.target_key()]
        G = self.networks["G"]
        fake = G(x)
        logs = {}
        loss_g = torch.zeros((), device=fake.device)
        if m.adversarial:
            D, crit = self.networks["D"], self._criterion()
            loss_d = 0.5 * (crit(D(y, x), True) + crit(D(fake.detach(), x), False))
            self.update("D", loss_d)
            with self.frozen("D"):
                loss_adv = crit(D(fake, x), True, for_discriminator=False)
            loss_g = loss_g + loss_adv
            logs.update(loss_d=loss_d.detach(), loss_adv=loss_adv.detach())
        loss_l1 = F.l1_loss(fake.float(), y.float())
        loss_g = loss_g + m.lambda_l1 * loss_l1
        self.update("G", loss_g)
        logs["loss_l1"] = loss_l1.detach()
        return logs

    # ----- inference: pad volumes smaller than a patch / not divisible by the U-Net's stride -----------
    # ----- metrics ----------------------------------------------------------------------------------------
    def evaluate_case(self, prediction: dict, case: dict) -> dict:
        from medgen.pipelines.pet_lowdose_baselines import case_metrics

        if self.target_key() not in case:
            return {}
        pred = self.to_source_units(case, prediction[self.output_name], self.output_params(case))[0]
        target = self.target_in_source_units(case)[0]
        rk = self.config.data.region_key
        labels = case[rk].numpy()[0] if rk and rk in case else None
        return case_metrics(pred, target, self.metric_mask(case), labels, self.config.data.regions)

    def write_outputs(self, case, prediction, out, suffix=""):
        entries = super().write_outputs(case, prediction, out, suffix=suffix)
        sim = (self.datalist().metadata.get("simulated") or {}).get("low_dose")
        for e in entries:
            e["low_dose_simulated"] = bool(sim)
            e["stage"] = self.stage
        return entries

    # ----- quick demo on the head phantom ----------------------------------------------------------------
    @classmethod
    def demo(cls, data_root, runs_root, seed: int = 0) -> dict:
        """Two-stage cGAN on the head phantom (about 1-2 min on 2 CPU cores): low dose vs stage 1 vs stage 2."""
        from medgen.data.phantoms import write_phantom_dataset
        from medgen.engine.commands import build_config, load_trained, train_config
        from medgen.engine.cascade import cascade_predict
        from medgen.metrics import format_table

        folder = Path(data_root) / "head"
        if not (folder / "dataset.json").exists():
            write_phantom_dataset("head", folder, seed=seed)
        overrides = [f"data.dataset={folder}", "data.patch_size=[32,32,32]", "model.ngf=16", "model.ndf=16",
                     "model.d_layers=2", "train.iterations=100", "train.batch_size=2", "train.val_every=50",
                     "train.progress=off", "train.log_every=50", f"train.seed={seed}", "model.lr=1e-3",
                     f"output.root={runs_root}", "output.name=demo", "output.overwrite=true", "infer.overlap=0.25",
                     "model.residual=true", "model.full_res_channels=8"]  # ours: what a 100-step run needs (docs)
        _, cfg = build_config(cls.name, None, overrides)
        summary = train_config(cls, cfg, overwrite=True)
        _, _, stages, run_dir = load_trained(summary["run_dir"])
        rows = []
        for case in stages[0].load_cases("test"):
            preds = cascade_predict(stages, case)
            low = {"output": case[stages[0].source_keys()[0]]}
            for name, pred in [("low_dose", low)] + [(f"stage{k}", p) for k, p in enumerate(preds, 1)]:
                m = stages[0].evaluate_case(pred, case)
                rows.append({"id": case["id"], "method": name, **{k: m[k] for k in ("psnr", "ssim", "nmse")},
                             **{k: v for k, v in m.items() if k.startswith("bias_")}})
        return {"table": format_table(rows), "run_dir": str(run_dir), "rows": rows}
