"""`unpaired_translation`: translate images of domain A into domain B (e.g. MR into CT in HU) from two UNPAIRED
sets, with CycleGAN (Zhu, Park, Isola, Efros, ICCV 2017, arXiv 1703.10593; reference code
junyanz/pytorch-CycleGAN-and-pix2pix).

- Networks: two ResNet generators G: A -> B and F: B -> A (`NETWORKS["resnet_generator"]`), two PatchGAN
  discriminators D_B (real B vs G(a)) and D_A (real A vs F(b)) (`NETWORKS["patch_discriminator"]`), 2D on
  slices (or images) or 3D on patches (`model.spatial_dims`); instance norm, weights N(0, 0.02).
- Generator loss: LSGAN on both discriminators + lambda_cycle (||F(G(a)) - a||_1 + ||G(F(b)) - b||_1)
  + lambda_identity * lambda_cycle (||G(b) - b||_1 + ||F(a) - a||_1); one Adam for G and F, one for the Ds
  (lr 2e-4, beta1 0.5); each D learns from the real images and a 50-image history of generated ones
  (`history_pool.HistoryPool`), its loss halved; learning rate constant, then linearly decayed to 0.
- Data: dataset.json cases hold key_a (domain A) or key_b (domain B); a case holding both is used for one
  domain only (`medgen.data.unpaired.assign_domains`), so no pair is ever seen. Test cases are translated
  A -> B; a test case that also holds key_b is scored against it.
- Outputs: G(a) in domain B's units (HU for a CT preset) on the source image's grid.
- Evaluation (`evaluate_case`): against a paired reference, MAE / PSNR / SSIM (and bone Dice and region MAE
  for CT) inside the mask, lesions kept / lost / invented (`medgen.metrics.hallucination`) when the case has
  lesion labels; always, the Wasserstein distance between the output's intensities and the training
  domain-B images', and for volumes the KID of its slices against training domain-B slices on fixed random-CNN
  features (`medgen.metrics.distribution`), which need no pair. The model is the last step's
  (the paper selects none; validation has no pairs to select with).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

import medgen.baselines.unpaired  # noqa: F401  (registers unpaired_histogram_matching)
from medgen.data.cases import CaseKey
from medgen.errors import DataError
from medgen.pipelines.base import Pipeline
from medgen.pipelines.unpaired_translation.config import (
    DOWNSAMPLINGS,
    UnpairedConfig,
    check_patch_size,
    min_side,
)
from medgen.pipelines.unpaired_translation.history_pool import HistoryPool
from medgen.registry import NETWORKS, PIPELINES

BACKGROUND = -1.0  # every preset maps the background (air, below the window) to -1: the padding value
FEATURE_SLICES = 256  # training domain-B slices kept (a seeded sample) as the reference set of the per-case KID


@PIPELINES.register()
class UnpairedTranslation(Pipeline):
    name = "unpaired_translation"
    description = "unpaired A -> B translation (e.g. MR -> CT in HU), 2D or 3D CycleGAN (Zhu et al. 2017)"
    config_class = UnpairedConfig
    phantom = "head"
    key_metric = "mae"  # against held-out pairs; validation has none, so the last step's model is kept
    key_metric_mode = "min"
    baselines = ("unpaired_histogram_matching",)
    lower_is_better = ("hist_w1", "kid", "lesions_lost", "lesions_invented")

    def __init__(self, config, device="cpu", stage: int = 1, previous: tuple = ()):
        super().__init__(config, device, stage, previous)
        seed = config.train.seed
        self.pools = {"a": HistoryPool(config.model.pool_size, seed + 7717),
                      "b": HistoryPool(config.model.pool_size, seed + 7919)}
        self._domains: dict[str, dict] = {}
        self._b_stats: dict | None = None  # training domain B: intensity quantiles (scoring space), MR scale
        self._gan = None

    @property
    def spatial_dims(self) -> int:  # what the loader checks: the dataset's images (the networks may be 2D on 3D)
        return self.config.data.image_dims

    # ----- data -------------------------------------------------------------------------------------------
    def preset(self, side: str):
        from medgen.data.presets import CTPreset, MRPreset

        d = self.config.data
        name, (lo, hi) = (d.preset_a, d.window_a) if side == "a" else (d.preset_b, d.window_b)
        return MRPreset() if name == "mr" else CTPreset(lo, hi, check_units=name == "ct")

    def mask_name(self) -> str:
        return self.config.data.mask_key or "foreground"

    def case_keys(self):
        d = self.config.data
        keys = [CaseKey(d.key_a, self.preset("a"), "input", required="optional"),
                CaseKey(d.key_b, self.preset("b"), "target", required="optional")]
        if d.mask_key:
            keys.append(CaseKey(d.mask_key, "label", "mask", required="optional"))
        if d.lesion_key:
            keys.append(CaseKey(d.lesion_key, "label", "label", required="optional"))
        return keys

    def domain_of(self, case) -> str:
        from medgen.data.unpaired import assign_domains

        d = self.config.data
        if case.split not in self._domains:
            self._domains[case.split] = assign_domains(self.data.entries(case.split), d.key_a, d.key_b,
                                                       d.domain_key, self.data.datalist.source)
        return self._domains[case.split][case.id]

    def prepare_case(self, case):
        """A training or validation case keeps the image of its domain only (a paired scan is never seen as a
        pair); a test case must hold key_a, and keeps key_b as its reference. A missing mask is derived from
        the case's image (`derive_mask`)."""
        d = self.config.data
        if case.split == "test":
            if d.key_a not in case.arrays:
                raise DataError(self.data.datalist.source, f"test case '{case.id}' has no '{d.key_a}': test cases "
                                                           f"are translated from domain A (key '{d.key_a}') to B")
            domain = "a"
        else:
            domain = self.domain_of(case)
            drop = d.key_b if domain == "a" else d.key_a
            for part in (case.arrays, case.norm, case.meta, case.paths, case.references):
                part.pop(drop, None)
        if self.mask_name() not in case.arrays:
            mask = self.derive_mask(case, d.key_a if domain == "a" else d.key_b, domain)
            if not bool(mask.any()):
                raise DataError(case.reference_path, f"case '{case.id}': no foreground voxels to derive a mask from")
            case[self.mask_name()] = mask
        case["domain"] = domain
        return case

    def derive_mask(self, case, key: str, side: str) -> torch.Tensor:
        """The region of a case without a mask: above -500 HU (largest component, holes filled) for a CT, the
        voxels above the image's background (its lowest value) otherwise."""
        image = case[key][0]
        if (self.config.data.preset_a if side == "a" else self.config.data.preset_b) == "ct":
            from medgen.data.ct import head_mask_from_ct
            from medgen.data.presets import invert_intensity

            hu = np.asarray(invert_intensity(image, case.norm[key]))
            return torch.from_numpy(head_mask_from_ct(hu)[None].astype(np.float32))
        return (image > image.min())[None].float()

    def slicewise(self) -> bool:
        return self.config.model.spatial_dims == 2 and self.config.data.image_dims == 3

    def resolve_sizes(self) -> None:
        """data.patch_size [] -> the largest training slice / image / volume, rounded up to a multiple of 4 (and
        to the PatchGAN's smallest input); model.n_blocks 0 -> 9 from 256 px on, else 6 (paper). Both are
        written back into the config, so the run's config.yaml and checkpoints hold the sizes used."""
        d, m = self.config.data, self.config.model
        if not d.patch_size:
            shapes = [tuple(c.arrays[k].shape[1:]) for c in self.data.load("training")
                      for k in (d.key_a, d.key_b) if k in c.arrays]
            if not shapes:
                raise DataError(self.data.datalist.source, "the training split holds no image to size patches by")
            if self.slicewise():
                shapes = [tuple(s for a, s in enumerate(sh) if a != d.slice_axis) for sh in shapes]
            factor, smallest = 2**DOWNSAMPLINGS, min_side(m.n_layers_d)
            d.patch_size = [max(smallest, -(-max(sh[a] for sh in shapes) // factor) * factor)
                            for a in range(m.spatial_dims)]
        check_patch_size(d.patch_size, m.spatial_dims, m.n_layers_d)
        if m.n_blocks == 0:
            m.n_blocks = 9 if min(d.patch_size) >= 256 else 6

    def domain_images(self, cases, side: str):
        from medgen.data.unpaired import DomainImages

        d = self.config.data
        key = d.key_a if side == "a" else d.key_b
        seed = [self.config.train.seed, 0 if side == "a" else 1]
        return DomainImages([c[key].numpy() for c in cases], [c[self.mask_name()].numpy()[0] > 0 for c in cases],
                            d.patch_size, d.slice_axis if self.slicewise() else None,
                            seed=int(np.random.SeedSequence(seed).generate_state(1)[0]), flip=d.flip,
                            pad_value=BACKGROUND)

    def train_dataset(self):
        from medgen.data.unpaired import UnpairedDataset

        d = self.config.data
        cases = self.data.load("training")
        a = [c for c in cases if c["domain"] == "a"]
        b = [c for c in cases if c["domain"] == "b"]
        if not a or not b:
            raise DataError(self.data.datalist.source, f"the training split holds {len(a)} image(s) of domain A "
                                                       f"(key '{d.key_a}') and {len(b)} of domain B (key '{d.key_b}'): "
                                                       "unpaired translation needs images of both domains")
        self.resolve_sizes()
        self.b_stats()  # fixed from the training B images before any validation
        return UnpairedDataset(self.domain_images(a, "a"), self.domain_images(b, "b"))

    def validation_cases(self) -> list:
        return [c for c in self.data.load("validation") if c["domain"] == "a"]  # previews, unpaired scores

    # ----- networks and optimisation ----------------------------------------------------------------------
    def build_networks(self):
        from medgen.networks.init import init_weights

        m = self.config.model
        self.resolve_sizes()

        def generator():
            return NETWORKS.build("resnet_generator", m.spatial_dims, in_channels=1, out_channels=1, ngf=m.ngf,
                                  n_blocks=m.n_blocks, n_downsampling=DOWNSAMPLINGS, norm=m.norm, out_act="tanh")

        def discriminator():
            return NETWORKS.build("patch_discriminator", m.spatial_dims, in_channels=1, ndf=m.ndf,
                                  n_layers=m.n_layers_d, norm=m.norm)

        nets = {"G": generator(), "F": generator(), "D_A": discriminator(), "D_B": discriminator()}
        for net in nets.values():
            init_weights(net, "normal", m.init_gain)
        return nets

    def build_optimizers(self, networks):
        m = self.config.model
        betas = (m.beta1, m.beta2)
        return {"G": torch.optim.Adam(itertools.chain(networks["G"].parameters(), networks["F"].parameters()),
                                      lr=m.lr, betas=betas),
                "D": torch.optim.Adam(itertools.chain(networks["D_A"].parameters(), networks["D_B"].parameters()),
                                      lr=m.lr, betas=betas)}

    def build_schedulers(self, optimizers, total_steps):
        from medgen.losses import constant_then_linear_decay

        m = self.config.model
        rule = constant_then_linear_decay(m.epochs_constant, m.epochs_decay)
        spe = max(self.steps_per_epoch, 1)  # stepped once per train step: the multiplier of the fractional epoch
        return {k: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: rule(step / spe)) for k, opt in optimizers.items()}

    def gan_loss(self):
        if self._gan is None:
            from medgen.losses import AdversarialLoss

            self._gan = AdversarialLoss(self.config.model.gan_mode)
        return self._gan

    def train_step(self, batch):
        m = self.config.model
        a, b = batch["a"], batch["b"]
        G, F, D_A, D_B = (self.networks[k] for k in ("G", "F", "D_A", "D_B"))
        gan, l1 = self.gan_loss(), torch.nn.functional.l1_loss
        fake_b, fake_a = G(a), F(b)
        with self.frozen("D_A", "D_B"):
            adv = gan(D_B(fake_b), True, for_discriminator=False) + gan(D_A(fake_a), True, for_discriminator=False)
        cycle = l1(F(fake_b), a) + l1(G(fake_a), b)
        loss = adv + m.lambda_cycle * cycle
        logs = {"loss_adv": adv.detach(), "loss_cycle": cycle.detach()}
        if m.lambda_identity > 0:
            identity = l1(G(b), b) + l1(F(a), a)
            loss = loss + m.lambda_identity * m.lambda_cycle * identity
            logs["loss_identity"] = identity.detach()
        self.update("G", loss)
        # each discriminator: real images against generated ones drawn through its history pool, loss halved
        old_b, old_a = self.pools["b"].query(fake_b.detach()), self.pools["a"].query(fake_a.detach())
        loss_d_b = 0.5 * (gan(D_B(b), True) + gan(D_B(old_b), False))
        loss_d_a = 0.5 * (gan(D_A(a), True) + gan(D_A(old_a), False))
        self.update("D", loss_d_a + loss_d_b)
        logs.update(loss_d_a=loss_d_a.detach(), loss_d_b=loss_d_b.detach())
        return logs

    # ----- prediction and outputs -------------------------------------------------------------------------
    def predict_case(self, case) -> dict:
        from medgen.inference.slicewise import predict_padded, predict_slicewise

        d, inf = self.config.data, self.config.infer
        x = case[d.key_a].unsqueeze(0).float()
        G = self.inference_network("G")
        if self.slicewise():
            out = predict_slicewise(G, x, d.slice_axis, d.patch_size, BACKGROUND, batch=inf.window_batch,
                                    overlap=inf.overlap, blend=inf.blend, device=self.device)
        else:
            out = predict_padded(G, x, d.patch_size, BACKGROUND, overlap=inf.overlap, window_batch=inf.window_batch,
                                 blend=inf.blend, device=self.device)
        return {self.output_name: out[0].float().cpu()}

    def export_examples(self) -> dict:
        return {"G": torch.zeros(1, 1, *self.config.data.patch_size)}

    def b_stats(self) -> dict:
        """Training domain B, fixed once and saved with the model: its intensity quantiles inside the masks in
        the scoring space (`score_space`), and for an MR preset the median of its images' normalisation
        parameters (the scale outputs are written in: an MR target has no units of its own)."""
        if self._b_stats is None:
            from medgen.metrics.distribution import intensity_quantiles

            d = self.config.data
            cases = [c for c in self.data.load("training") if c["domain"] == "b"]
            if not cases:
                raise DataError(self.data.datalist.source, f"the training split holds no domain-B image (key "
                                                           f"'{d.key_b}')")
            values = [self.reference_scores(c)[c[self.mask_name()].numpy()[0] > 0] for c in cases]
            stats = {"quantiles": torch.from_numpy(intensity_quantiles(np.concatenate(values)))}
            if d.preset_b == "mr":
                stats["mr"] = {k: float(np.median([c.norm[d.key_b][k] for c in cases]))
                               for k in ("low", "high", "background")}
            if d.image_dims == 3:
                stats.update(self._b_features(cases))
            self._b_stats = stats
        return self._b_stats

    def _b_features(self, cases) -> dict:
        """The reference set of the per-case KID: random-CNN features (`medgen.metrics.distribution`) of up to
        FEATURE_SLICES slices (across data.slice_axis, inside the masks, as the networks see them: [-1, 1], outside
        -1) of the training domain-B images, and the slice size every set is padded to."""
        from medgen.metrics.distribution import RandomConvFeatures, region_slices

        d = self.config.data
        size = max(16, max(max(s for a, s in enumerate(c[d.key_b].shape[1:]) if a != d.slice_axis) for c in cases))
        slices = np.concatenate([region_slices(c[d.key_b].numpy()[0], c[self.mask_name()].numpy()[0], d.slice_axis,
                                               size) for c in cases])
        if len(slices) > FEATURE_SLICES:
            rng = np.random.default_rng(self.config.train.seed)
            slices = slices[np.sort(rng.choice(len(slices), FEATURE_SLICES, replace=False))]
        return {"features": torch.from_numpy(RandomConvFeatures(seed=0).features(slices)), "feature_size": size}

    def feature_space(self, values) -> np.ndarray:
        """Output values (domain B's units) in the [-1, 1] the training domain-B images were normalised to: the
        preset's window for CT / window presets, the training images' median scale for MR (`score_space`)."""
        d = self.config.data
        if d.preset_b == "mr":
            return self.score_space(values)
        lo, hi = (float(w) for w in d.window_b)
        return np.clip((np.asarray(values, np.float32) - lo) * (2.0 / (hi - lo)) - 1.0, -1.0, 1.0)

    def case_kid(self, values, mask) -> float | None:
        """KID (Binkowski et al. 2018: unbiased MMD^2, cubic kernel) between one output volume's slices and the
        training domain-B slices, on the same fixed random-CNN features; None for 2D images or fewer than two
        slices. No pair needed; read it only against the floors and baselines of the same cases."""
        from medgen.metrics.distribution import RandomConvFeatures, kernel_distance, region_slices

        if self.config.data.image_dims != 3:
            return None
        stats = self.b_stats()
        if "features" not in stats:  # saved by an older version: build it from the training data now
            stats.update(self._b_features([c for c in self.data.load("training") if c["domain"] == "b"]))
        slices = region_slices(self.feature_space(values)[0], mask, self.config.data.slice_axis,
                               int(stats["feature_size"]))
        if len(slices) < 2:
            return None
        return kernel_distance(RandomConvFeatures(seed=0).features(slices), stats["features"].numpy())["kid"]

    def output_params(self) -> dict:
        d = self.config.data
        if d.preset_b == "mr":
            return {"preset": "mr", **self.b_stats()["mr"]}
        return {"preset": "ct", "low": float(d.window_b[0]), "high": float(d.window_b[1])}

    def to_output_units(self, normalised) -> np.ndarray:
        from medgen.data.presets import invert_intensity

        return np.asarray(invert_intensity(torch.as_tensor(normalised).float(), self.output_params()), np.float32)

    def output_units(self) -> str:
        d = self.config.data
        return {"ct": "HU", "window": f"domain B's units (window {d.window_b[0]:g} to {d.window_b[1]:g})",
                "mr": "MR units of the training domain-B images (median scale)"}[d.preset_b]

    def outputs(self, case, prediction: dict) -> dict:
        from medgen.engine.outputs import Output

        d = self.config.data
        return {self.output_name: Output(self.to_output_units(prediction[self.output_name]), "image",
                                         self.output_units(), d.key_b, dtype=self.config.infer.output_dtype)}

    # ----- evaluation ---------------------------------------------------------------------------------------
    def data_range(self) -> float:
        d = self.config.data
        return 2.0 if d.preset_b == "mr" else float(d.window_b[1] - d.window_b[0])

    def score_space(self, values) -> np.ndarray:
        """Output values in the space they are scored in: as written for a CT / window preset; for an MR preset
        the normalised [-1, 1] of the scale they were written with (each reference in its own, `reference_scores`),
        so MR scores compare contrast, not a scanner's arbitrary gain."""
        v = np.asarray(values, np.float32)
        if self.config.data.preset_b != "mr":
            return v
        p = self.b_stats()["mr"]
        return np.clip((v - p["low"]) * (2.0 / (p["high"] - p["low"])) - 1.0, -1.0, 1.0).astype(np.float32)

    def reference_scores(self, case) -> np.ndarray | None:
        """A case's domain-B image in the scoring space (first channel), or None when it has none."""
        d = self.config.data
        if d.key_b not in case.arrays:
            return None
        return case[d.key_b].numpy()[0] if d.preset_b == "mr" else case.references[d.key_b][0]

    def metric_mask(self, case) -> np.ndarray:
        return case[self.mask_name()].numpy()[0] > 0

    def evaluate_case(self, outputs: dict, case) -> dict:
        from medgen.metrics import image_metrics
        from medgen.metrics.ct import ct_metrics
        from medgen.metrics.distribution import wasserstein1
        from medgen.metrics.hallucination import lesion_fidelity

        d = self.config.data
        pred = self.score_space(outputs[self.output_name])[0]
        mask = self.metric_mask(case)
        scores = {"hist_w1": wasserstein1(pred[mask], self.b_stats()["quantiles"].numpy())}
        kid = self.case_kid(outputs[self.output_name], mask)
        if kid is not None:
            scores["kid"] = kid
        ref = self.reference_scores(case)
        if ref is None:
            return scores  # an unpaired test image: the distribution score only
        if d.preset_b == "ct":
            scores.update(ct_metrics(pred, ref, mask, data_range=self.data_range()))
        else:
            m = image_metrics(pred, ref, data_range=self.data_range(), mask=mask)
            scores.update({k: m[k] for k in ("mae", "psnr", "ssim")})
        if d.lesion_key and d.lesion_key in case.arrays:
            scores.update(lesion_fidelity(pred, ref, case[d.lesion_key].numpy()[0], mask))
        return scores

    def floors(self, case) -> dict:
        """The source read as a domain-B image (G = identity: what the identity loss pulls towards), and, for a
        case with a reference, the reference's own mean inside the mask (the best constant)."""
        d = self.config.data
        out = {"identity": {self.output_name: self.to_output_units(case[d.key_a])}}
        ref = self.reference_scores(case)
        if ref is not None:
            mean = float(ref[self.metric_mask(case)].mean())
            if d.preset_b == "mr":  # back to the output scale, which score_space maps to this mean
                p = self.b_stats()["mr"]
                mean = (mean + 1.0) * (p["high"] - p["low"]) / 2.0 + p["low"]
            out["target_mean"] = {self.output_name: np.full((1, *ref.shape), mean, np.float32)}
        return out

    def describe_evaluation(self) -> dict:
        d = self.config.data
        space = "HU" if d.preset_b == "ct" else ("domain B's units" if d.preset_b == "window" else
                                                 "normalised [-1, 1] (each reference by its own percentiles)")
        return {"region": f"mask '{d.mask_key}' (given, or derived from each image)" if d.mask_key
                else "each image's foreground (derived)", "scored_in": space, "data_range": self.data_range(),
                "reference": f"'{d.key_b}' of the same test case (held-out pairs only)",
                "hist_w1": f"Wasserstein-1 distance to the training domain-B intensities inside their masks ({space})",
                **({"kid": f"kernel inception distance between the output's slices across axis {d.slice_axis} "
                           f"(inside the mask, [-1, 1], outside -1) and up to {FEATURE_SLICES} training domain-B "
                           "slices, on fixed random-CNN features (medgen.metrics.distribution, seed 0); compare with "
                           "the floors and baselines only"} if d.image_dims == 3 else {})}

    def preview(self, case, prediction: dict) -> dict:
        d = self.config.data
        images = {"input": case[d.key_a][0], "output": prediction[self.output_name][0]}
        if d.key_b in case.arrays:
            images["reference"] = case[d.key_b][0]
        return images

    # ----- state saved with the networks --------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {"pools": {k: p.state_dict() for k, p in self.pools.items()}}
        if self._b_stats is not None:
            state["b_stats"] = self._b_stats
        return state

    def load_state_dict(self, state: dict) -> None:
        for k, p in self.pools.items():
            if k in state.get("pools", {}):
                p.load_state_dict(state["pools"][k], self.device)
        if state.get("b_stats") is not None:  # used through numpy: back on the CPU, wherever the state was mapped
            stats = dict(state["b_stats"])
            for k in ("quantiles", "features"):
                if k in stats:
                    stats[k] = torch.as_tensor(stats[k]).detach().cpu()
            self._b_stats = stats
