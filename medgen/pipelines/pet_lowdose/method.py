"""`pet_lowdose`: 3D conditional GAN for low-dose -> full-dose PET with progressive refinement.

Wang et al., "3D conditional generative adversarial networks for high-quality PET image estimation at low
dose", NeuroImage 174 (2018) 550-562. A 3D U-Net generator (4^3 stride-2 conv + BN + LeakyReLU(0.2) encoder,
ReLU + 4^3 transposed conv + BN decoder, concatenating skips) maps the low-dose PET to the full-dose PET; a
3D PatchGAN sees [condition, real or estimated full dose]; the generator minimises adversarial loss +
lambda * L1 (lambda 300). Progressive refinement: stage 2 is a second cGAN whose input is [low dose, stage 1's
estimate], trained on stage 1's whole-volume outputs and run after it at test time (the engine's cascade).
`model.adversarial: false` gives the paper's plain 3D U-Net comparison (L1 only).

Units: input and target are divided by the SAME scale (the PET preset fitted on the low-dose input), so the
network maps like to like and every metric and written image is back in the input's units (Bq/mL or SUV).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medgen.pipelines.image_to_image import ImageToImagePipeline, image_keys
from medgen.pipelines.pet_lowdose.config import PetLowdoseConfig
from medgen.registry import NETWORKS, PIPELINES


@PIPELINES.register()
class PetLowdose(ImageToImagePipeline):
    name = "pet_lowdose"
    description = "3D cGAN low-dose -> full-dose PET with progressive refinement (Wang et al. 2018)"
    config_class = PetLowdoseConfig
    baselines = ("gaussian", "nlm")

    # ----- keys and units ---------------------------------------------------------------------------------
    @classmethod
    def num_stages(cls, config) -> int:
        return int(config.model.stages)

    def source_keys(self) -> list[str]:
        return [self.config.data.input_key]

    def target_key(self) -> str:
        return self.config.data.target_key

    def case_keys(self):
        d = self.config.data
        return image_keys({d.input_key: "pet"}, (d.target_key, "pet"), d.mask_key,
                          {d.region_key: "label"} if d.region_key else {})

    input_is_floor = True  # low and full dose are both in the input's units: the low dose is the floor to beat
    mask_rule = ("the head in the low-dose input: above 10 % of its 99.5th percentile, largest component, holes "
                 "filled (as medgen simulate-pet derives it)")

    def derive_mask(self, case) -> torch.Tensor:
        from medgen.data.simulate_pet import head_mask

        return torch.from_numpy(head_mask(case[self.config.data.input_key][0].numpy()))[None].float()

    def prepare_case(self, case):
        """Put the target on the INPUT's scale (one scale for both), taken on the smoothed input."""
        case = super().prepare_case(case)
        src, tgt = self.config.data.input_key, self.config.data.target_key
        rel = self._noise_robust_rescale(case[src], case.norm[src])
        if rel != 1.0:
            case[src] = case[src] / rel
            case.norm[src] = dict(case.norm[src], scale=float(case.norm[src]["scale"]) * rel,
                                  scale_smoothing_vox=float(self.config.data.scale_smoothing_vox))
        if tgt in case:
            s_in = float(case.norm[src]["scale"])
            s_tgt = float(case.norm[tgt]["scale"])
            case[tgt] = case[tgt] * (s_tgt / s_in)
            case.norm[tgt] = dict(case.norm[src])
        return case

    def _noise_robust_rescale(self, x: torch.Tensor, params: dict) -> float:
        return noise_robust_rescale(x, params, float(self.config.data.scale_smoothing_vox))

    def output_params(self, case) -> dict:
        return case.norm[self.config.data.input_key]

    # ----- networks ---------------------------------------------------------------------------------------
    def build_networks(self):
        from medgen.networks import init_weights
        from medgen.networks.residual import FullResolutionHead, ResidualOnInput

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
            D = NETWORKS.build("patch_discriminator", 3, in_channels=n_in + 1, ndf=m.ndf, n_layers=m.d_layers,
                               norm=m.norm)
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

    # ----- training -----------------------------------------------------------------------------------------
    def _criterion(self):
        from medgen.losses import AdversarialLoss

        if not hasattr(self, "_adv"):
            self._adv = AdversarialLoss(self.config.model.gan_mode)
        return self._adv

    def train_step(self, batch):
        m = self.config.model
        x = self.network_input(batch)
        y = batch[self.target_key()]
        fake = self.networks["G"](x)
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

    # ----- evaluation ---------------------------------------------------------------------------------------
    def evaluate_case(self, outputs: dict, case) -> dict:
        from medgen.metrics.pet import case_metrics

        ref = self.reference(case)
        if ref is None:
            return {}
        pred = np.asarray(outputs[self.output_name], dtype=np.float32)[0]
        rk = self.config.data.region_key
        labels = case[rk].numpy()[0] if rk and rk in case else None
        return case_metrics(pred, ref, self.metric_mask(case), labels, self.config.data.regions,
                            data_range=self.data_range())

    def describe_evaluation(self) -> dict:
        simulated = (self.data.datalist.metadata.get("simulated") or {}).get("low_dose")
        return dict(super().describe_evaluation(), low_dose_simulated=bool(simulated))


def noise_robust_rescale(x: torch.Tensor, params: dict, sigma: float) -> float:
    """Factor that moves the PET preset's scale (99.5th percentile of the raw, noisy input) to the same
    percentile of the input smoothed by `sigma` voxels (`data.scale_smoothing_vox`): a noisy image's high
    percentile is mostly noise, so the raw scale - and with it the normalised input and target - depended on
    the dose. SUV scaling (dose / weight known) is noise-free and kept as it is. A function of its own because
    the exported MONAI bundle applies it too (`medgen.engine.bundle_transforms`)."""
    from scipy.ndimage import gaussian_filter

    if sigma <= 0 or float(params.get("suv_factor", 0.0) or 0.0) > 0:
        return 1.0
    values = x.as_tensor() if hasattr(x, "as_tensor") else x  # a MetaTensor in the bundle
    smooth = gaussian_filter(values[0].double().numpy(), sigma, mode="nearest")
    pos = smooth[smooth > 0]
    rel = float(np.percentile(pos, 99.5)) if pos.size else 0.0
    return rel if np.isfinite(rel) and rel > 0 else 1.0
