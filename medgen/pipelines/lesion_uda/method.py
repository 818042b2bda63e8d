"""`lesion_uda`: adversarial unsupervised domain adaptation for lesion segmentation with a multi-layer domain
discriminator (Kamnitsas et al., IPMI 2017, arXiv 1612.08894).

A DeepMedic segmenter (or a MONAI 3D U-Net) learns lesions from labelled source-domain patches; a domain
discriminator sees feature maps from several segmenter layers (all pathways) of source and target patches and
predicts the domain; the segmenter minimises cross-entropy on source labels minus alpha times the
discriminator's loss (gradient reversal, or alternating updates), with alpha 0 during a warm-up and then
ramped up. Modes: `source_only`, `uda` (multi-layer D), `uda_last_layer` (D on the last layer only) and
`target_supervised` (the upper bound, trained on target labels). Target labels are dropped from training and
validation cases outside `target_supervised`, so they never reach training or model selection. Inference is
dense over whole volumes; lesion masks are written in the source geometry (uint8, manifest kind "label", so
`medgen evaluate` reports Dice, HD95, lesion F1, volume error).

Real scans: a case without a brain mask gets one derived (`medgen.data.brain_mask`, the rule mr_synthesis
uses), and is then z-scored inside it; a scan that is not skull-stripped is refused with the reason, since the
derived region would be the whole head. Before training, every case of every split is checked for the network's
sequences and a usable domain, so a scan that cannot be segmented is named before hours of training, not after.
A test case may come from a third domain (or name none: "unspecified"); it is recorded as such, not as the target.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from medgen.data.cases import CaseKey
from medgen.errors import ConfigError, DataError
from medgen.inference.windows import sliding_window, valid_sliding_window
from medgen.networks.batchnorm import bn_running_stats
from medgen.pipelines.base import Pipeline
from medgen.pipelines.lesion_uda.config import LesionUDAConfig
from medgen.registry import NETWORKS, PIPELINES


UNSPECIFIED_DOMAIN = "unspecified"  # a test case whose entry names no domain


@PIPELINES.register()
class LesionUDA(Pipeline):
    name = "lesion_uda"
    description = "adversarial UDA for lesion segmentation, multi-layer domain discriminator (Kamnitsas 2017)"
    config_class = LesionUDAConfig
    phantom = "lesion_domains"
    output_name = "lesion"
    key_metric_mode = "max"

    def __init__(self, config, device="cpu", stage: int = 1, previous: tuple = ()):
        super().__init__(config, device, stage, previous)
        self.total_steps = max(1, config.train.iterations)
        self._sizes = None

    # ----- domains and channels -------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self.config.model.mode

    @property
    def adversarial(self) -> bool:
        return self.mode in ("uda", "uda_last_layer")

    def labelled_domain(self) -> str:
        d = self.config.data
        return d.target_domain if self.mode == "target_supervised" else d.source_domain

    def source_keys(self) -> list[str]:
        return self.config.data.used_channels()

    def network_keys(self) -> list[str]:
        """The segmenter's input channels, in order (also what `medgen bench` feeds a synthetic volume)."""
        return self.source_keys()

    def network_input(self, batch: dict) -> torch.Tensor:
        return torch.cat([batch[k] for k in self.network_keys()], dim=1)

    # ----- data ---------------------------------------------------------------------------------------------------
    def case_keys(self):
        """The sequences (z-score inside the brain mask as DeepMedic, or medgen's "mr" preset), the brain mask
        and the lesion map when a case has them; `prepare_case` decides which lesion maps a mode may keep."""
        d = self.config.data
        preset = "zscore" if d.intensity == "zscore" else "mr"
        keys = [CaseKey(k, preset, "input") for k in self.source_keys()]
        if d.mask_key:
            keys.append(CaseKey(d.mask_key, "label", "mask", required="optional"))
        keys.append(CaseKey(d.lesion_key, "label", "label", required="optional"))
        return keys

    def prepare_case(self, case):
        """The brain mask (derived for a skull-stripped case without one, see `_derive_brain_mask`); the case's
        domain (a test case may name none, "unspecified", or a third one: recorded as it is); the lesion map of a
        training or validation case is kept only in the domain whose labels this mode may use, and required for
        training cases of that domain. Every labelled test case keeps its lesions (evaluation)."""
        d = self.config.data
        source = self.data.datalist.source
        case = self._derive_brain_mask(case)
        dom = case.get(d.domain_key)
        if dom is None:
            if case.split != "test":
                raise DataError(source, f"case '{case.id}' ({case.split}) has no '{d.domain_key}' field (set it to "
                                        f"'{d.source_domain}' or '{d.target_domain}')")
            dom = UNSPECIFIED_DOMAIN  # not claimed to be the target: the scan may come from anywhere
        dom = str(dom)
        if dom not in (d.source_domain, d.target_domain) and case.split != "test":
            raise DataError(source, f"case '{case.id}' has {d.domain_key}={dom!r}, neither the source "
                                    f"'{d.source_domain}' nor the target '{d.target_domain}'")
        if case.split != "test" and dom != self.labelled_domain():
            for part in (case.arrays, case.norm, case.meta, case.paths):
                part.pop(d.lesion_key, None)
        elif case.split == "training" and d.lesion_key not in case.arrays:
            raise DataError(source, f"training case '{case.id}' of the labelled domain {dom} has no "
                                    f"'{d.lesion_key}' key")
        case["domain"] = dom
        return case

    def _derive_brain_mask(self, case):
        """A case without `data.mask_key` gets the mask `medgen.data.brain_mask` derives from its sequences (in
        source units: the stored inverse of their normalisation), and its sequences are normalised again inside
        it, as DeepMedic normalises inside its ROI. A scan that does not look skull-stripped is refused: its
        derived region would be the head, and the segmenter would sample and segment scalp and CSF."""
        from medgen.data.brain_mask import derive_brain_mask, skull_stripped_problem
        from medgen.data.presets import get_preset, invert_intensity

        d = self.config.data
        if not d.mask_key or d.mask_key in case:
            return case
        keys = self.source_keys()
        raw = {k: np.asarray(invert_intensity(case[k], case.norm[k]), dtype=np.float64) for k in keys}
        # "above zero" up to the float32 rounding of the stored inverse (a zero background comes back as ~1e-7)
        tol = {k: 1e-5 * float(np.abs(r).max() or 1.0) for k, r in raw.items()}
        mask = np.any([derive_brain_mask([r[0]], tol[k]) for k, r in raw.items()], axis=0)
        meta = case.meta.get(keys[0], {})
        affine = meta.get("original_affine", meta.get("affine"))
        affine = None if affine is None else np.asarray(affine.cpu() if torch.is_tensor(affine) else affine)
        problem = "no voxel is above zero" if not mask.any() else skull_stripped_problem(mask, affine)
        if problem:
            raise DataError(case.paths.get(keys[0]), f"case '{case.id}' has no '{d.mask_key}' key and {problem}. "
                            f"lesion_uda segments inside a brain mask: give each case one (key '{d.mask_key}', e.g. "
                            "from HD-BET or SynthStrip), skull-strip the scans, or set data.mask_key='' to segment "
                            "the whole volume knowingly")
        m = torch.from_numpy(mask[None].astype(np.float32))
        for k in keys:
            preset = get_preset(case.norm[k]["preset"])
            x, case.norm[k] = preset.forward(torch.from_numpy(raw[k].astype(np.float32)), meta, m)
            case.arrays[k] = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        case.arrays[d.mask_key] = m
        case.fields["brain_mask_source"] = "derived"
        return case

    def check_cases(self) -> None:
        """Before training: every case of every split has the network's sequences, and every training and
        validation case a source or target domain. One DataError lists all the cases that do not, and which
        sequences all cases share (what data.channels could be)."""
        d = self.config.data
        needed = self.source_keys()
        problems, shared = [], None
        for split in ("training", "validation", "test"):
            for e in self.data.entries(split):
                cid = e.get("id")
                keys = {k for k in e if k != "id"}
                shared = keys if shared is None else shared & keys
                missing = [k for k in needed if k not in e]
                if missing:
                    problems.append(f"{split} case '{cid}' has no {missing} (it has {', '.join(sorted(keys))})")
                dom = e.get(d.domain_key)
                if split != "test" and (dom is None or str(dom) not in (d.source_domain, d.target_domain)):
                    problems.append(f"{split} case '{cid}' has {d.domain_key}={dom!r}, not the source "
                                    f"'{d.source_domain}' or the target '{d.target_domain}'")
        if problems:
            common = [k for k in dict.fromkeys(d.source_channels + d.target_channels) if k in (shared or set())]
            hint = (f"; the sequences every case has: {common} (data.channels={common})" if common else "")
            raise DataError(self.data.datalist.source, f"{len(problems)} case(s) do not fit data.channels {needed} "
                            f"or the domains: " + "; ".join(problems) + hint)

    def _patch_dataset(self, cases, labelled: bool, seed: int):
        from medgen.data.patches import PatchDataset, PatchSampler

        d = self.config.data
        sizes = self.sizes()
        mask_key = d.mask_key if d.mask_key and all(d.mask_key in c for c in cases) else None
        if labelled:
            mode = d.patch_sampling
            if mode == "foreground" and not mask_key:
                mode = "uniform"
        else:
            mode = "foreground" if mask_key else "uniform"  # no labels in the target domain
        sampler = PatchSampler(sizes[0], sizes[1], mode=mode, fg_key=mask_key,
                               lesion_key=d.lesion_key if mode == "lesion_balanced" else None,
                               pos_fraction=d.pos_fraction)
        arrays = [{"id": c.id, **{k: v.numpy() for k, v in c.arrays.items()}} for c in cases]
        targets = ([d.lesion_key] if labelled else []) + ([mask_key] if mask_key else [])
        return PatchDataset(arrays, sampler, self.network_keys(), targets, seed=seed)

    def train_dataset(self):
        from medgen.data.mixed_domain import MixedDomainDataset

        d = self.config.data
        self.check_cases()
        if not d.mask_key:
            warnings.warn("data.mask_key is empty: lesion_uda normalises, samples and segments the WHOLE volume "
                          "(scalp, skull, CSF); give brain masks unless the scans hold nothing else", stacklevel=2)
        cases = self.data.load("training")
        labelled = [c for c in cases if c["domain"] == self.labelled_domain()]
        if not labelled:
            raise DataError(self.data.datalist.source, f"no training case of the labelled domain "
                                                       f"'{self.labelled_domain()}' (mode {self.mode})")
        seed = self.config.train.seed
        source = self._patch_dataset(labelled, True, seed)
        target = None
        if self.adversarial:
            unlabelled = [c for c in cases if c["domain"] == d.target_domain]
            if not unlabelled:
                raise DataError(self.data.datalist.source, f"mode {self.mode} needs training cases of the target "
                                                           f"domain '{d.target_domain}'")
            assert all(d.lesion_key not in c for c in unlabelled)  # never train on target labels
            target = self._patch_dataset(unlabelled, False, seed + 7919)
            if self.config.model.disc_source == "matched":
                # Source segments for D drawn exactly as the target ones, so D cannot use lesion content.
                source_adv = self._patch_dataset(labelled, False, seed + 104729)
                return MixedDomainDataset(source, target, source_adv)
        return MixedDomainDataset(source, target)

    def validation_cases(self) -> list:
        # Only the domain whose labels this mode may use (no target labels for UDA model selection).
        return [c for c in self.data.load("validation") if c["domain"] == self.labelled_domain()]

    # ----- networks ---------------------------------------------------------------------------------------------
    def sizes(self) -> tuple[list[int], list[int]]:
        """(input patch, output patch) of a training sample. For DeepMedic the sizes come from a segmenter
        built for the purpose and discarded: its initialisation draws from torch's generator after the networks
        are built, which shifts the dropout masks of training, so the recorded runs reproduce only with it."""
        if self._sizes is None:
            m = self.config.model
            if m.segmenter == "deepmedic":
                net = self._build_segmenter()
                s = net.input_sizes(tuple(m.output_size))
                self._sizes = (list(s.context), list(s.output))
            else:
                self._sizes = (list(self.config.data.patch_size), list(self.config.data.patch_size))
        return self._sizes

    def output_patch_size(self) -> list[int]:
        return self.sizes()[1]

    def _build_segmenter(self):
        m = self.config.model
        n_in = len(self.source_keys())
        if m.segmenter == "deepmedic":
            return NETWORKS.build("deepmedic", 3, in_channels=n_in, out_channels=2, channels=m.dm_channels,
                                  subsample_factors=m.subsample_factors, residual_layers=m.residual_layers,
                                  fc_channels=m.fc_channels, dropout=m.dropout, feature_layers=m.feature_layers)
        ps = list(self.config.data.patch_size)
        if len(ps) != 3 or any(int(q) < 32 or int(q) % 16 for q in ps):
            raise ConfigError(f"data.patch_size {ps}: the U-Net (four 2x downsamplings) needs 3 sizes that are "
                              "multiples of 16 and at least 32")
        return NETWORKS.build("unet_segmenter", 3, n_in, 2, features=m.unet_features, dropout=0.0,
                              feature_layers=m.unet_feature_layers)

    def tapped_channels(self, segmenter) -> list[int]:
        chans = list(segmenter.feature_channels)
        return chans[-1:] if self.mode == "uda_last_layer" else chans

    def build_networks(self):
        m = self.config.model
        nets = {"S": self._build_segmenter()}
        if self.adversarial:
            resize = "crop" if m.segmenter == "deepmedic" else "resample"
            size = m.disc_size or None
            if size is None and m.segmenter == "unet":
                size = [max(2, p // 4) for p in self.config.data.patch_size]
            nets["D"] = NETWORKS.build("domain_discriminator", 3, in_channels=sum(self.tapped_channels(nets["S"])),
                                       channels=m.disc_channels, target_size=size, resize=resize)
        return nets

    def build_optimizers(self, nets):
        m = self.config.model
        seg = {"params": nets["S"].parameters(), "lr": m.lr, "weight_decay": m.weight_decay}
        if not self.adversarial:
            return {"S": torch.optim.Adam([seg])}
        disc = {"params": nets["D"].parameters(), "lr": m.lr_d, "weight_decay": 0.0}
        if m.adversarial_scheme == "gradient_reversal":
            # One backward of CE + reversed D loss updates both: D descends its loss, S ascends alpha * it.
            return {"S": torch.optim.Adam([seg, disc])}
        return {"S": torch.optim.Adam([seg]), "D": torch.optim.Adam([disc])}

    def build_schedulers(self, optimizers, total_steps):
        self.total_steps = total_steps
        return {}

    def alpha(self) -> float:
        from medgen.networks.domain import ramp_weight

        m = self.config.model
        warm = int(round(m.warmup_fraction * self.total_steps))
        ramp = int(round(m.ramp_fraction * self.total_steps))
        return ramp_weight(self.step, warm, ramp, m.alpha_max)

    # ----- training ---------------------------------------------------------------------------------------------
    def segment(self, x, return_features=False, output_size=None):
        net = self.networks["S"]
        if self.config.model.segmenter == "deepmedic":
            return net(x, return_features=return_features, output_size=output_size or self.output_patch_size())
        return net(x, return_features=return_features)

    def seg_loss(self, logits, label):
        y = (label[:, 0] > 0.5).long()
        loss = F.cross_entropy(logits.float(), y)
        w = self.config.model.dice_weight
        if w > 0:
            p = torch.softmax(logits.float(), 1)[:, 1]
            t = y.float()
            dims = tuple(range(1, p.dim()))
            dsc = (2 * (p * t).sum(dims) + 1e-5) / (p.sum(dims) + t.sum(dims) + 1e-5)
            loss = loss + w * (1 - dsc.mean())
        return loss

    def train_step(self, batch):
        d = self.config.data
        src = batch["source"]
        x_s, y_s = self.network_input(src), src[d.lesion_key]
        if not self.adversarial:
            loss = self.seg_loss(self.segment(x_s), y_s)
            self.update("S", loss)
            return {"loss_seg": loss.detach()}
        from medgen.networks.domain import grad_reverse

        x_t = self.network_input(batch["target"])
        n_s, n_t = x_s.shape[0], x_t.shape[0]
        # D's source segments: the labelled batch itself ("labelled") or segments drawn like the target ones
        # ("matched"); then the labelled segments only feed the cross-entropy.
        x_a = self.network_input(batch["source_adv"]) if "source_adv" in batch else None
        n_a = x_a.shape[0] if x_a is not None else 0
        x_src = torch.cat([x_s, x_a]) if x_a is not None else x_s
        bn = self.config.model.bn_stats
        if bn == "mixed":
            logits, feats = self.segment(torch.cat([x_src, x_t]), return_features=True)
        else:
            # One forward per domain: BatchNorm normalises each domain by its own statistics, and only the
            # chosen domain's statistics enter the running averages that inference uses.
            with bn_running_stats(self.networks["S"], bn == "source"):
                lo_s, f_s = self.segment(x_src, return_features=True)
            with bn_running_stats(self.networks["S"], bn == "target"):
                lo_t, f_t = self.segment(x_t, return_features=True)
            logits, feats = torch.cat([lo_s, lo_t]), [torch.cat(ab) for ab in zip(f_s, f_t)]
        if self.mode == "uda_last_layer":
            feats = feats[-1:]
        if x_a is not None:
            feats = [f[n_s:] for f in feats]
        loss_seg = self.seg_loss(logits[:n_s], y_s)
        dom = torch.cat([torch.zeros(n_a or n_s, 1), torch.ones(n_t, 1)]).to(logits.device)
        alpha = self.alpha()
        D = self.networks["D"]
        if self.config.model.adversarial_scheme == "gradient_reversal":
            d_logit = D([grad_reverse(f, alpha) for f in feats])
            loss_d = F.binary_cross_entropy_with_logits(d_logit.float(), dom)
            self.update("S", loss_seg + loss_d)
        else:
            loss_d = F.binary_cross_entropy_with_logits(D([f.detach() for f in feats]).float(), dom)
            self.update("D", loss_d)
            with self.frozen("D"):
                loss_adv = F.binary_cross_entropy_with_logits(D(feats).float(), dom)
            self.update("S", loss_seg - alpha * loss_adv)
        logs = {"loss_seg": loss_seg.detach(), "loss_d": loss_d.detach(), "alpha": torch.tensor(alpha)}
        if self.config.model.adversarial_scheme == "gradient_reversal":
            logs["d_acc"] = ((d_logit.detach() > 0).float() == dom).float().mean()
        return logs

    # ----- prediction and evaluation ----------------------------------------------------------------------------
    def lesion_probability(self, net=None) -> "LesionProbability":
        """The segmenter as a module returning lesion probabilities (DeepMedic: output segments of
        infer.output_size): what prediction runs on each window, and what `medgen export` writes."""
        deepmedic = self.config.model.segmenter == "deepmedic"
        return LesionProbability(net if net is not None else self.inference_network("S"),
                                 self.config.infer.output_size if deepmedic else None)

    def predict_windows(self, windows: torch.Tensor) -> dict:
        """Lesion probabilities of a batch of input windows (DeepMedic: output segments of infer.output_size)."""
        return {"lesion_prob": self.lesion_probability()(windows)}

    def export_examples(self) -> dict:
        """The segmenter with its softmax (lesion probability out): the U-Net is fully convolutional (checked on
        a window twice as long on the last axis); DeepMedic takes its context window for infer.output_size."""
        from medgen.engine.export import Exportable

        inf = self.config.infer
        deepmedic = self.config.model.segmenter == "deepmedic"
        if deepmedic:
            size = list(self.networks["S"].input_sizes(tuple(int(s) for s in inf.output_size)).context)
        else:
            size = [int(s) for s in self.config.data.patch_size]
        n = len(self.network_keys())
        gen = torch.Generator().manual_seed(0)
        example = torch.randn(1, n, *size, generator=gen)
        other = torch.randn(2, n, *size, generator=gen) if deepmedic else \
            torch.randn(2, n, *size[:-1], 2 * size[-1], generator=gen)
        preset = "zscore" if self.config.data.intensity == "zscore" else "mr"
        return {"S": Exportable(
            example=example, module=self.lesion_probability(self.networks["S"]), input_names=("image",),
            output_names=("lesion_prob",), dynamic_spatial=not deepmedic, other_examples=(other,),
            description=f"{self.config.model.segmenter} lesion segmenter: normalised {', '.join(self.network_keys())}"
                        " -> lesion probability",
            metadata={"channels": self.network_keys(), "presets": {k: preset for k in self.network_keys()},
                      "window": size, "output_window": list(inf.output_size) if deepmedic else size,
                      "threshold": inf.threshold, "units": "probability of the lesion class (softmax channel 1)"})}

    def predict_case(self, case) -> dict:
        inf = self.config.infer
        x = self.network_input({k: case[k].unsqueeze(0) for k in self.network_keys()})
        if self.config.model.segmenter == "deepmedic":
            out_size = tuple(int(s) for s in inf.output_size)
            in_size = tuple(self.networks["S"].input_sizes(out_size).context)
            out = valid_sliding_window(self.predict_windows, x, in_size, out_size, overlap=inf.overlap,
                                       window_batch=inf.window_batch, blend="constant", device=self.device)
        else:
            out = sliding_window(self.predict_windows, x, tuple(self.config.data.patch_size),
                                 overlap=max(inf.overlap, 0.25), window_batch=inf.window_batch, blend=inf.blend,
                                 device=self.device, stitch_on_cpu=inf.stitch_on_cpu)
        prob = out["lesion_prob"][0].float().cpu()
        mk = self.config.data.mask_key
        if inf.restrict_to_mask and mk and mk in case:
            prob = prob * (case[mk] > 0).float()
        return {"lesion": (prob > inf.threshold).float(), "lesion_prob": prob}

    @property
    def key_metric(self) -> str:
        """Dice on the labelled domain's validation cases picks best.pt only with model.selection "validation";
        otherwise no metric of that name exists and the last step's weights are used (no target labels)."""
        return "dice" if self.config.model.selection == "validation" else "dice_selection_off"

    def outputs(self, case, prediction: dict) -> dict:
        from medgen.engine.outputs import Output

        out = {"lesion": Output(prediction["lesion"].numpy().astype(np.float32), "label", "label",
                                reference=self.config.data.lesion_key)}
        if self.config.infer.write_probabilities:
            out["lesion_prob"] = Output(prediction["lesion_prob"].numpy().astype(np.float32), "image", "probability")
        return out

    def evaluate_case(self, outputs: dict, case) -> dict:
        """Dice, HD95 (mm), lesion-wise F1 and volume errors of the lesion mask against the case's lesion map
        ({} for a case without one), plus Dice and lesion F1 under the case's domain."""
        from medgen.metrics import segmentation_metrics

        key = self.config.data.lesion_key
        if key not in case:
            return {}
        m = segmentation_metrics(np.asarray(outputs["lesion"])[0] > 0.5, case[key][0].numpy() > 0.5,
                                 spacing=_voxel_spacing(case, self.source_keys()[0]))
        if case["domain"] == UNSPECIFIED_DOMAIN:
            return m
        return {**m, f"dice_{case['domain']}": m["dice"], f"lesion_f1_{case['domain']}": m["lesion_f1"]}

    def floors(self, case) -> dict:
        """All background: what a segmenter that finds nothing scores."""
        key = self.config.data.lesion_key
        if key not in case:
            return {}
        return {"all_background": {"lesion": np.zeros(tuple(case[key].shape), np.float32)}}

    def describe_evaluation(self) -> dict:
        return {"region": "the whole volume (masks compared voxel by voxel; distances in mm from the affine)",
                "positive": f"lesion probability > {self.config.infer.threshold}",
                "reference": self.config.data.lesion_key}

    def preview(self, case, prediction):
        images = {"input": case[self.source_keys()[-1]][0], "lesion_prob": prediction["lesion_prob"][0]}
        key = self.config.data.lesion_key
        if key in case:
            images["reference"] = case[key][0]
        return images


def _voxel_spacing(case, key: str):
    """Voxel spacing (mm) of one key of a case, from the affine it was stored with (None if unknown)."""
    meta = case.meta.get(key, {})
    aff = meta.get("original_affine", meta.get("affine"))
    if aff is None:
        return None
    aff = np.asarray(aff.cpu() if torch.is_tensor(aff) else aff, dtype=float)
    return tuple(np.sqrt((aff[:3, :3] ** 2).sum(0)))


class LesionProbability(torch.nn.Module):
    """A segmenter's lesion probability, softmax channel 1 of its logits (DeepMedic with a fixed output size)."""

    def __init__(self, net: torch.nn.Module, output_size=None):
        super().__init__()
        self.net = net
        self.output_size = tuple(int(s) for s in output_size) if output_size is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x, output_size=self.output_size) if self.output_size is not None else self.net(x)
        return torch.softmax(logits.float(), 1)[:, 1:2]
