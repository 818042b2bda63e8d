"""`toy_denoise`: the smallest complete pipeline, used by the engine's tests and by docs/extending.md.

It learns to remove Gaussian noise from smooth random blobs (2D or 3D) with a tiny conv net, optionally
with a small discriminator so the alternating-update path of the engine is exercised too. It needs no data
files: its dataset draws image i deterministically from (seed, i).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from medgen.config.sections import PipelineConfig
from medgen.data.cases import Case
from medgen.pipelines.base import PREVIOUS_KEY, Pipeline
from medgen.registry import PIPELINES


@dataclass
class ToyModelConfig:
    spatial_dims: int = 2
    size: int = 16  # image side
    channels: int = 8
    noise: float = 0.3
    adversarial: bool = False  # add a small discriminator and a least-squares GAN term
    lambda_adv: float = 0.1
    lr: float = 1e-3
    dropout: float = 0.0
    batch_norm: bool = False  # batch norm in G (its running statistics are buffers that ranks must share)
    lr_decay: bool = False  # pix2pix schedule: constant for the first half, then linear decay to 0
    stages: int = 1  # > 1: a cascade, stage k also sees stage k-1's estimate (exercises the cascade runner)


@dataclass
class ToyConfig(PipelineConfig):
    pipeline: str = "toy_denoise"
    model: ToyModelConfig = field(default_factory=ToyModelConfig)


def smooth_blob(rng: np.random.Generator, dims: int, size: int) -> np.ndarray:
    grid = np.meshgrid(*[np.linspace(-1, 1, size)] * dims, indexing="ij")
    image = np.zeros([size] * dims, np.float32)
    for _ in range(3):
        centre = rng.uniform(-0.6, 0.6, dims)
        width = rng.uniform(0.15, 0.5)
        image += rng.uniform(0.3, 1.0) * np.exp(-sum((g - c) ** 2 for g, c in zip(grid, centre)) / (2 * width**2))
    return image


class ToyDataset(torch.utils.data.Dataset):
    epoch_size = 100  # endless: image i is drawn from (seed, i); 100 images make an epoch

    def __init__(self, pipeline, length: int = 10**9):
        self.pipeline, self.length = pipeline, length

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        p = self.pipeline
        case = make_toy_case(p.config.model, np.random.default_rng([p.config.train.seed, i]), f"train{i}")
        return p.with_previous(case).arrays


def make_toy_case(cfg: ToyModelConfig, rng, case_id: str = "toy", split: str = "training") -> Case:
    clean = smooth_blob(rng, cfg.spatial_dims, cfg.size)
    noisy = clean + rng.normal(0, cfg.noise, clean.shape).astype(np.float32)
    return Case(id=case_id, split=split, arrays={"image": torch.from_numpy(noisy[None]),
                                                 "target": torch.from_numpy(clean[None])})


def _conv(dims):
    return nn.Conv2d if dims == 2 else nn.Conv3d


@PIPELINES.register()
class ToyDenoise(Pipeline):
    name = "toy_denoise"
    description = "example: denoise random blobs (engine tests and docs/extending.md)"
    config_class = ToyConfig
    input_keys = ("image",)
    target_keys = ("target",)
    key_metric = "mse"
    key_metric_mode = "min"
    ema_network = "G"  # followed by an EMA when train.ema_decay > 0

    @property
    def spatial_dims(self):
        return self.config.model.spatial_dims

    @classmethod
    def num_stages(cls, config) -> int:
        return config.model.stages

    def _inputs(self, batch):
        if self.stage > 1:
            return torch.cat([batch["image"], batch[PREVIOUS_KEY]], 1)
        return batch["image"]

    def build_networks(self):
        m = self.config.model
        conv = _conv(m.spatial_dims)
        drop = nn.Dropout(m.dropout) if m.dropout else nn.Identity()
        norm = (nn.BatchNorm2d if m.spatial_dims == 2 else nn.BatchNorm3d)(m.channels) if m.batch_norm else nn.Identity()
        nets = {
            "G": nn.Sequential(
                conv(1 if self.stage == 1 else 2, m.channels, 3, padding=1), norm, nn.ReLU(), drop,
                conv(m.channels, m.channels, 3, padding=1), nn.ReLU(), conv(m.channels, 1, 3, padding=1)
            )
        }
        if m.adversarial:
            nets["D"] = nn.Sequential(
                conv(2, m.channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2), conv(m.channels, 1, 3, padding=1)
            )
        return nets

    def build_optimizers(self, networks):
        lr = self.config.model.lr
        return {name: torch.optim.Adam(net.parameters(), lr=lr, betas=(0.5, 0.999)) for name, net in networks.items()}

    def build_schedulers(self, optimizers, total_steps):
        if not self.config.model.lr_decay:
            return {}
        from medgen.losses.schedules import constant_then_linear_decay

        half = total_steps // 2
        return {name: torch.optim.lr_scheduler.LambdaLR(opt, constant_then_linear_decay(half, total_steps - half))
                for name, opt in optimizers.items()}

    def train_dataset(self):
        return ToyDataset(self)

    def validation_cases(self):
        rng = np.random.default_rng([self.config.train.seed, 10**9 + 1])  # disjoint from training indices
        return [self.with_previous(make_toy_case(self.config.model, rng, f"val{i}", "validation")) for i in range(2)]

    def train_step(self, batch):
        x, y, cond = self._inputs(batch), batch["target"], batch["image"]
        G = self.networks["G"]
        logs = {}
        out = G(x)  # one forward serves both updates, as in pix2pix
        if self.config.model.adversarial:
            D = self.networks["D"]
            d_real, d_fake = D(torch.cat([cond, y], 1)), D(torch.cat([cond, out.detach()], 1))
            loss_d = 0.5 * ((d_real - 1) ** 2).mean() + 0.5 * (d_fake**2).mean()
            self.update("D", loss_d)
            logs["loss_d"] = loss_d.detach()
        loss_g = nn.functional.mse_loss(out, y)
        logs["loss_mse"] = loss_g.detach()
        if self.config.model.adversarial:
            with self.frozen("D"):
                loss_adv = ((self.networks["D"](torch.cat([cond, out], 1)) - 1) ** 2).mean()
            loss_g = loss_g + self.config.model.lambda_adv * loss_adv
            logs["loss_adv"] = loss_adv.detach()
        self.update("G", loss_g)
        return logs

    def predict_case(self, case):
        batch = {k: v.unsqueeze(0).to(self.device) for k, v in case.arrays.items()}
        return {"output": self.inference_network("G")(self._inputs(batch))[0].cpu()}

    def outputs(self, case, prediction):
        from medgen.engine.outputs import Output

        return {"output": Output(prediction["output"].float().numpy(), "image", "normalised", "target")}

    def evaluate_case(self, outputs, case):
        err = torch.as_tensor(outputs["output"]) - case["target"]
        return {"mse": float((err**2).mean())}

    def preview(self, case, prediction):
        out = prediction["output"].float().cpu()
        return {"input": case["image"], "output": out, "target": case["target"], "error": (out - case["target"]).abs()}
