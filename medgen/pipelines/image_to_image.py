"""The shared half of the 3D image-to-image methods (pet_lowdose, mr_synthesis, mr_to_ct, the template):
patch training data, whole-volume sliding-window prediction (same-size or valid-convolution windows), outputs
in the source's units and geometry, and their evaluation inside the training mask with a fixed data range.

A subclass declares its keys (`case_keys`, `source_keys`, `target_key`), its networks and steps; the
generator used for prediction is the network named by `generator`. It may override `output_patch_size`
(a valid-convolution network's smaller output window), `output_params` (which stored inverse maps the output
back to source units), `to_source_units`, `derive_mask` and `data_range_rule`.

How outputs are scored (docs/metrics.md): against the reference file's own values, inside the mask the method
trains with (the dataset's `data.mask_key`, or one derived as `derive_mask` documents), with ONE data range
for every case of a dataset (the 0.5th-99.5th percentile span of the training references inside their masks,
unless the method fixes a physical range), never each case's own. An `mr` target has no physical unit: it is
scored in each reference's own [-1, 1] standardisation, with the range 2 (`score_space`). With
`data.region_mask_key` (a lesion or tumour label map in the dataset) the same metrics are also reported inside
that region (`psnr_<key>` ...) and in the mask outside it (`psnr_outside_<key>` ...), so a method that gets the
brain right and the lesion wrong shows it.
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
import torch

from medgen.config.sections import ImageDataConfig
from medgen.data.cases import CaseKey
from medgen.errors import ConfigError, DataError
from medgen.inference.windows import sliding_window, valid_sliding_window
from medgen.pipelines.base import PREVIOUS_KEY, Pipeline

__all__ = ["ImageToImagePipeline", "ImageDataConfig", "check_patch_size", "image_keys", "reference_range"]

RANGE_PERCENTILES = (0.5, 99.5)  # the data range: this span of the training references inside their masks
MR_SCORE_RANGE = 2.0  # the data range of an mr target, scored in its own [-1, 1] standardisation


def check_patch_size(patch_size, spatial_dims: int = 3) -> None:
    if len(patch_size) != spatial_dims or any(int(p) < 4 for p in patch_size):
        raise ConfigError(f"data.patch_size must be {spatial_dims} sizes of at least 4, got {patch_size}")


def image_keys(sources: dict, target: tuple[str, object], mask_key: str = "", extras: dict | None = None) -> list:
    """CaseKeys of an image-to-image method: `sources` {key: preset} always, the target (key, preset) in
    training and validation, the mask (role "mask") and `extras` {key: preset} when a case has them."""
    keys = [CaseKey(k, preset, "input") for k, preset in sources.items()]
    keys.append(CaseKey(target[0], target[1], "target", required="labelled"))
    if mask_key:
        keys.append(CaseKey(mask_key, "label", "mask", required="optional"))
    for k, preset in (extras or {}).items():
        keys.append(CaseKey(k, preset, "extra", required="optional"))
    return keys


SPREAD_LIMIT = 3.0  # training references whose own spans differ more than this share no intensity scale


def reference_range(cases, key: str, mask_key: str | None) -> float:
    """The RANGE_PERCENTILES span of the references of `key` inside their masks, pooled over `cases`.

    A pooled span is only meaningful when the references share one scale (physical units, or one site's MR).
    When their own spans differ more than SPREAD_LIMIT times (MR from several sites in arbitrary units), the
    pooled span is far wider than a small-scale case's own and PSNR / SSIM come out inflated for every method
    alike; that is warned about, naming the spans (rankings on the same cases stay valid)."""
    values, spans = [], []
    for c in cases:
        ref = c.references[key][0]
        m = c[mask_key].numpy()[0] > 0 if mask_key and mask_key in c else np.ones(ref.shape, bool)
        values.append(ref[m])
        if values[-1].size:
            lo, hi = np.percentile(values[-1], RANGE_PERCENTILES)
            spans.append(float(hi - lo))
    pooled = np.concatenate(values) if values else np.zeros(0)
    if pooled.size == 0:
        raise DataError(None, f"no reference voxels of '{key}' inside the masks to fix the data range")
    lo, hi = np.percentile(pooled, RANGE_PERCENTILES)
    positive = [v for v in spans if v > 0]
    if len(positive) > 1 and max(positive) > SPREAD_LIMIT * min(positive):
        warnings.warn(f"the training references of '{key}' do not share an intensity scale (their own "
                      f"{RANGE_PERCENTILES[0]}-{RANGE_PERCENTILES[1]} percentile spans run from {min(positive):.4g} "
                      f"to {max(positive):.4g}): the dataset's PSNR / SSIM range ({float(hi - lo):.4g}) inflates the "
                      "scores of small-scale cases for every method alike; compare methods on the same cases, not "
                      "absolute values (docs/metrics.md, 'Fixed data range')", UserWarning, stacklevel=2)
    return float(hi - lo) or 1.0


class ImageToImagePipeline(Pipeline):
    phantom = "head"
    generator: ClassVar[str] = "G"  # the network that makes predictions
    input_is_floor: ClassVar[bool] = False  # input and target share units: the input itself is a floor
    mask_rule: ClassVar[str] = "the voxels where any input is above its own minimum"  # see derive_mask
    key_metric = "psnr"
    key_metric_mode = "max"
    written_units: str = "physical"  # what `outputs` gives: "physical" or "normalised" (medgen infer --units)

    def __init__(self, config, device="cpu", stage: int = 1, previous: tuple = ()):
        super().__init__(config, device, stage, previous)
        self._data_range: float | None = None
        self._target_params: dict | None = None  # the training targets' typical normalisation (target_scale)

    # ----- what a subclass declares -----------------------------------------------------------------------
    def source_keys(self) -> list[str]:
        raise NotImplementedError

    def target_key(self) -> str:
        raise NotImplementedError

    def output_patch_size(self) -> list[int]:
        """The network's output window for an input window of data.patch_size (smaller for valid convs)."""
        return list(self.config.data.patch_size)

    def output_params(self, case) -> dict | None:
        """Normalisation params that map the network's output back to source units (None: none): the case's
        own target's, else (a case without its target: new data) the training targets' (`target_scale`)."""
        own = case.norm.get(self.target_key())
        return own if own is not None else self.target_scale()

    def target_scale(self) -> dict | None:
        """The target's intensity scale learnt from the training split, saved with the model: the median of
        each number of the training targets' normalisation params (e.g. the mr preset's low / high /
        background). None when there are no training targets (the output is then written normalised, and
        says so)."""
        if self._target_params is None:
            key = self.target_key()
            try:
                params = [c.norm[key] for c in self.data.load("training") if c.norm.get(key)]
            except Exception:  # noqa: BLE001 - no training split to learn it from (e.g. a folder of images)
                params = []
            if params:
                first = params[0]
                self._target_params = {k: (float(np.median([float(q[k]) for q in params]))
                                           if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                                       for k, v in first.items()}
        return self._target_params

    def derive_mask(self, case) -> torch.Tensor:
        """The metric and sampling mask of a case that has none (`mask_rule`): by default the voxels where any
        input is above its own minimum (the background the intensity presets map to their lowest value)."""
        return torch.stack([case[k][0] > case[k][0].min() for k in self.source_keys()]).any(0)[None].float()

    def data_range_rule(self) -> tuple[float | None, str]:
        """(a fixed data range, or None to take it from the training references; how it is set).

        An `mr` target is scored in its own standardised space (`score_space`), where the range is 2."""
        if self.scored_standardised():
            return MR_SCORE_RANGE, ("2: the span of [-1, 1] in each reference's own mr standardisation (its "
                                    "foreground's percentiles of the mr preset mapped to -1 and 1, not clipped)")
        lo, hi = RANGE_PERCENTILES
        return None, f"{lo}th-{hi}th percentile span of the training references inside their masks"

    def scored_standardised(self) -> bool:
        """Whether outputs are scored in the reference's own standardised space rather than in source units:
        for a target normalised by the `mr` preset. MR intensities have no physical unit and their scale varies
        by scanner and site, so one data range in raw units cannot fit a dataset pooled from several sites;
        each subject's own percentile scaling is the unit the method is taught in (as Ea-GANs scores in
        [-1, 1])."""
        preset = next((k.preset for k in self.case_keys() if k.role == "target"), None)
        return getattr(preset, "name", preset) == "mr"

    def score_space(self, case, values: np.ndarray) -> np.ndarray:
        """`values` (source units) in the space they are scored in: unchanged, or for an `mr` target the
        reference's own linear standardisation (x - low) * 2 / (high - low) - 1 with its stored low / high,
        not clipped, so a lesion brighter than the upper percentile still counts."""
        if not self.scored_standardised():
            return values
        p = case.norm[self.target_key()]
        lo, hi = float(p["low"]), float(p["high"])
        return ((np.asarray(values, np.float32) - lo) * (2.0 / (hi - lo)) - 1.0).astype(np.float32)

    # ----- data ---------------------------------------------------------------------------------------------
    def prepare_case(self, case):
        key = self.config.data.mask_key
        if key and key not in case:
            mask = self.derive_mask(case)
            if not bool(mask.any()):
                raise DataError(case.reference_path, f"case {case.id!r}: no foreground voxels to derive a mask from")
            case[key] = mask
        region = self.config.data.region_mask_key
        if region and region not in case.arrays and isinstance(case.fields.get(region), str):
            case = self._read_region(case, region)
        return case

    def _read_region(self, case, key: str):
        """The evaluation region's label map (any label > 0), read on the case's grid (checked like its other files);
        it is not a network input and needs no normalisation."""
        from medgen.data.cases import check_same_grid
        from medgen.data.io import load_header, load_image

        ref_key = next(iter(case.paths))
        path = case.fields.pop(key)
        check_same_grid({ref_key: load_header(case.paths[ref_key]), key: load_header(path)}, case.id)
        region = np.asarray(load_image(path), dtype=np.float32)
        sd = self.spatial_dims
        case.arrays[key] = torch.from_numpy((region.reshape((1, *region.shape[-sd:])) > 0).astype(np.float32))
        case.paths[key] = path
        return case

    def network_keys(self) -> list[str]:
        return self.source_keys() + ([PREVIOUS_KEY] if self.stage > 1 else [])

    def network_input(self, batch: dict) -> torch.Tensor:
        return torch.cat([batch[k] for k in self.network_keys()], dim=1)

    def train_dataset(self):
        from medgen.data.patches import PatchDataset, PatchSampler

        d = self.config.data
        cases = self.data.load("training")
        if not cases:
            raise DataError(self.data.datalist.source, "the training split is empty")
        self.data_range()  # fixed from the training references, before any validation
        self.target_scale()  # saved with the model for cases without a target
        mask_key = d.mask_key if d.mask_key and d.mask_key in cases[0] else None
        mode = d.patch_sampling if (mask_key or d.patch_sampling == "uniform") else "uniform"
        sampler = PatchSampler(
            d.patch_size, self.output_patch_size(), mode=mode, fg_key=mask_key,
            lesion_key=d.lesion_key if mode == "lesion_balanced" else None,
        )
        arrays = [{"id": c.id, **{k: v.numpy() for k, v in c.arrays.items()}} for c in cases]
        targets = [self.target_key()] + ([mask_key] if mask_key else [])
        return PatchDataset(arrays, sampler, self.network_keys(), targets, seed=self.config.train.seed)

    # ----- prediction -------------------------------------------------------------------------------------
    def predict_windows(self, windows: torch.Tensor) -> dict:
        """The generator on a batch of network-input windows."""
        return {self.output_name: self.inference_network(self.generator)(windows)}

    def predict_case(self, case) -> dict:
        x = self.network_input({k: case[k].unsqueeze(0) for k in self.network_keys()})
        inf = self.config.infer
        in_size = tuple(self.config.data.patch_size)
        out_size = tuple(self.output_patch_size())
        if out_size == in_size:
            out = sliding_window(self.predict_windows, x, in_size, overlap=inf.overlap, window_batch=inf.window_batch,
                                 blend=inf.blend, device=self.device, stitch_on_cpu=inf.stitch_on_cpu)
        else:
            out = valid_sliding_window(self.predict_windows, x, in_size, out_size, overlap=inf.overlap,
                                       window_batch=inf.window_batch, blend=inf.blend, device=self.device)
        return {k: v[0].float().cpu() for k, v in out.items()}

    def export_examples(self) -> dict:
        """The generator, fully convolutional: traced on one inference window (`infer.window` where the method
        has one, else `data.patch_size`) and checked on two windows twice as long on the last axis."""
        from medgen.engine.export import Exportable

        keys = self.network_keys()
        size = [int(s) for s in (getattr(self.config.infer, "window", None) or self.config.data.patch_size)]
        gen = torch.Generator().manual_seed(0)
        example = torch.rand(1, len(keys), *size, generator=gen) * 2 - 1
        longer = torch.rand(2, len(keys), *size[:-1], 2 * size[-1], generator=gen) * 2 - 1
        presets = {k.name: getattr(k.preset, "name", k.preset) for k in self.case_keys() if k.role == "input"}
        return {self.generator: Exportable(
            example=example, input_names=("image",), output_names=("pred",), dynamic_spatial=True,
            other_examples=(longer,),
            description=f"{self.description}: stage {self.stage} generator, normalised {', '.join(keys)} -> "
                        f"normalised {self.target_key()}",
            metadata={"channels": keys, "presets": presets, "window": size,
                      "sliding_window": {"overlap": self.config.infer.overlap, "blend": self.config.infer.blend},
                      "units": "the presets' normalised units in and out (medgen.data.presets; the inverse of the "
                               "target's preset maps the output back)"})}

    # ----- outputs: source units and geometry -----------------------------------------------------------------
    def to_source_units(self, case, tensor: torch.Tensor, params: dict | None) -> np.ndarray:
        from medgen.data.presets import invert_intensity

        arr = tensor.detach().float().cpu()
        if params is not None:
            arr = invert_intensity(arr, params)
        return np.asarray(arr, dtype=np.float32)

    def target_in_source_units(self, case) -> np.ndarray:
        """The normalised target mapped back with its stored inverse (what the network was taught)."""
        return self.to_source_units(case, case[self.target_key()], case.norm.get(self.target_key()))

    def output_units(self, case) -> str:
        """The physical units of the output: those dataset.json declares for the target key ("units": {key:
        unit}), else what the target's preset implies."""
        declared = getattr(getattr(self.data, "datalist", None), "metadata", {}).get("units")
        if isinstance(declared, dict) and declared.get(self.target_key()):
            return str(declared[self.target_key()])
        params = self.output_params(case) or {}
        return {"pet": "source (PET units)", "ct": "HU", "mr": "source (MR units)"}.get(params.get("preset"), "source")

    def normalised_units(self, case) -> str:
        """What an output in the network's space is (infer.units=normalised)."""
        params = self.output_params(case) or {}
        return f"normalised ({params['preset']} preset)" if params.get("preset") else "normalised"

    def outputs(self, case, prediction: dict) -> dict:
        from medgen.engine.outputs import Output

        out = {}
        normalised = self.written_units == "normalised"  # set by medgen infer only: validation scores physical
        for name, tensor in prediction.items():
            if name == self.output_name and normalised:
                out[name] = Output(self.to_source_units(case, tensor, None), "image", self.normalised_units(case),
                                   self.target_key(), dtype=self.config.infer.output_dtype)
            elif name == self.output_name:
                out[name] = Output(self.to_source_units(case, tensor, self.output_params(case)), "image",
                                   self.output_units(case), self.target_key(), dtype=self.config.infer.output_dtype)
            else:
                out[name] = Output(self.to_source_units(case, tensor, None), "image", "normalised")
        return out

    # ----- evaluation ------------------------------------------------------------------------------------------
    def data_range(self) -> float:
        """The one PSNR / SSIM data range of this dataset (see `data_range_rule`); fixed from the training
        references once, saved with the model."""
        fixed, _ = self.data_range_rule()
        if fixed is not None:  # a rule's fixed range wins over one saved by an older version
            return fixed
        if self._data_range is None:
            self._data_range = reference_range(self.data.load("training"), self.target_key(),
                                               self.config.data.mask_key or None)
        return self._data_range

    def metric_mask(self, case) -> np.ndarray | None:
        key = self.config.data.mask_key
        if key and key in case:
            return case[key].numpy()[0] > 0
        return None

    def reference(self, case) -> np.ndarray | None:
        """The target as stored in its file (source units, source grid), or None for a case without one."""
        ref = case.references.get(self.target_key())
        return None if ref is None else ref[0]

    def evaluate_case(self, outputs: dict, case) -> dict:
        from medgen.metrics import image_metrics

        ref = self.reference(case)
        if ref is None:
            return {}
        pred = self.score_space(case, np.asarray(outputs[self.output_name], dtype=np.float32)[0])
        ref = self.score_space(case, ref)
        mask = self.metric_mask(case)
        out = image_metrics(pred, ref, data_range=self.data_range(), mask=mask)
        key = self.config.data.region_mask_key
        if key and key in case.arrays:
            region = case[key].numpy()[0] > 0
            inside = region if mask is None else region & mask
            outside = ~region if mask is None else mask & ~region
            for name, part in ((key, inside), (f"outside_{key}", outside)):
                if part.any():
                    scores = image_metrics(pred, ref, data_range=self.data_range(), mask=part)
                    out.update({f"{m}_{name}": v for m, v in scores.items()})
        return out

    def floors(self, case) -> dict:
        """Trivial predictions scored beside the model: the reference's own mean inside the mask (the best
        constant), and the input itself when input and target share units."""
        ref = self.reference(case)
        if ref is None:
            return {}
        mask = self.metric_mask(case)
        mean = float(ref[mask].mean()) if mask is not None and mask.any() else float(ref.mean())
        out = {"target_mean": {self.output_name: np.full((1, *ref.shape), mean, np.float32)}}
        if self.input_is_floor:
            src = self.source_keys()[0]
            out["input"] = {self.output_name: self.to_source_units(case, case[src], case.norm[src])}
        return out

    def describe_evaluation(self) -> dict:
        _, rule = self.data_range_rule()
        key = self.config.data.mask_key
        out = {"region": f"mask '{key}' (given by the dataset, or derived: {self.mask_rule})" if key
               else "the whole volume (data.mask_key is empty)",
               "data_range": self.data_range(), "data_range_rule": rule, "reference": self.target_key(),
               "scored_in": ("each reference's own mr standardisation ([-1, 1] = its foreground percentiles)"
                             if self.scored_standardised() else "the outputs' source units")}
        region = self.config.data.region_mask_key
        if region:
            out["region_metrics"] = (f"also inside '{region}' (<metric>_{region}) and in the mask outside it "
                                     f"(<metric>_outside_{region}), for the cases that have it")
        return out

    def state_dict(self) -> dict:
        state = {"data_range": self._data_range} if self._data_range is not None else {}
        if self._target_params is not None:
            state["target_params"] = dict(self._target_params)
        return state

    def load_state_dict(self, state: dict) -> None:
        if state.get("data_range") is not None:
            self._data_range = float(state["data_range"])
        if state.get("target_params"):
            self._target_params = dict(state["target_params"])

    def preview(self, case, prediction: dict) -> dict:
        pred = prediction[self.output_name][0].float()
        images = {"input": case[self.source_keys()[0]][0], "output": pred}
        if self.target_key() in case:
            images["target"] = case[self.target_key()][0]
            images["error"] = (pred - case[self.target_key()][0]).abs()
        return images
