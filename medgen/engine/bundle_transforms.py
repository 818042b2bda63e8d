"""The steps of medgen's inference that MONAI has no transform for, as MONAI components an exported bundle's
`configs/inference.json` names by `_target_` (a bundle that names one needs `pip install medgen`; its
`configs/metadata.json` lists which under `medgen.helpers`). Everything else in a bundle is MONAI's own.

- Intensity normalisation is `medgen.data.presets.NormalizeIntensityd` (already a MONAI MapTransform): MONAI's
  ScaleIntensityRangePercentiles takes its percentiles over the whole image, where medgen's `mr` preset takes
  them over the foreground (and keeps the background at exactly -1), and MONAI's NormalizeIntensity has no mask
  for the `zscore` preset's statistics.
- `NoiseRobustPETScaled`: pet_lowdose moves the PET scale to the percentile of the smoothed input
  (`medgen.pipelines.pet_lowdose.method.noise_robust_rescale`, the same function).
- `InvertIntensityd`: the stored per-case inverse of a preset (the PET scale is the case's own).
- `ValidSlidingWindowInferer`: MONAI's inferers assume an output window as large as its input window; a
  valid-convolution network (mr_to_ct's FCN, DeepMedic) predicts only the centre (`medgen.inference.windows`).
- `build_network`: the eager module whose weights are `models/model.pt`, rebuilt from the run's config.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.inferers import Inferer
from monai.transforms import MapTransform

from medgen.data.presets import NORM_META_KEY, invert_intensity
from medgen.errors import MedgenError

__all__ = ["NoiseRobustPETScaled", "InvertIntensityd", "ValidSlidingWindowInferer", "build_network", "norm_params_of"]


def norm_params_of(data: Mapping, key: Hashable) -> dict:
    """The normalisation parameters `NormalizeIntensityd` stored for `key` (in its meta, or beside it)."""
    value = data[key]
    params = (getattr(value, "meta", None) or {}).get(NORM_META_KEY) or data.get(f"{key}_{NORM_META_KEY}")
    if not params:
        raise MedgenError(f"'{key}' carries no normalisation parameters ({NORM_META_KEY}): normalise it with "
                          "medgen.data.presets.NormalizeIntensityd first")
    return dict(params)


class NoiseRobustPETScaled(MapTransform):
    """After the `pet` preset: divide by the factor that moves its scale to the 99.5th percentile of the input
    smoothed by `sigma` voxels, and record the new scale (pet_lowdose's `prepare_case`, step for step)."""

    def __init__(self, keys, sigma: float, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.sigma = float(sigma)

    def __call__(self, data: Mapping) -> dict:
        from medgen.pipelines.pet_lowdose.method import noise_robust_rescale

        d = dict(data)
        for key in self.key_iterator(d):
            params = norm_params_of(d, key)
            rel = noise_robust_rescale(d[key], params, self.sigma)
            if rel != 1.0:
                y = d[key] / rel
                new = dict(params, scale=float(params["scale"]) * rel, scale_smoothing_vox=self.sigma)
                if hasattr(y, "meta"):
                    y.meta[NORM_META_KEY] = new
                else:
                    d[f"{key}_{NORM_META_KEY}"] = new
                d[key] = y
        return d


class InvertIntensityd(MapTransform):
    """Map `keys` (a prediction) back to source units with a preset's inverse: the parameters the normaliser
    stored on `params_key` (the case's own, e.g. its PET scale), or the fixed `params` (e.g. a CT window)."""

    def __init__(self, keys, params_key: Hashable | None = None, params: Mapping | None = None,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if (params_key is None) == (params is None):
            raise MedgenError("InvertIntensityd needs exactly one of params_key and params")
        self.params_key, self.params = params_key, dict(params) if params is not None else None

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        params = self.params if self.params is not None else norm_params_of(d, self.params_key)
        for key in self.key_iterator(d):
            d[key] = invert_intensity(d[key].float(), params)
        return d


class ValidSlidingWindowInferer(Inferer):
    """`medgen.inference.windows.valid_sliding_window` as a MONAI Inferer: output windows of `output_size` tile
    the volume (mirror-padded by the network's margin), each predicted from the input window of `roi_size` around
    it, overlaps averaged with `mode` ("constant" or "gaussian") weights. The result keeps the input's meta."""

    def __init__(self, roi_size: Sequence[int], output_size: Sequence[int], sw_batch_size: int = 4,
                 overlap: float = 0.5, mode: str = "constant", sw_device=None):
        super().__init__()
        self.roi_size = [int(s) for s in roi_size]
        self.output_size = [int(s) for s in output_size]
        self.sw_batch_size, self.overlap, self.mode, self.sw_device = int(sw_batch_size), float(overlap), mode, sw_device

    def __call__(self, inputs: torch.Tensor, network, *args, **kwargs) -> torch.Tensor:
        from monai.utils import convert_to_dst_type

        from medgen.inference.windows import valid_sliding_window

        out = valid_sliding_window(lambda w: network(w, *args, **kwargs), inputs, self.roi_size, self.output_size,
                                   overlap=self.overlap, window_batch=self.sw_batch_size, blend=self.mode,
                                   device=self.sw_device)
        result = next(iter(out.values()))
        return convert_to_dst_type(result, inputs, dtype=result.dtype, device=result.device)[0]


def build_network(config_file: str, network: str, stage: int = 1) -> torch.nn.Module:
    """The eager module of `models/model.pt` (the exported network `network` of cascade stage `stage`, as
    `medgen export` wrote it), built from the run's config (`configs/medgen_config.json`), weights not loaded:
    load them with MONAI's CheckpointLoader or `load_state_dict(torch.load(..., weights_only=True))`."""
    import json

    from medgen.config import from_dict
    from medgen.engine.export import exportables
    from medgen.registry import PIPELINES

    with open(config_file) as fh:
        config = json.load(fh)
    cls = PIPELINES.get(config["pipeline"])
    pipeline = cls(from_dict(cls.config_class, config), "cpu", stage=int(stage))
    pipeline.networks = pipeline.build_networks()
    found = exportables(pipeline)
    if network not in found or found[network].module is None:
        raise MedgenError(f"{config_file}: pipeline '{cls.name}' exports no network '{network}'")
    return found[network].module
