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

import numpy as np
import torch

from medgen.inference.windows import valid_sliding_window
from medgen.pipelines.image_to_image import ImageToImagePipeline, image_keys
from medgen.pipelines.mr_to_ct.config import MrToCtConfig, patch_sizes
from medgen.registry import NETWORKS, PIPELINES


@PIPELINES.register()
class MrToCt(ImageToImagePipeline):
    name = "mr_to_ct"
    description = "MRI -> CT in HU: valid-conv FCN-GAN + gradient difference loss + auto-context (Nie et al. 2017)"
    config_class = MrToCtConfig
    baselines = ("intensity_regression", "bulk_density")
    key_metric = "mae"  # HU inside the head mask
    key_metric_mode = "min"

    @classmethod
    def num_stages(cls, config) -> int:
        return config.model.stages

    # ----- data ----------------------------------------------------------------------------------------
    def ct_params(self) -> dict:
        lo, hi = self.config.data.hu_window
        return {"preset": "ct", "low": float(lo), "high": float(hi)}

    def source_keys(self) -> list[str]:
        return ["mr"]

    def target_key(self) -> str:
        return "ct"

    def case_keys(self):
        from medgen.data.presets import CTPreset, MRPreset

        lo, hi = self.config.data.hu_window
        return image_keys({"mr": MRPreset()}, ("ct", CTPreset(lo, hi, check_units=True)), self.config.data.mask_key)

    def output_params(self, case):
        return self.ct_params()  # fixed window: test cases without a CT are still written in HU

    def output_patch_size(self):
        return patch_sizes(self.config, self.config.data.patch_size, "data.patch_size")

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
    def predict_case(self, case) -> dict:
        inf = self.config.infer
        in_size = list(inf.window or self.config.data.patch_size)
        out_size = patch_sizes(self.config, in_size, "infer.window" if inf.window else "data.patch_size")
        x = self.network_input({k: case[k].unsqueeze(0) for k in self.network_keys()})
        out = valid_sliding_window(self.predict_windows, x, in_size, out_size,
                                   overlap=inf.overlap, window_batch=inf.window_batch, blend=inf.blend,
                                   device=self.device)
        return {k: v[0].float().cpu() for k, v in out.items()}

    def data_range_rule(self):
        lo, hi = self.config.data.hu_window
        return float(hi - lo), f"the HU window data.hu_window [{lo:g}, {hi:g}] (a physical range)"

    def evaluate_case(self, outputs, case):
        from medgen.metrics.ct import ct_metrics

        ref = self.reference(case)
        if ref is None:
            return {}
        pred = np.asarray(outputs[self.output_name], dtype=np.float32)[0]
        return ct_metrics(pred, ref, self.metric_mask(case), data_range=self.data_range())
