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

Baselines: `medgen.baselines.intensity`; the edge-fidelity score: `medgen.metrics.edges`.
"""

from __future__ import annotations

import numpy as np
import torch

from medgen.data.patches import patches_covering
from medgen.pipelines.image_to_image import ImageToImagePipeline, image_keys
from medgen.pipelines.mr_synthesis.config import MRSynthesisConfig
from medgen.registry import NETWORKS, PIPELINES


@PIPELINES.register()
class MRSynthesis(ImageToImagePipeline):
    name = "mr_synthesis"
    description = "Ea-GANs (cgan / gEa-GAN / dEa-GAN): edge-aware 3D cross-contrast MR synthesis, e.g. T1 -> T2"
    config_class = MRSynthesisConfig
    baselines = ("histogram_matching", "linear_regression")

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

    def case_keys(self):
        m = self.config.model
        return image_keys({k: "mr" for k in m.source_keys}, (m.target_key, "mr"), self.config.data.mask_key)

    mask_rule = "the voxels where any source contrast is above its background (-1 after the mr preset)"

    def train_dataset(self):
        dataset = super().train_dataset()
        if self.config.train.samples_per_epoch <= 0:
            # Resolved here (the engine reads it next and saves it in the run's config.yaml).
            self.config.train.samples_per_epoch = patches_covering(
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
        # Stepped once per train step: the multiplier of the fractional epoch (the official code: per epoch).
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
    def predict_case(self, case) -> dict:
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

    def to_source_units(self, case, tensor: torch.Tensor, params: dict | None) -> np.ndarray:
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

    def evaluate_case(self, outputs: dict, case) -> dict:
        """Image metrics in source units (the family's), plus the edge scores, which compare Ea-GANs Sobel maps
        of the images as the network sees them: the output mapped back with the target's stored [-1, 1] scaling
        (outside the brain: background), against the normalised target."""
        from medgen.metrics.edges import edge_scores

        metrics = super().evaluate_case(outputs, case)
        if metrics:
            p = case.norm[self.target_key()]
            lo, hi = float(p["low"]), float(p["high"])
            pred = torch.as_tensor(np.asarray(outputs[self.output_name], dtype=np.float32))
            norm = ((pred - lo) * (2.0 / (hi - lo)) - 1.0).clamp(-1.0, 1.0)
            norm = torch.where(self.foreground(case).cpu(), norm, torch.full_like(norm, -1.0))
            metrics.update(edge_scores(norm, case[self.target_key()], self.metric_mask(case)))
        return metrics
