"""A minimal VolumePipeline (t1 -> t2 with a small U-Net and L1) used by test_volume.py."""
from dataclasses import dataclass, field

import torch

from medgen.engine.options import PipelineConfig
from medgen.pipelines.volume import VolumeDataConfig, VolumePipeline
from medgen.registry import NETWORKS, PIPELINES


@dataclass
class ExampleModel:
    ngf: int = 8
    lr: float = 2e-3


@dataclass
class ExampleConfig(PipelineConfig):
    pipeline: str = "volume_example"
    data: VolumeDataConfig = field(default_factory=VolumeDataConfig)
    model: ExampleModel = field(default_factory=ExampleModel)


@PIPELINES.register("volume_example")
class VolumeExample(VolumePipeline):
    name = "volume_example"
    config_class = ExampleConfig
    input_keys = ("t1",)
    target_keys = ("t2",)

    def presets(self):
        return {"t1": "mr", "t2": "mr", "mask": "label"}

    def build_networks(self):
        m = self.config.model
        return {"G": NETWORKS.build("unet", 3, in_channels=len(self.network_keys()), out_channels=1, ngf=m.ngf,
                                    patch_size=self.config.data.patch_size, dropout=0.0, out_act="tanh")}

    def build_optimizers(self, nets):
        return {"G": torch.optim.Adam(nets["G"].parameters(), lr=self.config.model.lr)}

    def train_step(self, batch):
        out = self.networks["G"](self.network_input(batch))
        loss = torch.nn.functional.l1_loss(out, batch["t2"])
        self.update("G", loss)
        return {"loss_l1": loss.detach()}
