"""`mr_synthesis`: Ea-GANs edge-aware cross-modality MR synthesis (Yu et al., IEEE TMI 38(7), 2019).

Three variants share one pipeline (`model.variant`):

- `cgan`: pix2pix-3D. U-Net generator, conditional 3D PatchGAN on [source, image], least-squares GAN
  + lambda_L1 * L1(estimate, target).
- `gea` (gEa-GAN): adds lambda_edge(epoch) * L1(edge(estimate), edge(target)) to the generator's loss.
- `dea` (dEa-GAN): as `gea`, and the discriminator judges [source, image, edge(image)].

edge() is the exact Ea-GANs Sobel map (`medgen.losses.sobel_edges`: fixed 3D Sobel filters, -1 padding,
/4, L2 over the directions, tanh(x) * 2 - 1); lambda_edge ramps 0 -> 100 over the first 20 epochs
(`LinearRamp` on the engine's fractional epoch). The two bugs of the released code are not reproduced:
there is no image pool (the reference's pool detached the generator's fake triplet from the graph, so in
dEa-GAN the generator got no adversarial gradient, and it mixed real triplets into the fake pool), and the
smoothed labels (real in [0.7, 1.2], fake in [0, 0.3]) are drawn afresh on every call instead of once.

Any source contrasts to any target (`model.source_keys`, `model.target_key`: dataset.json keys such as t1,
t2, pd, flair). Every MR key goes through the `mr` preset ([-1, 1], background exactly -1, inverse kept).
Training is on patches; inference covers whole volumes with sliding windows (the reference trained whole
128^3 volumes with batch 6, which needs a large GPU).

Baselines and the edge-fidelity score live in `medgen/pipelines/mr_synthesis_baselines.py`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from medgen.config.sections import PipelineConfig, TrainConfig
from medgen.errors import ConfigError, DataError
from medgen.pipelines.volume import VolumeDataConfig, VolumePipeline, check_patch_size
from medgen.registry import NETWORKS, PIPELINES

VARIANTS = ("cgan", "gea", "dea")


@dataclass
class MRSynthesisModelConfig:
    variant: Literal["cgan", "gea", "dea"] = "dea"  # spec: dEa-GAN is the paper's full method
    source_keys: list[str] = field(default_factory=lambda: ["t1"])  # spec: T1 -> T2 / FLAIR; several = multi-source (ours)
    target_key: str = "t2"  # spec: T1 -> T2 (and T1 -> FLAIR)
    ngf: int = 64  # spec / official code: generator base channels
    num_downs: int = 0  # spec: depth to match the patch (7 for 128^3); 0 = derived from data.patch_size
    dropout: float = 0.5  # spec / pix2pix: dropout 0.5 in the middle up blocks
    norm: Literal["batch", "instance"] = "batch"  # official code (pix2pix default --norm batch)
    ndf: int = 64  # spec: PatchGAN base channels
    n_layers_d: int = 3  # spec: 3-layer PatchGAN
    lambda_l1: float = 300.0  # spec: lambda_L1 = 300
    lambda_edge: float = 100.0  # spec: final edge weight 100 (gea / dea only)
    edge_ramp_epochs: float = 20.0  # spec: lambda_edge linear from 0 over the first 20 epochs, then held
    real_label_range: list[float] = field(default_factory=lambda: [0.7, 1.2])  # spec: official scripts, drawn per step
    fake_label_range: list[float] = field(default_factory=lambda: [0.0, 0.3])  # spec: official scripts, drawn per step
    lr: float = 2e-4  # spec: Adam 2e-4
    beta1: float = 0.5  # spec: betas (0.5, 0.999)
    beta2: float = 0.999  # spec
    epochs_constant: float = 100.0  # spec: 100 epochs at the full rate
    epochs_decay: float = 50.0  # spec: then 50 epochs of linear decay to 0
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
class MRSynthesisDataConfig(VolumeDataConfig):
    patch_size: list[int] = field(default_factory=lambda: [128, 128, 128])  # spec: 128^3 (whole volumes there)
    mask_key: str = "brain_mask"  # ours: metrics inside the brain; derived from the sources' nonzero region if absent


@dataclass
class MRSynthesisTrainConfig(TrainConfig):
    batch_size: int = 6  # spec: batch 6 of 128^3
    epochs: float = 150.0  # spec: 100 constant + 50 decay epochs (an epoch: see samples_per_epoch)
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


def patches_per_epoch(cases: list[dict], key: str, patch_size) -> int:
    """Patches whose voxels add up to one pass over every training volume (at least one per case)."""
    patch = math.prod(int(p) for p in patch_size)
    return sum(max(1, math.ceil(math.prod(c[key].shape[1:]) / patch)) for c in cases)


@PIPELINES.register("mr_synthesis")
class MRSynthesis(VolumePipeline):
    name = "mr_synthesis"
    description = "Ea-GANs (cgan / gEa-GAN / dEa-GAN): edge-aware 3D cross-contrast MR synthesis, e.g. T1 -> T2"
    config_class = MRSynthesisConfig
    input_keys = ("t1",)  # defaults only: model.source_keys / model.target_key decide
    target_keys = ("t2",)
    phantom_kind = "head"
    output_name = "output"

    def __init__(self, config, device="cpu", stage: int = 1, previous: tuple = ()):
        super().__init__(config, device, stage, previous)
        from medgen.losses import AdversarialLoss, EdgeL1Loss, LinearRamp

        m = config.model
        # A fresh smoothed label on every call (the reference cached one draw for the whole run).
        self.gan_loss = AdversarialLoss("lsgan", real_label_range=tuple(m.real_label_range),
                                        fake_label_range=tuple(m.fake_label_range))
        self.edge_loss = EdgeL1Loss(pad_value=-1.0)
        self.edge_weight = LinearRamp(0.0, m.lambda_edge, start=0.0, duration=m.edge_ramp_epochs)

    # ----- keys and data ----------------------------------------------------------------------------------
    @property
    def variant(self) -> str:
        return self.config.model.variant

    def source_keys(self) -> list[str]:
        return list(self.config.model.source_keys)

    def target_key(self) -> str:
        return self.config.model.target_key

    def presets(self) -> dict[str, str]:
        presets = {k: "mr" for k in [*self.source_keys(), self.target_key()]}
        if self.config.data.mask_key:
            presets[self.config.data.mask_key] = "label"
        return presets

    def load_cases(self, split: str, dataset: str | None = None) -> list[dict]:
        if split not in self._cases and self.datalist().split(split):
            self._check_headers(split)
        return super().load_cases(split, dataset)

    def _check_headers(self, split: str) -> None:
        """Channels, shapes and affines of every file of a split, from the headers, before loading voxels."""
        from medgen.data.io import load_header

        keys = self.case_keys(split)
        ref_key = self.source_keys()[0]
        for case in self.datalist().split(split):
            ref = load_header(case[ref_key])
            for key in keys:
                h = ref if key == ref_key else load_header(case[key])
                extra = h.shape[3:] if len(h.shape) > 3 else ()
                if len(h.spatial_shape) != 3:
                    raise DataError(h.path, f"key {key!r}: expected a 3D volume, got shape {h.shape}")
                if any(s != 1 for s in extra):
                    raise DataError(h.path, f"key {key!r} has shape {h.shape} ({math.prod(extra)} channels); "
                                            "mr_synthesis reads one contrast per key: list several keys in "
                                            "model.source_keys for a multi-contrast input")
                if h.spatial_shape != ref.spatial_shape:
                    raise DataError(h.path, f"key {key!r} has shape {h.spatial_shape} but {ref_key!r} "
                                            f"({ref.path}) has {ref.spatial_shape}: co-register and resample first")
                if not np.allclose(h.affine, ref.affine, atol=1e-2):
                    raise DataError(h.path, f"key {key!r}: its affine differs from {ref_key!r} ({ref.path}); "
                                            "the contrasts of a case must share one voxel grid")

    def prepare_case(self, case: dict) -> dict:
        mask_key = self.config.data.mask_key
        if mask_key and mask_key in case:
            if not bool((case[mask_key] > 0).any()):
                raise DataError(case["paths"].get(mask_key), f"case {case['id']!r}: the {mask_key!r} mask is empty")
        elif mask_key:
            # No mask in the dataset: the sources' nonzero region (the MR preset set background to -1).
            fg = torch.stack([case[k][0] > -1.0 for k in self.source_keys()]).any(0)
            if not bool(fg.any()):
                raise DataError(case["paths"].get(self.source_keys()[0]), f"case {case['id']!r}: no foreground voxels")
            case[mask_key] = fg[None].float()
        return case

    def train_dataset(self):
        dataset = super().train_dataset()
        if self.config.train.samples_per_epoch <= 0:
            # Resolved here (the engine reads it next and saves it in the run's config.yaml).
            self.config.train.samples_per_epoch = patches_per_epoch(
                dataset.cases, self.source_keys()[0], self.config.data.patch_size)
        return dataset

    # ----- networks and optimisation ----------------------------------------------------------------------
    def discriminator_channels(self) -> int:
        return len(self.network_keys()) + (2 if self.variant == "dea" else 1)

    def foreground(self, batch: dict) -> torch.Tensor:
        """Boolean brain region of a batch (B, 1, *spatial) or a case (1, *spatial): the mask when present,
        else where any source is above the background value -1."""
        key = self.config.data.mask_key
        if key and key in batch:
            return batch[key] > 0
        return torch.stack([batch[k] > -1.0 for k in self.source_keys()]).any(0)

    def compose(self, image: torch.Tensor, batch: dict) -> torch.Tensor:
        """The estimate with the background set to -1 outside the brain (`model.mask_output`). Applied in
        training too, so the losses, the edge maps and D see the image inference returns, and the generator
        does not spend itself on a sharp step at the mask's border that the mask then overwrites."""
        if not self.config.model.mask_output:
            return image
        return torch.where(self.foreground(batch), image, torch.full_like(image, -1.0))

    def build_networks(self):
        from medgen.networks.init import init_weights

        m, patch = self.config.model, self.config.data.patch_size
        G = NETWORKS.build("unet_generator", 3, in_channels=len(self.network_keys()), out_channels=1, ngf=m.ngf,
                           num_downs=m.num_downs or None, patch_size=patch, norm=m.norm, dropout=m.dropout,
                           out_act="tanh")
        D = NETWORKS.build("patch_discriminator", 3, in_channels=self.discriminator_channels(), ndf=m.ndf,
                           n_layers=m.n_layers_d, norm=m.norm)
        D.output_size(patch)  # a clear ConfigError when the patch is too small for the PatchGAN
        return {"G": init_weights(G, "normal", m.init_gain), "D": init_weights(D, "normal", m.init_gain)}

    def build_optimizers(self, networks):
        m = self.config.model
        return {k: torch.optim.Adam(networks[k].parameters(), lr=m.lr, betas=(m.beta1, m.beta2)) for k in ("G", "D")}

    def build_schedulers(self, optimizers, total_steps):
        from medgen.losses import constant_then_linear_decay

        m = self.config.model
        rule = constant_then_linear_decay(m.epochs_constant, m.epochs_decay)
        spe = max(self.steps_per_epoch, 1)
        # Stepped once per train step: the multiplier of the fractional epoch (spec: per epoch there).
        return {k: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: rule(step / spe)) for k, opt in optimizers.items()}

    def lambda_edge(self) -> float:
        return self.edge_weight(self.epoch) if self.variant in ("gea", "dea") else 0.0

    def discriminator_input(self, source: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """[source, image] (cgan, gea) or [source, image, edge(image)] (dea); gradients flow to `image`."""
        from medgen.losses import sobel_edges

        parts = [source, image]
        if self.variant == "dea":
            parts.append(sobel_edges(image).to(image.dtype))
        return torch.cat(parts, dim=1)

    def discriminator_loss(self, source, real, fake) -> torch.Tensor:
        D = self.networks["D"]
        loss_real = self.gan_loss(D(self.discriminator_input(source, real)), True)
        loss_fake = self.gan_loss(D(self.discriminator_input(source, fake.detach())), False)
        return 0.5 * (loss_real + loss_fake)  # pix2pix halves D's objective

    def generator_losses(self, source, real, fake) -> dict[str, torch.Tensor]:
        """The generator's terms (undetached) and their weighted sum 'total'."""
        m = self.config.model
        with self.frozen("D"):
            adv = self.gan_loss(self.networks["D"](self.discriminator_input(source, fake)), True, for_discriminator=False)
        l1 = torch.nn.functional.l1_loss(fake.float(), real.float())
        terms = {"loss_g_adv": adv, "loss_l1": l1}
        total = adv + m.lambda_l1 * l1
        weight = self.lambda_edge()
        if self.variant in ("gea", "dea"):
            edge = self.edge_loss(fake, real)
            terms["loss_edge"] = edge
            total = total + weight * edge
        terms["total"] = total
        return terms

    def train_step(self, batch):
        source, real = self.network_input(batch), batch[self.target_key()]
        fake = self.compose(self.networks["G"](source), batch)
        loss_d = self.discriminator_loss(source, real, fake)
        self.update("D", loss_d)
        terms = self.generator_losses(source, real, fake)
        self.update("G", terms["total"])
        logs = {k: v.detach() for k, v in terms.items() if k != "total"}
        logs.update(loss_d=loss_d.detach(), loss_g=terms["total"].detach())
        if self.variant != "cgan":
            logs["lambda_edge"] = torch.tensor(self.lambda_edge())
        return logs

    # ----- inference and metrics --------------------------------------------------------------------------
    def predict_case(self, case: dict) -> dict:
        keys = self.network_keys()
        spatial = tuple(case[keys[0]].shape[1:])
        need = [max(int(p), s) for p, s in zip(self.config.data.patch_size, spatial)]
        if list(need) != list(spatial):  # smaller than one window: pad with background, crop back
            pad = []
            for s, n in reversed(list(zip(spatial, need))):
                pad += [0, n - s]
            padded = {k: torch.nn.functional.pad(case[k], pad, value=-1.0) for k in keys}
            out = super().predict_case(padded)
            out = {k: v[(slice(None),) + tuple(slice(0, s) for s in spatial)] for k, v in out.items()}
        else:
            out = super().predict_case(case)
        out[self.output_name] = self.compose(out[self.output_name], case)
        return out

    def to_source_units(self, case: dict, tensor: torch.Tensor, params: dict | None) -> np.ndarray:
        """The `mr` preset's linear inverse inside the brain; outside it the preset's own inverse (-1 ->
        its background value, so with `model.mask_output` the whole outside is background).

        The preset's own inverse turns every value at -1 into background, and the preset clips the lowest 0.5 %
        of the brain to -1, so it would put those brain voxels of the target (and any estimate at -1) at the
        background intensity (about 0), hundreds of units from their true value, inside the metrics' mask.
        """
        if params is None or params.get("preset") != "mr":
            return super().to_source_units(case, tensor, params)
        lo, hi, bg = (float(params[k]) for k in ("low", "high", "background"))
        arr = tensor.detach().float().cpu()
        x = (arr + 1.0) * ((hi - lo) / 2.0) + lo
        outside = torch.where(arr <= -1.0 + 1e-6, torch.full_like(x, bg), x)  # the preset's inverse
        x = torch.where(self.foreground(case).cpu(), x, outside)
        return np.asarray(x, dtype=np.float32)

    def evaluate_case(self, prediction: dict, case: dict) -> dict:
        from medgen.pipelines.mr_synthesis_baselines import edge_scores

        metrics = super().evaluate_case(prediction, case)
        if metrics:
            metrics.update(edge_scores(prediction[self.output_name], case[self.target_key()], self.metric_mask(case)))
        return metrics

    # ----- the quick demo (medgen demo) ------------------------------------------------------------------
    @classmethod
    def demo(cls, data_root, runs_root, seed: int = 0) -> dict:
        """dEa-GAN T1 -> T2 on the head phantoms for a few hundred patch steps, against the baselines."""
        from medgen.engine.commands import build_config, evaluate, infer, load_trained, train_config
        from medgen.metrics import format_table
        from medgen.pipelines.mr_synthesis_baselines import HistogramMatching, PolynomialRegression

        data_root = Path(data_root)
        dataset = data_root / "head"
        overrides = [
            f"data.dataset={dataset}" if (dataset / "dataset.json").exists() else f"data.phantom_dir={data_root}",
            "data.patch_size=[32,32,32]", "model.ngf=16", "model.ndf=16", "train.batch_size=2", "train.epochs=0",
            "train.iterations=160", "train.samples_per_epoch=40", "model.epochs_constant=4", "model.epochs_decay=2",
            "model.edge_ramp_epochs=1", "model.lr=2e-3", "train.val_every=160", "infer.overlap=0.25", f"train.seed={seed}",
            f"output.root={runs_root}", "output.name=demo", "output.overwrite=true", "train.progress=off",
        ]
        t0 = time.perf_counter()
        klass, cfg = build_config(cls.name, None, overrides)
        summary = train_config(klass, cfg, overwrite=True)
        train_s = time.perf_counter() - t0
        run = Path(summary["run_dir"])
        infer(run, overwrite=True)
        evaluate(run / "predictions", cfg.data.dataset or cls(cfg).dataset_path(), overwrite=True)
        _, _, stages, _ = load_trained(run, device="cpu")
        pipe = stages[-1]
        train_cases, test_cases = pipe.load_cases("training"), pipe.load_cases("test")
        methods = {"dea": pipe}
        for base in (HistogramMatching(pipe.source_keys(), pipe.target_key(), pipe.config.data.mask_key),
                     PolynomialRegression(pipe.source_keys(), pipe.target_key(), pipe.config.data.mask_key, 1)):
            methods[base.name] = base.fit(train_cases)
        rows = []
        for name, method in methods.items():
            with torch.no_grad():
                scores = [pipe.evaluate_case(method.predict_case(c), c) for c in test_cases]
            row = {"method": name}
            for k in ("psnr", "ssim", "nmse", "edge_l1", "edge_corr"):
                row[k] = float(np.mean([s[k] for s in scores]))
            rows.append(row)
        table = (f"T1 -> T2 on {len(test_cases)} held-out head phantoms (trained {train_s:.0f} s, "
                 f"{summary['steps']} steps):\n" + format_table(rows, id_key="method"))
        return {"table": table, "run_dir": str(run), "rows": rows}
