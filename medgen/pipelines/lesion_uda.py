"""`lesion_uda`: adversarial unsupervised domain adaptation for lesion segmentation with a multi-layer domain
discriminator (Kamnitsas et al., IPMI 2017, arXiv 1612.08894).

A DeepMedic segmenter (or a MONAI 3D U-Net) learns lesions from labelled source-domain patches; a domain
discriminator sees feature maps from several segmenter layers (all pathways) of source and target patches and
predicts the domain; the segmenter minimises cross-entropy on source labels minus alpha times the
discriminator's loss (gradient reversal, or alternating updates), with alpha 0 during a warm-up and then
ramped up. Modes: `source_only`, `uda` (multi-layer D), `uda_last_layer` (D on the last layer only) and
`target_supervised` (the upper bound, trained on target labels). Target labels are never loaded for training
outside `target_supervised`. Inference is dense over whole volumes; lesion masks are written in the source
geometry (uint8, manifest kind "label", so `medgen evaluate` reports Dice, HD95, lesion F1, volume error).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from medgen.inference.windows import sliding_window, valid_sliding_window
from medgen.config.sections import InferConfig, PipelineConfig, TrainConfig
from medgen.errors import ConfigError, DataError
from medgen.pipelines.lesion_uda_parts import MixedDomainDataset, UNetSegmenter
from medgen.pipelines.volume import VolumeDataConfig, VolumePipeline, _case_error, phantom_dataset
from medgen.registry import NETWORKS, PIPELINES

MODES = ("source_only", "uda", "uda_last_layer", "target_supervised")


@dataclass
class LesionUDADataConfig(VolumeDataConfig):
    patch_size: list[int] = field(default_factory=lambda: [32, 32, 32])  # ours: U-Net training patch (DeepMedic's context patch follows model.output_size)
    patch_sampling: Literal["uniform", "foreground", "lesion_balanced"] = "lesion_balanced"  # DeepMedic: half the segments centred on lesion
    pos_fraction: float = 0.5  # DeepMedic default: 50 % lesion-centred segments
    mask_key: str = "brain_mask"  # ours: brain mask (DeepMedic's ROI mask): sampling, normalisation, inference region
    intensity: Literal["zscore", "robust"] = "zscore"  # DeepMedic: z-score inside the ROI mask; "robust": medgen's "mr" preset (0.5-99.5th percentiles -> [-1, 1], clipped)
    lesion_key: str = "lesion"  # dataset key of the lesion label map
    domain_key: str = "domain"  # per-case field naming the domain (spec: source / target domains)
    source_domain: str = "A"  # phantoms: scanner A (labelled)
    target_domain: str = "B"  # phantoms: scanner B (labels used only for evaluation / target_supervised)
    source_channels: list[str] = field(default_factory=lambda: ["t1", "t2", "flair"])  # sequences the source has
    target_channels: list[str] = field(default_factory=lambda: ["t1", "t2", "flair"])  # sequences the target has
    channels: list[str] = field(default_factory=list)  # network inputs; [] = common to both domains (paper: target lacked some sequences)
    phantom_shape: list[int] = field(default_factory=lambda: [48, 48, 48])  # ours: phantom volume size
    phantom_spacing: list[float] = field(default_factory=lambda: [3.0, 3.0, 3.0])  # ours: 3 mm so lesions span several voxels
    phantom_lesions: int = 5  # ours: lesions per phantom subject (-1: generator default 1-4)

    def validate(self):
        if not self.source_channels or not self.target_channels:
            raise ConfigError("data.source_channels and data.target_channels must name at least one sequence each")
        if self.source_domain == self.target_domain:
            raise ConfigError(f"data.source_domain and data.target_domain are both {self.source_domain!r}")
        if not 0.0 <= self.pos_fraction <= 1.0:
            raise ConfigError(f"data.pos_fraction must be in [0, 1], got {self.pos_fraction}")
        for key in self.channels:
            if key not in self.source_channels or key not in self.target_channels:
                raise ConfigError(f"data.channels: {key!r} is not in both data.source_channels "
                                  f"{self.source_channels} and data.target_channels {self.target_channels}")
        if not self.used_channels():
            raise ConfigError(f"data.source_channels {self.source_channels} and data.target_channels "
                              f"{self.target_channels} have no sequence in common")

    def used_channels(self) -> list[str]:
        if self.channels:
            return list(self.channels)
        return [c for c in self.source_channels if c in self.target_channels]


@dataclass
class LesionUDAModelConfig:
    mode: Literal["source_only", "uda", "uda_last_layer", "target_supervised"] = "uda"  # spec: the four settings
    segmenter: Literal["deepmedic", "unet"] = "deepmedic"  # spec: DeepMedic; a MONAI 3D U-Net as option
    # DeepMedic (spec / Kamnitsas et al. 2017)
    dm_channels: list[int] = field(default_factory=lambda: [30, 30, 40, 40, 40, 40, 50, 50])  # spec
    subsample_factors: list[int] = field(default_factory=lambda: [3, 5])  # spec: subsampled pathways x3, x5
    residual_layers: list[int] = field(default_factory=lambda: [4, 6, 8])  # spec
    fc_channels: list[int] = field(default_factory=lambda: [150, 150])  # spec: two 1^3 FC layers, 150-250 channels
    dropout: float = 0.5  # DeepMedic default dropout of the FC layers
    feature_layers: list[int] = field(default_factory=lambda: [2, 4, 6, 8])  # ours: low- to high-level taps of every pathway (+ FC layers)
    output_size: list[int] = field(default_factory=lambda: [21, 21, 21])  # spec: training segments 37^3 -> output 21^3
    # MONAI BasicUNet alternative
    unet_features: list[int] = field(default_factory=lambda: [32, 32, 64, 128, 256, 32])  # MONAI BasicUNet default
    unet_feature_layers: list[str] = field(default_factory=lambda: ["down_1", "down_3", "upcat_3", "upcat_1"])  # ours
    # domain discriminator and adversarial schedule
    disc_channels: list[int] = field(default_factory=lambda: [64, 64, 128])  # ours: residual 3D CNN (spec: residual blocks, global pooling)
    disc_size: list[int] = field(default_factory=list)  # common feature size; [] = smallest tapped map (DeepMedic: crop; U-Net: resample)
    adversarial_scheme: Literal["gradient_reversal", "alternating"] = "gradient_reversal"  # spec: either
    bn_stats: Literal["target", "source", "mixed"] = "target"  # ours: "mixed" = one forward of the mixed batch (BN statistics over both domains); "source"/"target": one forward per domain (each normalised by its own batch statistics) and the running statistics used at test time follow that domain only
    disc_source: Literal["matched", "labelled"] = "matched"  # ours: D's source segments sampled like the target ones (brain mask), not the lesion-balanced labelled batch (see MixedDomainDataset)
    alpha_max: float = 0.05  # ours (paper ramps alpha from 0 to a small maximum; value not in the spec)
    warmup_fraction: float = 0.2  # ours: alpha = 0 for this fraction of the steps (paper: warm-up in epochs)
    ramp_fraction: float = 0.4  # ours: then linear to alpha_max over this fraction (paper: linear ramp)
    # losses and optimisers
    dice_weight: float = 0.0  # spec: CE (+ optional Dice); 0 = CE only as the paper
    lr: float = 1e-3  # DeepMedic's default learning rate
    lr_d: float = 1e-3  # ours: discriminator learning rate
    weight_decay: float = 1e-4  # DeepMedic default L2 regularisation
    selection: Literal["last", "validation"] = "last"  # ours: no target labels for model selection, so the last step

    def validate(self):
        if not 0.0 <= self.warmup_fraction <= 1.0 or not 0.0 <= self.ramp_fraction <= 1.0:
            raise ConfigError("model.warmup_fraction and model.ramp_fraction must be in [0, 1]")
        if self.alpha_max < 0:
            raise ConfigError(f"model.alpha_max must be >= 0, got {self.alpha_max}")
        if len(self.output_size) != 3 or min(self.output_size) < 1:
            raise ConfigError(f"model.output_size must be 3 positive sizes, got {self.output_size}")


@dataclass
class LesionUDAInferConfig(InferConfig):
    output_size: list[int] = field(default_factory=lambda: [45, 45, 45])  # ours: DeepMedic inference segment (larger = fewer windows, same result)
    threshold: float = 0.5  # lesion probability threshold (argmax of two classes)
    write_probabilities: bool = True  # also write the lesion probability map (float32)
    restrict_to_mask: bool = True  # DeepMedic: segment inside the ROI (brain) mask only
    overlap: float = 0.0  # valid-conv windows tile exactly; no blending needed


@dataclass
class LesionUDATrainConfig(TrainConfig):
    iterations: int = 3000  # ours (CPU-feasible); the paper trained DeepMedic for ~35 epochs on a GPU
    batch_size: int = 10  # spec: batches mix source and target equally; 10 segments per domain (DeepMedic-like)


@dataclass
class LesionUDAConfig(PipelineConfig):
    pipeline: str = "lesion_uda"
    data: LesionUDADataConfig = field(default_factory=LesionUDADataConfig)
    train: LesionUDATrainConfig = field(default_factory=LesionUDATrainConfig)
    infer: LesionUDAInferConfig = field(default_factory=LesionUDAInferConfig)
    model: LesionUDAModelConfig = field(default_factory=LesionUDAModelConfig)


def gap_closed(dice_source_only: float, dice_uda: float, dice_target_supervised: float) -> float:
    """(Dice_uda - Dice_source_only) / (Dice_target_supervised - Dice_source_only); NaN when there is no gap
    to close (target-supervised not above source-only: the ratio would mean nothing)."""
    gap = dice_target_supervised - dice_source_only
    if not np.isfinite(gap) or gap < 1e-9:
        return float("nan")
    return float((dice_uda - dice_source_only) / gap)


@PIPELINES.register("lesion_uda")
class LesionUDA(VolumePipeline):
    name = "lesion_uda"
    description = "adversarial UDA for lesion segmentation, multi-layer domain discriminator (Kamnitsas 2017)"
    config_class = LesionUDAConfig
    phantom_kind = "lesion_domains"
    input_keys = ("t1", "t2", "flair")
    target_keys = ("lesion",)
    output_name = "lesion"
    key_metric, key_metric_mode = "dice", "max"

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

    def target_key(self) -> str:
        return self.config.data.lesion_key

    def presets(self) -> dict[str, str]:
        d = self.config.data
        out = {k: "zscore" if d.intensity == "zscore" else "mr" for k in self.source_keys()}
        out.update({d.lesion_key: "label", **({d.mask_key: "label"} if d.mask_key else {})})
        return out

    def output_params(self, case):
        return None  # probabilities and masks, no intensity units

    # ----- data ---------------------------------------------------------------------------------------------------
    def dataset_path(self) -> Path:
        d = self.config.data
        if d.dataset:
            return Path(d.dataset)
        shape = tuple(d.phantom_shape) or (48, 48, 48)
        spacing = tuple(float(s) for s in d.phantom_spacing) or (4.0, 4.0, 4.0)
        n = d.phantom_cases or 8
        tag = f"{self.phantom_kind}_{'x'.join(map(str, shape))}_{'x'.join(f'{s:g}' for s in spacing)}mm_{d.phantom_lesions}les_{n}"
        return phantom_dataset(self.phantom_kind, d, seed=0, folder=Path(d.phantom_dir) / tag, n_cases=n, shape=shape,
                               spacing=spacing, lesions=None if d.phantom_lesions < 0 else d.phantom_lesions)

    def case_domain(self, entry: dict, split: str) -> str:
        d = self.config.data
        dom = entry.get(d.domain_key)
        if dom is None:
            if split == "test":
                return d.target_domain  # users' test cases may all be target cases without the field
            raise DataError(self.datalist().source, f"case '{entry.get('id')}' ({split}) has no '{d.domain_key}' "
                                                    f"field (set it to '{d.source_domain}' or '{d.target_domain}')")
        return str(dom)

    def load_cases(self, split: str, dataset: str | None = None) -> list[dict]:
        """Whole cases of a split with their domain. Lesion labels are loaded for training and validation only
        from the domain whose labels the mode may use; every labelled test case keeps its labels (evaluation)."""
        if split not in self._cases:
            self._cases[split] = [self._load_entry(e, split) for e in self.datalist().split(split)]
        return self._cases[split]

    def iter_cases(self, split: str, skip=()):
        """Cases one at a time for inference; a case that cannot be loaded is yielded as {"id", "split", "error"}."""
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
        from medgen.data.patches import load_cases

        d = self.config.data
        source = self.datalist().source
        channels = self.source_keys()
        dom = self.case_domain(entry, split)
        if dom not in (d.source_domain, d.target_domain):
            raise DataError(source, f"case '{entry.get('id')}' has {d.domain_key}={dom!r}, neither the source "
                                    f"'{d.source_domain}' nor the target '{d.target_domain}'")
        missing = [k for k in channels if k not in entry]
        if missing:
            raise DataError(source, f"case '{entry.get('id')}' ({split}, domain {dom}) has no key(s) {missing} "
                                    f"that data.channels {channels} need")
        keys = list(channels)
        if d.mask_key and d.mask_key in entry:
            keys.append(d.mask_key)
        use_label = split == "test" or dom == self.labelled_domain()
        if use_label and d.lesion_key in entry:
            keys.append(d.lesion_key)
        elif split == "training" and dom == self.labelled_domain():
            raise DataError(source, f"training case '{entry.get('id')}' of the labelled domain {dom} has no "
                                    f"'{d.lesion_key}' key")
        mask_key = d.mask_key if d.mask_key in keys else None
        self._check_case(entry, keys, mask_key)
        presets = {k: v for k, v in self.presets().items() if k in keys}
        item = load_cases([entry], keys, presets, mask_key=mask_key)[0]
        case = {"id": item["id"], "norm": item["norm"], "meta": item["meta"], "split": split, "domain": dom,
                "paths": {k: entry[k] for k in keys}}
        for k in keys:
            case[k] = torch.as_tensor(np.ascontiguousarray(item[k]), dtype=torch.float32)
        return case

    @staticmethod
    def _check_case(entry: dict, keys: list[str], mask_key: str | None) -> None:
        """Same shape and affine for every file of a case, and a non-empty mask, before normalising."""
        from medgen.data.io import load_header, load_image

        ref = None
        for k in keys:
            h = load_header(entry[k])
            spatial = tuple(h.spatial_shape)[:3]
            if len(h.shape) > 3 and any(int(s) > 1 for s in tuple(h.shape)[3:]):
                raise DataError(entry[k], f"has shape {tuple(h.shape)}; lesion_uda expects one 3D "
                                          "sequence or label map per file")
            if ref is None:
                ref = (k, spatial, np.asarray(h.affine))
            elif spatial != ref[1]:
                raise DataError(entry[k], f"spatial shape {spatial} differs from {ref[0]} {ref[1]} of case "
                                          f"'{entry.get('id')}'")
            elif not np.allclose(np.asarray(h.affine), ref[2], atol=1e-3):
                raise DataError(entry[k], f"affine differs from that of {ref[0]} in case '{entry.get('id')}'")
        if mask_key and not bool((np.asarray(load_image(entry[mask_key], ensure_channel_first=False)) > 0).any()):
            raise DataError(entry[mask_key], f"the {mask_key} of case '{entry.get('id')}' is empty")

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
        arrays = [{k: (v.numpy() if torch.is_tensor(v) else v) for k, v in c.items() if k not in ("norm", "meta", "paths")}
                  for c in cases]
        targets = ([d.lesion_key] if labelled else []) + ([mask_key] if mask_key else [])
        return PatchDataset(arrays, sampler, self.source_keys(), targets, seed=seed)

    def train_dataset(self):
        d = self.config.data
        cases = self.load_cases("training")
        labelled = [c for c in cases if c["domain"] == self.labelled_domain()]
        if not labelled:
            raise DataError(self.datalist().source, f"no training case of the labelled domain "
                                                    f"'{self.labelled_domain()}' (mode {self.mode})")
        seed = self.config.train.seed
        source = self._patch_dataset(labelled, True, seed)
        target = None
        if self.adversarial:
            unlabelled = [c for c in cases if c["domain"] == d.target_domain]
            if not unlabelled:
                raise DataError(self.datalist().source, f"mode {self.mode} needs training cases of the target "
                                                        f"domain '{d.target_domain}'")
            assert all(d.lesion_key not in c for c in unlabelled)  # never train on target labels
            target = self._patch_dataset(unlabelled, False, seed + 7919)
            if self.config.model.disc_source == "matched":
                # Source segments for D drawn exactly as the target ones, so D cannot use lesion content.
                source_adv = self._patch_dataset(labelled, False, seed + 104729)
                return MixedDomainDataset(source, target, source_adv)
        return MixedDomainDataset(source, target)

    def validation_cases(self) -> list[dict]:
        # Only the domain whose labels this mode may use (no target labels for UDA model selection).
        return [c for c in self.load_cases("validation") if c["domain"] == self.labelled_domain()]

    # ----- networks ---------------------------------------------------------------------------------------------
    def sizes(self) -> tuple[list[int], list[int]]:
        """(input patch, output patch) of a training sample."""
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
        return UNetSegmenter(3, n_in, 2, features=m.unet_features, dropout=0.0, feature_layers=m.unet_feature_layers)

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
            with _bn_running_stats(self.networks["S"], bn == "source"):
                lo_s, f_s = self.segment(x_src, return_features=True)
            with _bn_running_stats(self.networks["S"], bn == "target"):
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

    # ----- inference ------------------------------------------------------------------------------------------
    def infer_step(self, batch):
        x = batch["input"]
        net = self.inference_network("S")
        if self.config.model.segmenter == "deepmedic":
            logits = net(x, output_size=self.config.infer.output_size)
        else:
            logits = net(x)
        return {"lesion_prob": torch.softmax(logits.float(), 1)[:, 1:2]}

    def predict_case(self, case: dict) -> dict:
        inf = self.config.infer
        x = self.network_input({k: case[k].unsqueeze(0) for k in self.source_keys()})

        def predictor(windows):
            return self.infer_step({"input": windows})

        if self.config.model.segmenter == "deepmedic":
            out_size = tuple(int(s) for s in inf.output_size)
            in_size = tuple(self.networks["S"].input_sizes(out_size).context)
            out = valid_sliding_window(predictor, x, in_size, out_size, overlap=inf.overlap,
                                       window_batch=inf.window_batch, blend="constant", device=self.device)
        else:
            out = sliding_window(predictor, x, tuple(self.config.data.patch_size), overlap=max(inf.overlap, 0.25),
                                 window_batch=inf.window_batch, blend=inf.blend, device=self.device,
                                 stitch_on_cpu=inf.stitch_on_cpu)
        prob = out["lesion_prob"][0].float().cpu()
        mk = self.config.data.mask_key
        if inf.restrict_to_mask and mk and mk in case:
            prob = prob * (case[mk] > 0).float()
        return {"lesion": (prob > inf.threshold).float(), "lesion_prob": prob}

    def evaluate_case(self, prediction, case):
        from medgen.metrics import segmentation_metrics

        key = self.config.data.lesion_key
        if key not in case:
            return {}
        spacing = _spacing(case, self.source_keys()[0])
        m = segmentation_metrics(prediction["lesion"][0].numpy() > 0.5, case[key][0].numpy() > 0.5, spacing=spacing)
        out = {f"dice_{case['domain']}": m["dice"], f"lesion_f1_{case['domain']}": m["lesion_f1"]}
        if self.config.model.selection == "validation":
            out["dice"] = m["dice"]  # only then does validation pick best.pt; else the last step is used
        return out

    def preview(self, case, prediction):
        images = {"input": case[self.source_keys()[-1]][0], "lesion_prob": prediction["lesion_prob"][0]}
        key = self.config.data.lesion_key
        if key in case:
            images["reference"] = case[key][0]
        return images

    def write_outputs(self, case, prediction, out, suffix: str = "") -> list[dict]:
        ref_path = case["paths"][self.source_keys()[0]]
        entries = []
        names = ["lesion"] + (["lesion_prob"] if self.config.infer.write_probabilities else [])
        for name in names:
            label = name + (f"_{suffix}" if suffix else "")
            is_mask = name == "lesion"
            path = out.write_image(f"{case['id']}_{label}.nii.gz", prediction[name].numpy().astype(np.float32),
                                   ref_path, dtype="uint8" if is_mask else "float32")
            entries.append({"path": str(path), "output": label,
                            "reference_key": self.config.data.lesion_key if is_mask else None,
                            "kind": "label" if is_mask else "image", "data_range": None, "mask_key": None,
                            "units": "label" if is_mask else "probability", "domain": case.get("domain")})
        return entries

    # ----- demo ---------------------------------------------------------------------------------------------------
    @classmethod
    def demo(cls, data_root, runs_root, seed: int = 0) -> dict:
        """Quick phantom run: source_only (the simplest baseline), uda and target_supervised with a small
        DeepMedic; Dice etc. on the held-out target-domain (B) test cases and the fraction of the gap closed."""
        from medgen.engine.commands import build_config, train_config
        from medgen.metrics import format_table

        common = [f"data.phantom_dir={data_root}", "data.phantom_cases=6", f"output.root={runs_root}",
                  "output.overwrite=true", f"train.seed={seed}", "train.progress=off", *SMALL_DEEPMEDIC,
                  "train.iterations=150", "train.batch_size=4", "train.log_every=50", "train.val_every=1000"]
        rows, run_dir, means = [], None, {}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small 3D convs on a busy 2-core machine run several times faster on one thread
        try:
            for mode in ("source_only", "uda", "target_supervised"):
                c, cfg = build_config(cls.name, None, [*common, f"model.mode={mode}", f"output.name=demo_{mode}"])
                run_dir = train_config(c, cfg)["run_dir"]
                per_case = evaluate_run(run_dir, domain=cfg.data.target_domain)
                for r in per_case:
                    rows.append({"id": f"{mode}:{r['id']}", **{k: r[k] for k in ("dice", "hd95", "lesion_f1", "abs_volume_error_ml")}})
                means[mode] = float(np.mean([r["dice"] for r in per_case]))
        finally:
            torch.set_num_threads(threads)
        frac = gap_closed(means["source_only"], means["uda"], means["target_supervised"])
        table = format_table(rows) + f"\n\nmean target Dice: {means}; fraction of the gap closed by uda: {frac:.3f}"
        return {"table": table, "run_dir": run_dir, "mean_dice": means, "gap_closed": frac}


# A DeepMedic small enough for 2 CPU cores (tests, demo): 4 layers, one x3 pathway, output 9^3 (context 33^3).
SMALL_DEEPMEDIC = ["model.dm_channels=[8,8,12,12]", "model.residual_layers=[4]", "model.feature_layers=[2,4]",
                   "model.subsample_factors=[3]", "model.fc_channels=[24,24]", "model.output_size=[9,9,9]",
                   "model.disc_channels=[16,16]", "infer.output_size=[24,24,24]", "model.dropout=0.2"]


@contextmanager
def _bn_running_stats(net, update: bool):
    """Let a train-mode forward update the BatchNorm running statistics (update=True) or leave them as they
    are (momentum 0: running = 1 * running + 0 * batch); the batch statistics normalise the batch either way."""
    if update:
        yield
        return
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (mom, nbt) in zip(bns, saved):
            m.momentum = mom
            m.num_batches_tracked.copy_(nbt)


def _spacing(case: dict, key: str):
    meta = case.get("meta", {}).get(key, {})
    aff = meta.get("original_affine", meta.get("affine"))
    if aff is None:
        return None
    aff = np.asarray(aff.cpu() if torch.is_tensor(aff) else aff, dtype=float)
    return tuple(np.sqrt((aff[:3, :3] ** 2).sum(0)))


def evaluate_run(run_dir, domain: str | None = None, split: str = "test", dataset: str | None = None) -> list[dict]:
    """Predict the cases of a split with a trained run and return per-case segmentation metrics
    (optionally only cases of one domain). Used by the demo and the benchmark."""
    from medgen.engine.commands import load_trained
    from medgen.metrics import segmentation_metrics

    _, cfg, stages, _ = load_trained(run_dir, device="cpu", dataset=dataset)
    p = stages[-1]
    for net in p.networks.values():
        net.eval()
    rows = []
    with torch.no_grad():
        for case in p.load_cases(split):
            if domain is not None and case["domain"] != domain:
                continue
            key = cfg.data.lesion_key
            if key not in case:
                continue
            pred = p.predict_case(case)
            m = segmentation_metrics(pred["lesion"][0].numpy() > 0.5, case[key][0].numpy() > 0.5,
                                     spacing=_spacing(case, p.source_keys()[0]))
            rows.append({"id": case["id"], "domain": case["domain"], **m, "_pred": pred})
    return rows
