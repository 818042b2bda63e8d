"""The shared half of the 3D image-to-image methods (pet_lowdose, mr_synthesis, mr_to_ct, the template):
patch training data, whole-volume sliding-window prediction (same-size or valid-convolution windows),
metrics in the source's units, and outputs written through the one writer.

A subclass declares its keys (`case_keys`, `source_keys`, `target_key`), its networks and steps; the
generator used for prediction is the network named by `generator`. It may override `output_patch_size`
(a valid-convolution network's smaller output window), `output_params` (which stored inverse maps the output
back to source units) and `to_source_units`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from medgen.config.sections import ImageDataConfig
from medgen.data.cases import CaseKey
from medgen.errors import ConfigError, DataError
from medgen.inference.windows import sliding_window, valid_sliding_window
from medgen.pipelines.base import PREVIOUS_KEY, Pipeline

__all__ = ["ImageToImagePipeline", "ImageDataConfig", "check_patch_size", "image_keys"]


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


class ImageToImagePipeline(Pipeline):
    phantom = "head"
    generator: ClassVar[str] = "G"  # the network that makes predictions
    key_metric = "psnr"
    key_metric_mode = "max"

    # ----- what a subclass declares -----------------------------------------------------------------------
    def source_keys(self) -> list[str]:
        raise NotImplementedError

    def target_key(self) -> str:
        raise NotImplementedError

    def output_patch_size(self) -> list[int]:
        """The network's output window for an input window of data.patch_size (smaller for valid convs)."""
        return list(self.config.data.patch_size)

    def output_params(self, case) -> dict | None:
        """Normalisation params that map the network's output back to source units (None: none)."""
        return case.norm.get(self.target_key())

    # ----- training data --------------------------------------------------------------------------------
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
        return {self.generator: torch.zeros(1, len(self.network_keys()), *self.config.data.patch_size)}

    # ----- units, metrics, outputs ---------------------------------------------------------------------------
    def to_source_units(self, case, tensor: torch.Tensor, params: dict | None) -> np.ndarray:
        from medgen.data.presets import invert_intensity

        arr = tensor.detach().float().cpu()
        if params is not None:
            arr = invert_intensity(arr, params)
        return np.asarray(arr, dtype=np.float32)

    def target_in_source_units(self, case) -> np.ndarray:
        return self.to_source_units(case, case[self.target_key()], case.norm.get(self.target_key()))

    def metric_mask(self, case) -> np.ndarray | None:
        key = self.config.data.mask_key
        if key and key in case:
            return case[key].numpy()[0] > 0
        return None

    def evaluate_case(self, prediction: dict, case) -> dict:
        from medgen.metrics import image_metrics

        if self.target_key() not in case:
            return {}
        pred = self.to_source_units(case, prediction[self.output_name], self.output_params(case))[0]
        target = self.target_in_source_units(case)[0]
        mask = self.metric_mask(case)
        values = target[mask] if mask is not None else target
        data_range = float(values.max() - values.min()) or 1.0
        return image_metrics(pred, target, data_range=data_range, mask=mask)

    def preview(self, case, prediction: dict) -> dict:
        pred = prediction[self.output_name][0].float()
        images = {"input": case[self.source_keys()[0]][0], "output": pred}
        if self.target_key() in case:
            images["target"] = case[self.target_key()][0]
            images["error"] = (pred - case[self.target_key()][0]).abs()
        return images

    def write_outputs(self, case, prediction: dict, out, suffix: str = "") -> list[dict]:
        reference = case.paths[self.source_keys()[0]]
        entries = []
        for name, tensor in prediction.items():
            params = self.output_params(case) if name == self.output_name else None
            arr = self.to_source_units(case, tensor, params)
            label = name + (f"_{suffix}" if suffix else "")
            path = out.write_image(f"{case.id}_{label}.nii.gz", arr, reference, dtype=self.config.infer.output_dtype)
            entries.append({
                "path": str(path), "output": label,
                "reference_key": self.target_key() if name == self.output_name else None,
                "kind": "image", "data_range": None, "mask_key": self.config.data.mask_key or None,
                "units": "source" if params is not None else "normalised",
            })
        return entries
