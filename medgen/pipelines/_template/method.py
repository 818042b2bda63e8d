"""`template_translation`: synthesise one MR contrast from another with a 3D U-Net and an L1 loss.

The method is this file: which dataset keys it reads, its networks and optimiser, one training step.
Patches, sliding-window prediction, metrics in source units and writing outputs come from
`ImageToImagePipeline`; loops, checkpoints, validation and inference from the engine.
"""

from __future__ import annotations

import torch

from medgen.pipelines._template.config import TemplateConfig
from medgen.pipelines.image_to_image import ImageToImagePipeline, image_keys
from medgen.registry import NETWORKS, PIPELINES


@PIPELINES.register()
class TemplateTranslation(ImageToImagePipeline):
    name = "template_translation"
    description = "template: one MR contrast to another with a 3D U-Net and L1 (copy it to start a pipeline)"
    config_class = TemplateConfig
    baselines = ("linear_regression",)  # scored beside the model by medgen evaluate (medgen.baselines.registry)

    def source_keys(self) -> list[str]:
        return [self.config.data.source_key]

    def target_key(self) -> str:
        return self.config.data.target_key

    def case_keys(self):
        d = self.config.data
        return image_keys({d.source_key: "mr"}, (d.target_key, "mr"), d.mask_key)

    def build_networks(self):
        m = self.config.model
        return {"G": NETWORKS.build("unet_generator", 3, in_channels=len(self.network_keys()), out_channels=1,
                                    ngf=m.ngf, patch_size=self.config.data.patch_size, dropout=0.0, out_act="tanh")}

    def build_optimizers(self, networks):
        return {"G": torch.optim.Adam(networks["G"].parameters(), lr=self.config.model.lr)}

    def train_step(self, batch):
        estimate = self.networks["G"](self.network_input(batch))
        loss = torch.nn.functional.l1_loss(estimate, batch[self.target_key()])
        self.update("G", loss)
        return {"loss_l1": loss.detach()}
