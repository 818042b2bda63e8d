"""`oct_anogan`: unsupervised anomaly detection on retinal OCT B-scans with AnoGAN (Schlegl et al., IPMI
2017), f-AnoGAN (Schlegl et al., MedIA 2019; the default) and a plain convolutional autoencoder baseline.

All three learn normal anatomy only, from patches (default 64 x 64) drawn inside the retina band of normal
B-scans. A whole B-scan of any size is tiled into overlapping patches; each patch centred in the retina
gets an anomaly score and a pixel residual |x - x_rec|; the image score is the mean of the top-k patch
scores and the residuals are averaged over overlaps into a full-size anomaly map.

- `fanogan`: ResNet WGAN-GP (G, critic D), then the izi_f encoder E trained with G and D frozen on
  MSE(x, G(E(x))) + kappa * MSE(f(x), f(G(E(x)))). The two phases run in ONE training run, split by step
  count: the first `train.iterations - model.encoder_iterations` steps train the GAN (5 critic steps each,
  through the engine's `critic_step`), the rest train E. (One run keeps one checkpoint, one `medgen infer`
  and one set of outputs; a 2-stage cascade would have written a useless GAN-only "stage 1" output.)
  During the encoder phase `critic_step` is a no-op, so the loader's batch accounting, and hence resume,
  stays exact. Score: the same expression, one forward pass.
- `anogan`: DCGAN; a query patch is mapped to z by ~500 gradient steps on z only (G, D frozen, Adam on z,
  batched over all patches of a scan at once) minimising (1 - lambda) sum|x - G(z)| + lambda sum|f(x) - f(G(z))|
  (lambda 0.1 on the feature term, NOT swapped as in a known third-party port).
- `autoencoder`: conv encoder -> latent -> conv decoder, MSE; score = patch MSE.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medgen.config.sections import DataConfig, InferConfig, PipelineConfig, TrainConfig
from medgen.errors import ConfigError, DataError, MedgenError
from medgen.pipelines.base import Pipeline
from medgen.pipelines.oct_anogan_scoring import (
    aggregate_scores,
    evaluate_anomaly,
    retina_band,
    overlay_figure,
    source_geometry,
    stitch_mean,
    tile_image,
    upsert_csv_text,
)
from medgen.registry import PIPELINES

METHODS = ("fanogan", "anogan", "autoencoder")


# ----- config --------------------------------------------------------------------------------------------


@dataclass
class OCTDataConfig(DataConfig):
    patch_size: list[int] = field(default_factory=lambda: [64, 64])  # spec: 64x64 patches (any power of 2 >= 8)
    mask_key: str = "mask"  # ours: anomaly mask key, for pixel AUC when present ("" = none)
    label_key: str = "label"  # ours: 0 normal / 1 abnormal per case in dataset.json
    depth_axis: str = "auto"  # ours: "auto", "0" (rows are depth) or "1" (columns are depth)
    retina_smooth: float = 0.012  # ours: retina detector smoothing sigma, fraction of the larger side
    retina_closing: float = 0.03  # ours: closing radius, fraction of the larger side
    phantom_shape: list[int] = field(default_factory=list)  # phantom B-scan size ([] = 256 x 256)

    def validate(self):
        p = self.patch_size
        if len(p) != 2 or p[0] != p[1] or p[0] < 8 or p[0] & (p[0] - 1):
            raise ConfigError(f"data.patch_size must be two equal powers of 2 >= 8 (e.g. [64, 64]), got {p}")
        if self.depth_axis not in ("auto", "0", "1"):
            raise ConfigError(f"data.depth_axis must be 'auto', '0' or '1', got {self.depth_axis!r}")


@dataclass
class OCTModelConfig:
    method: Literal["fanogan", "anogan", "autoencoder"] = "fanogan"  # issue: f-AnoGAN is the default
    # f-AnoGAN (Schlegl et al. 2019, sec. 2; WGAN-GP of Gulrajani et al. 2017)
    latent_dim: int = 128  # Schlegl 2019: z 128-d, N(0, 1)
    dim: int = 64  # Gulrajani 64x64 ResNet base width (G, critic and izi_f encoder)
    gradient_penalty: float = 10.0  # Schlegl 2019 / Gulrajani: lambda_GP 10
    critic_steps: int = 5  # Schlegl 2019: 5 critic iterations per generator iteration
    lr: float = 1e-4  # Schlegl 2019: Adam 1e-4
    betas: list[float] = field(default_factory=lambda: [0.0, 0.9])  # Schlegl 2019: Adam betas (0, 0.9)
    kappa: float = 1.0  # Schlegl 2019: izi_f feature-residual weight
    encoder_lr: float = 5e-5  # Schlegl 2019: RMSProp 5e-5 for the encoder
    encoder_iterations: int = 50000  # ours: the last steps of train.iterations train the encoder
    # AnoGAN (Schlegl et al. 2017; DCGAN of Radford et al. 2016)
    dcgan_latent_dim: int = 100  # Schlegl 2017: z 100-d
    dcgan_ngf: int = 64  # Radford / spec: G 512-256-128-64, D mirrored
    dcgan_lr: float = 2e-4  # Radford et al.: Adam 2e-4
    dcgan_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])  # Radford et al.: beta1 0.5
    mapping_steps: int = 500  # Schlegl 2017: ~500 backpropagation steps on z
    mapping_lambda: float = 0.1  # Schlegl 2017: lambda 0.1 on the discrimination (feature) loss
    mapping_lr: float = 0.01  # ours: Adam on z (the paper does not state the optimiser of the mapping)
    val_mapping_steps: int = 50  # ours: cheaper mapping for the in-training validation only
    # convolutional autoencoder baseline (ours)
    ae_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])  # ours: one per stride-2 conv
    ae_latent_dim: int = 128  # ours
    ae_lr: float = 1e-3  # ours: Adam

    def validate(self):
        if self.method not in METHODS:
            raise ConfigError(f"model.method must be one of {METHODS}, got {self.method!r}")
        if len(self.betas) != 2 or len(self.dcgan_betas) != 2:
            raise ConfigError("model.betas and model.dcgan_betas must be two numbers")
        if not 0.0 <= self.mapping_lambda <= 1.0:
            raise ConfigError(f"model.mapping_lambda must be in [0, 1], got {self.mapping_lambda}")
        if self.mapping_steps < 0 or self.encoder_iterations < 0 or self.critic_steps < 1:
            raise ConfigError("model.mapping_steps and model.encoder_iterations must be >= 0, model.critic_steps >= 1")


@dataclass
class OCTInferConfig(InferConfig):
    overlap: float = 0.5  # ours: patch overlap when tiling a B-scan (stride 32 at 64 px)
    window_batch: int = 64  # ours: patches per forward pass (AnoGAN maps this many at once)
    top_k_fraction: float = 0.1  # ours: image score = mean of the top 10 % patch scores
    specificity: float = 0.95  # ours: threshold = this quantile of the validation normals' scores
    retina_only: bool = True  # ours: score only patches centred in the detected retina band

    def validate(self):
        super().validate()
        if not 0.0 < self.top_k_fraction <= 1.0:
            raise ConfigError(f"infer.top_k_fraction must be in (0, 1], got {self.top_k_fraction}")
        if not 0.0 < self.specificity <= 1.0:
            raise ConfigError(f"infer.specificity must be in (0, 1], got {self.specificity}")


@dataclass
class OCTTrainConfig(TrainConfig):
    iterations: int = 150000  # ours: all steps; f-AnoGAN: GAN steps + model.encoder_iterations
    batch_size: int = 64  # Schlegl 2019: batch 64


@dataclass
class OCTAnoGANConfig(PipelineConfig):
    pipeline: str = "oct_anogan"
    data: OCTDataConfig = field(default_factory=OCTDataConfig)
    train: OCTTrainConfig = field(default_factory=OCTTrainConfig)
    infer: OCTInferConfig = field(default_factory=OCTInferConfig)
    model: OCTModelConfig = field(default_factory=OCTModelConfig)


# ----- the autoencoder baseline ------------------------------------------------------------------------------


class ConvAutoencoder(nn.Module):
    """Plain convolutional autoencoder (the baseline scorer): stride-2 convs (BN, LeakyReLU) down to
    4 x 4, a linear bottleneck of `latent_dim`, mirrored transposed convs up, tanh output."""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, image_size: int = 64,
                 channels=(32, 64, 128, 256), latent_dim: int = 128):
        super().__init__()
        n = int(math.log2(image_size)) - 2
        chans = list(channels)[:n] + [list(channels)[-1]] * max(0, n - len(channels))
        enc, cin = [], in_channels
        for c in chans:
            enc += [nn.Conv2d(cin, c, 4, 2, 1), nn.BatchNorm2d(c), nn.LeakyReLU(0.2, True)]
            cin = c
        self.encoder = nn.Sequential(*enc)
        self.to_latent = nn.Linear(cin * 16, latent_dim)
        self.from_latent = nn.Linear(latent_dim, cin * 16)
        dec = []
        for c in reversed(chans[:-1]):
            dec += [nn.ConvTranspose2d(cin, c, 4, 2, 1), nn.BatchNorm2d(c), nn.ReLU(True)]
            cin = c
        dec += [nn.ConvTranspose2d(cin, in_channels, 4, 2, 1), nn.Tanh()]
        self.decoder = nn.Sequential(*dec)
        self.bottom = chans[-1]

    def forward(self, x):
        h = self.encoder(x)
        z = self.to_latent(h.flatten(1))
        h = self.from_latent(z).reshape(x.shape[0], self.bottom, 4, 4)
        return self.decoder(h)


# ----- the pipeline -------------------------------------------------------------------------------------------


def _phantom_dataset(data_cfg) -> Path:
    from medgen.pipelines.volume import phantom_dataset

    return phantom_dataset("oct", data_cfg, seed=0)


@PIPELINES.register("oct_anogan")
class OCTAnoGAN(Pipeline):
    name = "oct_anogan"
    description = "OCT anomaly detection: f-AnoGAN (default), AnoGAN, conv autoencoder; scores + anomaly maps"
    config_class = OCTAnoGANConfig
    spatial_dims = 2
    input_keys = ("image",)
    target_keys = ()
    key_metric = "score"  # mean anomaly score of the validation normals (lower = normal anatomy learnt)
    key_metric_mode = "min"

    def __init__(self, config, device="cpu", stage: int = 1, previous: tuple = ()):
        super().__init__(config, device, stage, previous)
        m = config.model
        self.method = m.method
        self.critic_steps = m.critic_steps if m.method == "fanogan" else 0
        if m.method == "fanogan" and config.train.epochs <= 0 and m.encoder_iterations >= config.train.iterations:
            raise ConfigError(
                f"model.encoder_iterations ({m.encoder_iterations}) must be below train.iterations "
                f"({config.train.iterations}): the first train.iterations - encoder_iterations steps train the GAN")
        self._datalist = None
        self._cases: dict[str, list[dict]] = {}
        self._threshold: dict | None = None

    # ----- phases ------------------------------------------------------------------------------------------
    @property
    def gan_iterations(self) -> int:
        total = self._engine.total_steps if self._engine is not None else self.config.train.iterations
        return max(0, total - self.config.model.encoder_iterations)

    def encoder_phase(self) -> bool:
        return self.method == "fanogan" and self.step >= self.gan_iterations

    # ----- networks ----------------------------------------------------------------------------------------
    def build_networks(self):
        from medgen.networks import (DCGANDiscriminator, DCGANGenerator, IziEncoder, WGANResNetCritic,
                                     WGANResNetGenerator, init_weights)

        m, p = self.config.model, int(self.config.data.patch_size[0])
        if self.method == "fanogan":
            return {"G": WGANResNetGenerator(2, m.latent_dim, 1, p, m.dim),
                    "D": WGANResNetCritic(2, 1, p, m.dim),
                    "E": IziEncoder(2, 1, p, m.dim, latent_dim=m.latent_dim)}
        if self.method == "anogan":
            return {"G": init_weights(DCGANGenerator(2, m.dcgan_latent_dim, 1, p, ngf=m.dcgan_ngf)),
                    "D": init_weights(DCGANDiscriminator(2, 1, p, ndf=m.dcgan_ngf))}
        return {"AE": ConvAutoencoder(2, 1, p, m.ae_channels, m.ae_latent_dim)}

    def build_optimizers(self, nets):
        m = self.config.model
        if self.method == "fanogan":
            return {"G": torch.optim.Adam(nets["G"].parameters(), m.lr, betas=tuple(m.betas)),
                    "D": torch.optim.Adam(nets["D"].parameters(), m.lr, betas=tuple(m.betas)),
                    "E": torch.optim.RMSprop(nets["E"].parameters(), m.encoder_lr)}
        if self.method == "anogan":
            return {k: torch.optim.Adam(nets[k].parameters(), m.dcgan_lr, betas=tuple(m.dcgan_betas)) for k in ("G", "D")}
        return {"AE": torch.optim.Adam(nets["AE"].parameters(), m.ae_lr)}

    # ----- data --------------------------------------------------------------------------------------------
    def dataset_path(self) -> Path:
        return Path(self.config.data.dataset) if self.config.data.dataset else _phantom_dataset(self.config.data)

    def datalist(self):
        from medgen.data.datalist import load_datalist

        if self._datalist is None:
            self._datalist = load_datalist(self.dataset_path())
        return self._datalist

    def load_cases(self, split: str, dataset: str | None = None) -> list[dict]:
        """Whole B-scans of a split: `image` (1, H, W) in [-1, 1] (OCT preset), `retina` (1, H, W) band mask,
        `mask` (1, H, W) anomaly mask when the case has one, `label` (0 / 1 / None), geometry for writing."""
        if split not in self._cases:
            self._cases[split] = [self._load_entry(entry, split) for entry in self.datalist().split(split)]
        return self._cases[split]

    def iter_cases(self, split: str, skip=()):
        """B-scans one at a time for inference; one that cannot be loaded is yielded as {"id", "split", "error"}."""
        from medgen.pipelines.volume import _case_error

        for entry in self.datalist().split(split):
            if entry.get("id") in skip:
                continue
            try:
                case = self._load_entry(entry, split)
            except Exception as exc:  # noqa: BLE001 - reported with the case; the others go on
                yield {"id": entry.get("id"), "split": split, "error": _case_error(exc)}
                continue
            yield case

    def _load_entry(self, entry: dict, split: str) -> dict:
        from medgen.data.io import load_bscan
        from medgen.data.presets import OCTPreset

        d = self.config.data
        dl = self.datalist()
        preset = OCTPreset(out_range=(-1.0, 1.0))  # the generators end in tanh
        cid = entry["id"]
        if "image" not in entry:
            present = ", ".join(k for k in entry if k != "id") or "none"
            raise DataError(dl.source, f"case '{cid}' ({split}) has no key 'image' (the B-scan); keys present: {present}")
        raw = load_bscan(entry["image"])
        x, params = preset.forward(raw)
        case = {"id": cid, "split": split, "image": torch.from_numpy(np.asarray(x, np.float32)[None]),
                "norm": {"image": params}, "paths": {"image": entry["image"]}}
        band = retina_band(raw, d.depth_axis if d.depth_axis == "auto" else int(d.depth_axis),
                           smooth=d.retina_smooth, closing=d.retina_closing)
        case["retina"] = torch.from_numpy(band[None].astype(np.float32))
        if d.mask_key and entry.get(d.mask_key):
            mask = load_bscan(entry[d.mask_key]) > 0
            if mask.shape != raw.shape:
                raise DataError(entry[d.mask_key], f"mask of case '{cid}' has shape {mask.shape}, "
                                                   f"its B-scan {entry['image']} has {raw.shape}")
            case["mask"] = torch.from_numpy(mask[None].astype(np.float32))
            case["paths"]["mask"] = entry[d.mask_key]
        label = entry.get(d.label_key)
        if label not in (None, ""):
            try:
                label = int(label)
            except (TypeError, ValueError):
                raise DataError(dl.source, f"case '{cid}' key '{d.label_key}' must be 0 or 1, got {label!r}") from None
            if label not in (0, 1):
                raise DataError(dl.source, f"case '{cid}' key '{d.label_key}' must be 0 or 1, got {label}")
        else:
            label = int(bool(case["mask"].any())) if "mask" in case else None
        case["label"] = label
        case["geometry"] = source_geometry(entry["image"], raw.shape)
        return case

    def normal_cases(self, split: str) -> list[dict]:
        """Cases of a split that are not labelled abnormal (training and thresholds use normals only)."""
        return [c for c in self.load_cases(split) if c["label"] != 1]

    def train_dataset(self):
        from medgen.data.patches import PatchDataset, PatchSampler

        cases = self.normal_cases("training")
        if not cases:
            raise DataError(self.datalist().source, "the training split has no normal B-scans (label 0 or no label)")
        p = list(self.config.data.patch_size)
        sampler = PatchSampler(p, mode="foreground", fg_key="retina", pad_mode="reflect")
        arrays = [{"id": c["id"], "image": c["image"].numpy(), "retina": c["retina"].numpy()} for c in cases]
        dataset = PatchDataset(arrays, sampler, ["image"], seed=self.config.train.seed)
        return dataset

    def validation_cases(self):
        """Validation normals; none while f-AnoGAN's encoder has not trained a single step yet.

        Why: before the encoder phase, G(E(x)) uses an untrained E, so `evaluate_case` discards the score;
        scoring every validation scan (and drawing a preview) at each `val_every` was pure waste, and a
        validation exactly at the switch step could save the untrained encoder as best.pt (which inference
        loads) if later scores happened to be higher."""
        if self.method == "fanogan" and self.step <= self.gan_iterations:
            return []
        return [dict(c, for_validation=True) for c in self.normal_cases("validation")]

    # ----- training ----------------------------------------------------------------------------------------
    def _z(self, n: int, device) -> torch.Tensor:
        if self.method == "anogan":  # DCGAN / AnoGAN: uniform prior in [-1, 1]
            return torch.rand(n, self.config.model.dcgan_latent_dim, device=device) * 2 - 1
        return torch.randn(n, self.config.model.latent_dim, device=device)

    def critic_step(self, batch):
        if self.encoder_phase():
            return {}  # the GAN is frozen; the batch is skipped so the loader's accounting stays exact
        from medgen.losses import gradient_penalty

        G, D = self.networks["G"], self.networks["D"]
        x = batch["image"]
        with torch.no_grad():
            fake = G(self._z(x.shape[0], x.device))
        wdist = D(x).mean() - D(fake).mean()
        gp = gradient_penalty(D, x, fake, weight=self.config.model.gradient_penalty)
        loss = -wdist + gp
        self.update("D", loss)
        return {"loss_d": loss.detach(), "wasserstein": wdist.detach(), "gp": gp.detach()}

    def train_step(self, batch):
        x = batch["image"]
        if self.method == "autoencoder":
            loss = F.mse_loss(self.networks["AE"](x), x)
            self.update("AE", loss)
            return {"loss_mse": loss.detach()}
        if self.method == "anogan":
            return self._dcgan_step(x)
        if self.encoder_phase():
            return self._encoder_step(x)
        G, D = self.networks["G"], self.networks["D"]
        with self.frozen("D"):
            loss = -D(G(self._z(x.shape[0], x.device))).mean()
        self.update("G", loss)
        return {"loss_g": loss.detach()}

    def _dcgan_step(self, x):
        G, D = self.networks["G"], self.networks["D"]
        z = self._z(x.shape[0], x.device)
        fake = G(z)
        real_logits, fake_logits = D(x), D(fake.detach())
        loss_d = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                  + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        self.update("D", loss_d)
        with self.frozen("D"):
            g_logits = D(fake)
            loss_g = F.binary_cross_entropy_with_logits(g_logits, torch.ones_like(g_logits))  # non-saturating
        self.update("G", loss_g)
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}

    def _encoder_step(self, x):
        G, D, E = self.networks["G"], self.networks["D"], self.networks["E"]
        G.eval()  # frozen generator: batch norm with its running statistics, as at test time
        with self.frozen("G", "D"):
            score, _ = self._izif(x, E, G, D)
            loss = score.mean()
        self.update("E", loss)
        return {"loss_izif": loss.detach()}

    def _izif(self, x, E, G, D):
        """izi_f: per-patch MSE(x, G(E(x))) + kappa * MSE(f(x), f(G(E(x)))); also the reconstruction."""
        rec = G(E(x))
        _, fx = D(x, return_features=True)
        _, fr = D(rec, return_features=True)
        img = ((x - rec) ** 2).flatten(1).mean(1)
        feat = ((fx[-1] - fr[-1]) ** 2).flatten(1).mean(1)
        return img + self.config.model.kappa * feat, rec

    # ----- scoring -------------------------------------------------------------------------------------------
    def score_patches(self, x: torch.Tensor, mapping_steps: int | None = None, seed: int = 0):
        """(N, 1, p, p) normalised patches -> (scores (N,), reconstructions (N, 1, p, p))."""
        for net in self.networks.values():
            net.eval()
        with torch.no_grad():
            if self.method == "fanogan":
                return self._izif(x, self.networks["E"], self.networks["G"], self.networks["D"])
            if self.method == "autoencoder":
                rec = self.networks["AE"](x)
                return ((x - rec) ** 2).flatten(1).mean(1), rec
        steps = self.config.model.mapping_steps if mapping_steps is None else mapping_steps
        return self.anogan_mapping(x, steps, seed)

    def anogan_mapping(self, x: torch.Tensor, steps: int, seed: int = 0):
        """AnoGAN latent mapping: gradient descent on z only (Adam, z kept in the prior's [-1, 1]).
        All patches are optimised together; the loss is a sum of per-patch terms, so each z gets exactly
        its own gradient. Score = (1 - lambda) sum|x - G(z)| + lambda sum|f(x) - f(G(z))| at the final z."""
        m = self.config.model
        G, D = self.networks["G"], self.networks["D"]
        G.eval()  # batch norm with running statistics: patches must not influence each other
        D.eval()
        lam = m.mapping_lambda
        gen = torch.Generator().manual_seed(int(seed))
        z = (torch.rand(x.shape[0], m.dcgan_latent_dim, generator=gen) * 2 - 1).to(x.device)

        def loss_fn(zz):
            rec = G(zz)
            fr = D(rec, return_features=True)[1][-1]
            res = (x - rec).abs().flatten(1).sum(1)
            disc = (fx - fr).abs().flatten(1).sum(1)
            return (1 - lam) * res + lam * disc, rec

        with torch.enable_grad(), self.frozen("G", "D"):
            with torch.no_grad():
                fx = D(x, return_features=True)[1][-1]
            z.requires_grad_(True)
            opt = torch.optim.Adam([z], lr=m.mapping_lr)
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                loss, _ = loss_fn(z)
                loss.sum().backward()
                opt.step()
                with torch.no_grad():
                    z.clamp_(-1.0, 1.0)
        with torch.no_grad():
            score, rec = loss_fn(z.detach())
        return score, rec

    def predict_case(self, case):
        """Tile the B-scan, score the patches centred in the retina band, aggregate and stitch."""
        inf = self.config.infer
        p = self.config.data.patch_size
        image = case["image"][0].float().numpy()
        retina = case["retina"][0].numpy() > 0
        patches, corners, padded = tile_image(image, p, inf.overlap)
        centres = np.minimum(corners + np.array(p) // 2, np.array(image.shape) - 1)
        keep = retina[centres[:, 0], centres[:, 1]] if inf.retina_only else np.ones(len(corners), bool)
        if not keep.any():
            keep[:] = True  # no band found: score the whole scan rather than nothing
        sel = np.flatnonzero(keep)
        steps = self.config.model.val_mapping_steps if case.get("for_validation") else None
        scores, recs = [], []
        for i in range(0, sel.size, inf.window_batch):
            idx = sel[i:i + inf.window_batch]
            xb = torch.from_numpy(patches[idx][:, None]).to(self.device)
            s, r = self.score_patches(xb, steps, seed=self.config.train.seed + i)
            scores.append(s.float().cpu())
            recs.append(r.float().cpu())
        scores_t = torch.cat(scores).numpy()
        recs_np = torch.cat(recs).numpy()[:, 0]
        residual = np.abs(patches[sel] - recs_np)
        amap = stitch_mean(residual, corners[sel], padded, image.shape)
        rec_full = stitch_mean(recs_np, corners[sel], padded, image.shape)
        score = aggregate_scores(scores_t, inf.top_k_fraction)
        return {"anomaly_map": torch.from_numpy(amap)[None], "reconstruction": torch.from_numpy(rec_full)[None],
                "score": torch.tensor([score]), "patch_scores": torch.from_numpy(scores_t),
                "patch_corners": torch.from_numpy(corners[sel])}

    def evaluate_case(self, prediction, case):
        if self.method == "fanogan" and not self.encoder_phase():
            return {}  # no encoder yet: a score would be meaningless, and must not pick "best"
        return {"score": float(prediction["score"][0])}

    def preview(self, case, prediction):
        return {"input": case["image"][0], "reconstruction": prediction["reconstruction"][0],
                "anomaly_map_error": prediction["anomaly_map"][0]}

    # ----- threshold and outputs -------------------------------------------------------------------------------
    def threshold(self) -> dict:
        """The image-score threshold at `infer.specificity` on the validation normals, scored exactly as
        at test time with the current weights (computed once per pipeline object)."""
        from medgen.metrics import threshold_at_specificity

        if self._threshold is None:
            normals = self.normal_cases("validation")
            scores = {c["id"]: float(self.predict_case(c)["score"][0]) for c in normals}
            spec = self.config.infer.specificity
            thr = threshold_at_specificity(list(scores.values()), spec) if scores else None
            self._threshold = {"threshold": thr, "specificity": spec, "n_validation_normals": len(scores),
                               "validation_scores": scores, "method": self.method}
        return self._threshold

    def write_outputs(self, case, prediction, out, suffix: str = ""):
        """`<id>_anomaly_map.nii.gz` (residual map in normalised units, in the source layout and affine),
        `<id>_overlay.png`, and the case's row in `scores.csv` (plus `threshold.json` once)."""
        label = f"_{suffix}" if suffix else ""
        thr = self.threshold()
        if out.existing("threshold.json") is None:
            out.write_json("threshold.json", thr)
        amap = prediction["anomaly_map"].float().cpu().numpy()[0]
        geo = case["geometry"]
        ref = {"original_affine": geo["affine"], "spatial_shape": geo["shape"]}
        map_path = out.write_image(f"{case['id']}_anomaly_map{label}.nii.gz", amap.reshape((1, *geo["shape"])), ref)
        score = float(prediction["score"][0])
        t = thr["threshold"]
        image01 = (case["image"][0].numpy() + 1) / 2
        png_path = out.write_figure(f"{case['id']}_overlay{label}.png", overlay_figure(
            image01, amap, title=f"{case['id']}: score {score:.4g}" + (f" (thr {t:.4g})" if t is not None else "")))
        row = {
            "id": case["id"], "split": case.get("split", ""), "score": f"{score:.6g}",
            "threshold": "" if t is None else f"{t:.6g}", "specificity_target": thr["specificity"],
            "abnormal": "" if t is None else int(score > t), "label": case.get("label"),
            "method": self.method, "anomaly_map": str(map_path), "overlay": str(png_path),
            "source": case["paths"]["image"],
        }
        previous = out.existing("scores.csv")
        out.write_text("scores.csv", upsert_csv_text(previous, row))
        common = {"reference_key": None, "data_range": None, "mask_key": None, "score": score}
        return [dict(common, path=str(map_path), output=f"anomaly_map{label}", kind="image", units="normalised"),
                dict(common, path=str(png_path), output=f"overlay{label}", kind="preview")]

    def state_dict(self):
        return {"method": self.method}

    # ----- demo ----------------------------------------------------------------------------------------------
    @classmethod
    def evaluate_predictions(cls, predictions, references=None, out=None, split: str = "test") -> dict:
        """`medgen evaluate` hook: image ROC / PR AUC, pixel AUC and sensitivity / specificity at the threshold
        chosen on validation normals (scores.csv + anomaly maps against the dataset's labels and masks)."""
        from medgen.metrics import format_table

        metrics = evaluate_anomaly(predictions, references, out, split=split)
        shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        out = Path(out) if out else Path(predictions).parent / "eval"
        return {"summary": metrics, "table": format_table([dict(id=split, **shown)]), "report": str(out / "metrics.json")}

    @classmethod
    def demo(cls, data_root, runs_root, seed: int = 0) -> dict:
        """Quick f-AnoGAN vs autoencoder run on the OCT phantoms (about 1-2 min on 2 CPU cores):
        32 x 32 patches, small networks, a few hundred steps. Not the paper's settings."""
        return run_comparison(Path(data_root) / "oct", Path(runs_root), seed=seed,
                              methods=("fanogan", "autoencoder"), settings=DEMO_SETTINGS)


DEMO_SETTINGS = {  # ours: CPU-sized, NOT the paper's settings (2 critic steps, tiny networks, 32 px patches)
    "common": ["data.patch_size=[32,32]", "train.batch_size=16", "train.log_every=50", "train.progress=off",
               "infer.overlap=0.5", "data.phantom_shape=[128,128]", "data.phantom_cases=36"],
    "fanogan": ["model.dim=8", "model.latent_dim=32", "train.iterations=80", "model.encoder_iterations=40",
                "model.critic_steps=2", "train.batch_size=8", "train.val_every=40"],
    "anogan": ["model.dcgan_ngf=8", "train.iterations=200", "model.mapping_steps=50", "model.val_mapping_steps=5",
               "train.val_every=100"],
    "autoencoder": ["model.ae_channels=[8,16,32]", "model.ae_latent_dim=32", "train.iterations=200",
                    "train.val_every=100"],
}


def run_comparison(dataset, runs_root: Path, seed: int = 0, methods=METHODS, settings=DEMO_SETTINGS,
                   extra=()) -> dict:
    """Train, infer (test split) and evaluate each method on one dataset; returns a table and results.
    An empty or missing `dataset` folder gets the embedded OCT phantoms."""
    from medgen.engine.commands import build_config, infer, train_config
    from medgen.metrics import format_table

    dataset = Path(dataset)
    results, rows = {}, []
    for method in methods:
        overrides = [f"model.method={method}", f"train.seed={seed}", f"output.root={runs_root}",
                     f"output.name={method}_seed{seed}", "output.overwrite=true",
                     *settings.get("common", []), *settings.get(method, []), *extra]
        if (dataset / "dataset.json").exists():
            overrides.append(f"data.dataset={dataset}")
        else:
            overrides += [f"data.phantom_dir={dataset.parent}"]
        cls, cfg = build_config("oct_anogan", None, overrides)
        t0 = time.perf_counter()
        summary = train_config(cls, cfg, overwrite=True)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        inf = infer(summary["run_dir"], split="test", overwrite=True, device=cfg.train.device)
        t_infer = time.perf_counter() - t0
        metrics = evaluate_anomaly(inf["out"], cfg.data.dataset or _phantom_dataset(cfg.data))
        results[method] = {"metrics": metrics, "train_s": t_train, "infer_s": t_infer, "run_dir": summary["run_dir"]}
        rows.append({"id": method, "roc_auc": metrics.get("roc_auc", float("nan")),
                     "pr_auc": metrics.get("pr_auc", float("nan")), "pixel_auc": metrics.get("pixel_auc", float("nan")),
                     "sensitivity": metrics.get("sensitivity", float("nan")),
                     "specificity": metrics.get("specificity", float("nan")), "train_s": t_train})
    return {"table": format_table(rows), "run_dir": str(runs_root), "results": results}


def main_evaluate(predictions, dataset=None, out=None) -> dict:
    """Anomaly evaluation of `medgen infer` outputs (what `medgen evaluate` cannot do for image scores)."""
    return evaluate_anomaly(predictions, dataset, out)


__all__ = ["OCTAnoGAN", "OCTAnoGANConfig", "ConvAutoencoder", "run_comparison", "evaluate_anomaly"]
