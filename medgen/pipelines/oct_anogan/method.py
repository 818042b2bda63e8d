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

Reading B-scans is `medgen.data.bscans`, the retina band `medgen.data.retina`, tiling and top-k aggregation
`medgen.inference.tiles`, the evaluation of written scores `medgen.metrics.anomaly_evaluation`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch.nn import functional as F

from medgen.errors import ConfigError, DataError
from medgen.inference.tiles import aggregate_scores, stitch_mean, tile_image
from medgen.pipelines.base import Pipeline
from medgen.pipelines.oct_anogan.config import OCTAnoGANConfig
from medgen.registry import NETWORKS, PIPELINES


@PIPELINES.register()
class OCTAnoGAN(Pipeline):
    name = "oct_anogan"
    description = "OCT anomaly detection: f-AnoGAN (default), AnoGAN, conv autoencoder; scores + anomaly maps"
    config_class = OCTAnoGANConfig
    spatial_dims = 2
    phantom = "oct"
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
        self._threshold: dict | None = None

    # ----- phases ------------------------------------------------------------------------------------------
    @property
    def gan_iterations(self) -> int:
        total = self._engine.total_steps if self._engine is not None else self.config.train.iterations
        return max(0, total - self.config.model.encoder_iterations)

    def encoder_phase(self) -> bool:
        return self.method == "fanogan" and self.step >= self.gan_iterations

    # ----- data --------------------------------------------------------------------------------------------
    def data_source(self):
        """B-scans (2D, any channel layout) read by `load_bscan_case`, then `prepare_case`."""
        from medgen.data.bscans import load_bscan_case
        from medgen.data.cases import CaseSource, resolve_dataset

        d = self.config.data
        ref = resolve_dataset(d, self.phantom, seed=0)
        if not d.dataset:  # record the resolved phantom in the run's config.yaml
            d.dataset = str(ref.path)

        def load_entry(entry, split):
            return self.prepare_case(load_bscan_case(entry, split, source.datalist.source, d.mask_key,
                                                     out_range=(-1.0, 1.0), keep_stored=True))  # G ends in tanh

        source = CaseSource(ref, load_entry, skip_bad_cases=d.skip_bad_cases)
        return source

    def prepare_case(self, case):
        """Add the retina band (detected on the B-scan as stored) and the label: the entry's `label_key`
        (0 / 1), else whether the anomaly mask is non-empty, else None (unknown)."""
        from medgen.data.bscans import STORED_KEY
        from medgen.data.retina import retina_band

        d = self.config.data
        stored = case.pop(STORED_KEY)[0].numpy()
        band = retina_band(stored, d.depth_axis if d.depth_axis == "auto" else int(d.depth_axis),
                           smooth=d.retina_smooth, closing=d.retina_closing)
        low, span = float(stored.min()), float(np.ptp(stored)) or 1.0
        # trivial image statistics, scored as "scorers" beside the model: when one separates normal from
        # abnormal as well as the model, the acquisition (not the anatomy) may be what tells them apart
        case.fields["dark_fraction"] = float(np.mean(stored <= low + 0.01 * span))
        case.fields["mean_intensity"] = float(stored.mean())
        case["retina"] = torch.from_numpy(band[None].astype(np.float32))
        label = case.fields.get(d.label_key)
        if label not in (None, ""):
            source = self.data.datalist.source
            try:
                label = int(label)
            except (TypeError, ValueError):
                raise DataError(source, f"case '{case.id}' key '{d.label_key}' must be 0 or 1, got {label!r}") from None
            if label not in (0, 1):
                raise DataError(source, f"case '{case.id}' key '{d.label_key}' must be 0 or 1, got {label}")
        else:
            label = int(bool(case["mask"].any())) if "mask" in case.arrays else None
        case.fields["label"] = label
        return case

    def normal_cases(self, split: str) -> list:
        """Cases of a split that are not labelled abnormal (training and thresholds use normals only)."""
        return [c for c in self.data.load(split) if c["label"] != 1]

    def train_dataset(self):
        from medgen.data.patches import PatchDataset, PatchSampler

        cases = self.normal_cases("training")
        if not cases:
            raise DataError(self.data.datalist.source, "the training split has no normal B-scans (label 0 or no label)")
        sampler = PatchSampler(list(self.config.data.patch_size), mode="foreground", fg_key="retina",
                               pad_mode="reflect")
        arrays = [{"id": c.id, "image": c["image"].numpy(), "retina": c["retina"].numpy()} for c in cases]
        return PatchDataset(arrays, sampler, ["image"], seed=self.config.train.seed)

    def validation_cases(self):
        """Validation normals; none while f-AnoGAN's encoder has not trained a single step yet.

        Why: before the encoder phase, G(E(x)) uses an untrained E, so `evaluate_case` discards the score;
        scoring every validation scan (and drawing a preview) at each `val_every` was pure waste, and a
        validation exactly at the switch step could save the untrained encoder as best.pt (which inference
        loads) if later scores happened to be higher."""
        if self.method == "fanogan" and self.step <= self.gan_iterations:
            return []
        return [replace(c, fields={**c.fields, "for_validation": True}) for c in self.normal_cases("validation")]

    # ----- networks ----------------------------------------------------------------------------------------
    def build_networks(self):
        from medgen.networks import init_weights

        m, p = self.config.model, int(self.config.data.patch_size[0])
        if self.method == "fanogan":
            return {"G": NETWORKS.build("wgan_resnet_generator", 2, m.latent_dim, 1, p, m.dim),
                    "D": NETWORKS.build("wgan_resnet_critic", 2, 1, p, m.dim),
                    "E": NETWORKS.build("izi_encoder", 2, 1, p, m.dim, latent_dim=m.latent_dim)}
        if self.method == "anogan":  # DCGAN weights N(0, 0.02) (Radford et al.)
            return {"G": init_weights(NETWORKS.build("dcgan_generator", 2, m.dcgan_latent_dim, 1, p, ngf=m.dcgan_ngf)),
                    "D": init_weights(NETWORKS.build("dcgan_discriminator", 2, 1, p, ndf=m.dcgan_ngf))}
        return {"AE": NETWORKS.build("conv_autoencoder", 2, 1, p, m.ae_channels, m.ae_latent_dim)}

    def build_optimizers(self, nets):
        m = self.config.model
        if self.method == "fanogan":
            return {"G": torch.optim.Adam(nets["G"].parameters(), m.lr, betas=tuple(m.betas)),
                    "D": torch.optim.Adam(nets["D"].parameters(), m.lr, betas=tuple(m.betas)),
                    "E": torch.optim.RMSprop(nets["E"].parameters(), m.encoder_lr)}
        if self.method == "anogan":
            return {k: torch.optim.Adam(nets[k].parameters(), m.dcgan_lr, betas=tuple(m.dcgan_betas))
                    for k in ("G", "D")}
        return {"AE": torch.optim.Adam(nets["AE"].parameters(), m.ae_lr)}

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

    def outputs(self, case, prediction) -> dict:
        """`anomaly_map` (the residual map, normalised units, in the source's layout and affine), `overlay`
        (PNG), and the values `score`, `threshold` (chosen on the validation normals) and `abnormal`."""
        from medgen.engine.outputs import Output
        from medgen.metrics.anomaly_figures import overlay_figure

        thr = self.threshold()["threshold"]
        amap = prediction["anomaly_map"].float().cpu().numpy()[0]
        geometry = case.meta["image"]  # the source's layout and affine (medgen.data.bscans.bscan_geometry)
        score = float(prediction["score"][0])
        image01 = (case["image"][0].numpy() + 1) / 2
        title = f"{case.id}: score {score:.4g}" + (f" (thr {thr:.4g})" if thr is not None else "")
        out = {"anomaly_map": Output(amap.reshape((1, *geometry["spatial_shape"])), "image", "residual (normalised)",
                                     geometry=geometry),
               "overlay": Output(lambda path: _save_figure(overlay_figure(image01, amap, title=title), path),
                                 "figure"),
               "score": Output(score, "value", "anomaly score")}
        if thr is not None:
            out["threshold"] = Output(thr, "value", "anomaly score")
            out["abnormal"] = Output(float(score > thr), "value", "0 / 1")
        return out

    def evaluate_case(self, outputs: dict, case) -> dict:
        """The image's score and label (0 normal, 1 abnormal, when known), the threshold decision, and, where the
        case has an anomaly mask with something in it, the pixel AUC of its anomaly map."""
        if self.method == "fanogan" and self._engine is not None and not self.encoder_phase():
            return {}  # no encoder yet: a score would be meaningless, and must not pick "best"
        row = {"score": float(outputs["score"])}
        label = case.get("label")
        if label is not None:
            row["label"] = float(label)
        if "threshold" in outputs:
            row["threshold"] = float(outputs["threshold"])
        amap = outputs.get("anomaly_map")
        if amap is not None and "mask" in case.arrays and bool(case["mask"].any()) and not bool(case["mask"].all()):
            from medgen.metrics.anomaly import pixel_auc

            row["pixel_auc"] = pixel_auc(np.squeeze(np.asarray(amap)), case["mask"][0].numpy() > 0)
        return row

    def evaluate_set(self, rows: list[dict]) -> dict:
        """Image-level ROC AUC with its DeLong 95 % interval, PR AUC, and sensitivity / specificity at the
        threshold, over the cases with a label."""
        from medgen.metrics.anomaly_evaluation import anomaly_metrics

        labelled = [r for r in rows if "label" in r]
        if not labelled:
            return {}
        thr = next((r["threshold"] for r in labelled if "threshold" in r), None)
        m = anomaly_metrics([r["score"] for r in labelled], [int(r["label"]) for r in labelled], thr)
        keep = ("roc_auc", "roc_auc_ci_low", "roc_auc_ci_high", "pr_auc", "sensitivity", "specificity",
                "n_normal", "n_abnormal")
        return {k: float(m[k]) for k in keep if k in m}

    def floors(self, case) -> dict:
        """Scorers that know nothing of anatomy: a random score (seeded by the case id), and two image statistics
        (the fraction of near-black pixels, the mean intensity)."""
        import zlib

        rng = np.random.default_rng([self.config.train.seed, zlib.crc32(case.id.encode())])
        return {"random": {"score": float(rng.random())},
                "dark_fraction": {"score": float(case.get("dark_fraction", np.nan))},
                "mean_intensity": {"score": float(case.get("mean_intensity", np.nan))}}

    def describe_evaluation(self) -> dict:
        thr = self.threshold()
        out = {"region": "whole B-scans (image scores); anomaly maps against the anomaly masks (pixel AUC)",
               "score": f"mean of the top {self.config.infer.top_k_fraction:.0%} patch scores ({self.method})",
               "threshold": thr["threshold"], "specificity_target": thr["specificity"],
               "n_validation_normals": thr["n_validation_normals"]}
        if "validation_specificity" in thr:
            out.update(validation_specificity=thr["validation_specificity"],
                       validation_specificity_ci=thr["validation_specificity_ci"])
        if "warning" in thr:
            out["threshold_warning"] = thr["warning"]
        return out

    def preview(self, case, prediction):
        return {"input": case["image"][0], "reconstruction": prediction["reconstruction"][0],
                "anomaly_map_error": prediction["anomaly_map"][0]}

    # ----- threshold and outputs -------------------------------------------------------------------------------
    def threshold(self) -> dict:
        """The image-score threshold at `infer.specificity` on the validation normals, scored exactly as at test
        time with the current weights (computed once per pipeline object), with what it rests on: how many
        normals, the specificity they show, and its exact (Clopper-Pearson) 95 % interval. A 95 % specificity
        cannot be told from 100 % with fewer than about 20 normals; the record then says so."""
        from scipy.stats import beta

        from medgen.metrics import threshold_at_specificity

        if self._threshold is None:
            normals = self.normal_cases("validation")
            scores = {c.id: float(self.predict_case(c)["score"][0]) for c in normals}
            spec = self.config.infer.specificity
            thr = threshold_at_specificity(list(scores.values()), spec) if scores else None
            n = len(scores)
            record = {"threshold": thr, "specificity": spec, "n_validation_normals": n,
                      "validation_scores": scores, "method": self.method}
            if thr is not None:
                k = sum(v <= thr for v in scores.values())
                lo = float(beta.ppf(0.025, k, n - k + 1)) if k > 0 else 0.0
                hi = float(beta.ppf(0.975, k + 1, n - k)) if k < n else 1.0
                record.update(validation_specificity=k / n, validation_specificity_ci=[lo, hi])
                if n < 20:
                    record["warning"] = (f"the threshold rests on {n} validation normal scan(s): the specificity it "
                                         f"gives is anywhere in [{lo:.2f}, {hi:.2f}] (95 %), not {spec:.0%}")
            self._threshold = record
        return self._threshold

    def state_dict(self):
        return {"method": self.method}


def _save_figure(fig, path) -> None:
    """A figure written when the output is written (never drawn for validation, which only scores values)."""
    import matplotlib.pyplot as plt

    try:
        fig.savefig(path, dpi=80, format="png")
    finally:
        plt.close(fig)
