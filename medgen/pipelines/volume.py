"""Shared machinery of the 3D image-to-image pipelines (pet_lowdose, mr_synthesis, mr_to_ct):
dataset resolution (own dataset.json or the embedded phantoms), loading and normalising whole cases once,
deterministic patch datasets, whole-volume sliding-window prediction (same-size or valid-convolution
windows), cascades, metrics in the input's units, and writing outputs through the one writer.

A subclass sets `input_keys`, `target_keys`, `presets()` and its networks / steps; everything here is
configured by `VolumeDataConfig` and `InferConfig`.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch

from medgen.engine.cascade import PREVIOUS_KEY, add_previous_estimates
from medgen.engine.inference import sliding_window, valid_sliding_window
from medgen.engine.options import DataConfig
from medgen.errors import ConfigError, DataError, MedgenError
from medgen.pipelines.base import Pipeline


@dataclass
class VolumeDataConfig(DataConfig):
    patch_size: list[int] = field(default_factory=lambda: [64, 64, 64])  # network input window
    patch_sampling: Literal["uniform", "foreground", "lesion_balanced"] = "foreground"
    mask_key: str = "mask"  # head / brain mask: foreground sampling and the metrics' mask ("" = none)
    lesion_key: str = "lesion"  # for lesion_balanced sampling
    phantom_shape: list[int] = field(default_factory=list)  # phantom volume size ([] = generator default)


def phantom_dataset(kind: str, data_cfg, seed: int = 0, folder: str | Path | None = None, **options) -> Path:
    """The embedded phantom dataset of `kind`, written on first use under data.phantom_dir (in `folder` when
    given). Under torchrun rank 0 writes it while the other ranks wait, so they never race on the same files.

    The generator's defaults go to `<phantom_dir>/<kind>` (what `medgen demo` writes); a config asking for another
    case count or size gets its own folder, e.g. `<phantom_dir>/head_8cases_24x24x24`, so two configs sharing a
    phantom_dir never read each other's phantoms."""
    import torch.distributed as dist

    from medgen.data.phantoms import write_phantom_dataset
    from medgen.engine.distributed import barrier

    if data_cfg.phantom_cases:
        options["n_cases"] = data_cfg.phantom_cases
    shape = getattr(data_cfg, "phantom_shape", None)
    if shape:
        options["shape"] = tuple(shape)
    if folder is None:
        name = [kind]
        if "n_cases" in options:
            name.append(f"{options['n_cases']}cases")
        if "shape" in options:
            name.append("x".join(map(str, options["shape"])))
        folder = Path(data_cfg.phantom_dir) / "_".join(name)
    folder = Path(folder)
    is_main = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    if is_main and not (folder / "dataset.json").exists():
        write_phantom_dataset(kind, folder, seed=seed, **options)
    barrier()
    _check_phantom_matches(folder, kind, seed, options)
    return folder


def _check_phantom_matches(folder: Path, kind: str, seed: int, requested: dict) -> None:
    """A phantom folder written earlier is reused only if it was written with what the config asks for now:
    a run with data.phantom_cases=300 must not silently train on the 60 B-scans of an older run."""
    try:
        written = json.loads((folder / "dataset.json").read_text()).get("phantom")
    except (OSError, ValueError) as err:
        raise MedgenError(f"{folder / 'dataset.json'}: cannot read the phantom dataset ({err})") from err
    if not isinstance(written, dict):
        return  # not written by medgen.data.phantoms: the user's own folder, used as it is
    have = {"kind": written.get("kind"), "seed": written.get("seed"), "n_cases": written.get("n_cases"),
            "shape": written.get("shape"), **(written.get("options") or {})}

    def plain(v):
        return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v

    want = {"kind": kind, "seed": int(seed), **requested}
    differ = [f"{k}={plain(have.get(k))!r} (asked: {plain(v)!r})" for k, v in want.items()
              if plain(have.get(k)) != plain(v)]
    if differ:
        raise MedgenError(f"{folder}: this phantom dataset was written with {', '.join(differ)}; set "
                          "data.phantom_dir to another folder (or delete this one) to write the phantom asked for")


def _case_error(exc: Exception) -> str:
    """A case's failure as one line: medgen's own message, or the exception type and text."""
    return str(exc) if isinstance(exc, MedgenError) else f"{type(exc).__name__}: {exc}"


class VolumePipeline(Pipeline):
    phantom_kind: ClassVar[str] = "head"
    output_name: ClassVar[str] = "output"  # the name of the main prediction in outputs and manifests
    key_metric = "psnr"
    key_metric_mode = "max"

    def __init__(self, config, device="cpu", stage: int = 1, previous: tuple = ()):
        super().__init__(config, device, stage, previous)
        self._datalist = None
        self._cases: dict[str, list[dict]] = {}
        self.skipped_cases: list[dict] = []  # bad cases left out when data.skip_bad_cases is true

    # ----- what a subclass may override ---------------------------------------------------------
    def presets(self) -> dict[str, str]:
        """dataset key -> preset name (see medgen.data.presets)."""
        return {}

    def source_keys(self) -> list[str]:
        return list(self.input_keys)

    def target_key(self) -> str:
        return self.target_keys[0]

    def output_patch_size(self) -> list[int]:
        """The network's output window for an input window of data.patch_size (smaller for valid convs)."""
        return list(self.config.data.patch_size)

    def prepare_case(self, case: dict) -> dict:
        """Hook after loading and normalising a case (e.g. shared normalisation of input and target)."""
        return case

    def output_params(self, case: dict) -> dict | None:
        """Normalisation params that map the network's output back to the input's units (None: none)."""
        return case["norm"].get(self.target_key())

    # ----- data -------------------------------------------------------------------------------------
    def dataset_path(self) -> Path:
        if self.config.data.dataset:
            return Path(self.config.data.dataset)
        return phantom_dataset(self.phantom_kind, self.config.data, seed=0)

    def datalist(self):
        from medgen.data.datalist import load_datalist

        if self._datalist is None:
            self._datalist = load_datalist(self.dataset_path())
        return self._datalist

    def case_keys(self, split: str) -> list[str]:
        """Keys loaded for a case: the inputs (and the target, except in the test split, where users may
        have none), plus the target, mask and extras when every case of the split has them."""
        cases = self.datalist().split(split)
        required = list(self.source_keys()) + ([self.target_key()] if split != "test" else [])
        for case in cases:
            missing = [k for k in required if k not in case]
            if missing:
                raise DataError(self.datalist().source, f"case '{case.get('id')}' ({split}) has no key(s) {missing}")
        keys = list(required)
        for key in (self.target_key(), self.config.data.mask_key, *self.extra_keys()):
            if key and key not in keys and cases and all(key in c for c in cases):
                keys.append(key)
        return keys

    def extra_keys(self) -> list[str]:
        return []

    def load_cases(self, split: str, dataset: str | None = None) -> list[dict]:
        """Whole cases of a split as tensors (C, *spatial), normalised, with norm params, meta and paths.
        Cached: training and validation cases are loaded once per run."""
        if split not in self._cases:
            cases = []
            for case in self.iter_cases(split):
                if "error" not in case:
                    cases.append(case)
                elif self.config.data.skip_bad_cases:  # leave the case out, say so, keep it for reports
                    warnings.warn(f"skipping case '{case['id']}' ({split}): {case['error']}", stacklevel=2)
                    self.skipped_cases.append(case)
                else:
                    raise DataError(None, case["error"])
            self._cases[split] = cases
        return self._cases[split]

    def case_ids(self, split: str) -> list[str]:
        return [str(c.get("id")) for c in self.datalist().split(split)]

    def iter_cases(self, split: str, skip=()):
        """Cases of a split one at a time (inference over large datasets keeps one in memory), leaving out
        the ids in `skip`. A case that cannot be loaded is yielded as {"id", "split", "error"} so the
        others still run."""
        from medgen.data.patches import load_cases

        entries = self.datalist().split(split)
        if not entries:
            return
        keys = self.case_keys(split)
        presets = {k: v for k, v in self.presets().items() if k in keys}
        mask_key = self.config.data.mask_key if self.config.data.mask_key in keys else None
        for entry in entries:
            if entry.get("id") in skip:
                continue
            try:
                item = load_cases([entry], keys, presets, mask_key=mask_key)[0]
                case = {"id": item["id"], "norm": item["norm"], "meta": item["meta"], "split": split,
                        "paths": {k: entry[k] for k in keys}}
                for k in keys:
                    case[k] = torch.as_tensor(np.ascontiguousarray(item[k]), dtype=torch.float32)
                case = self.prepare_case(case)
            except Exception as exc:  # noqa: BLE001 - any failure of one case is that case's, reported with it
                yield {"id": entry.get("id"), "split": split, "error": _case_error(exc)}
                continue
            yield add_previous_estimates(self.previous, [case], self.output_name)[0]

    def network_keys(self) -> list[str]:
        return self.source_keys() + ([PREVIOUS_KEY] if self.stage > 1 else [])

    def network_input(self, batch: dict) -> torch.Tensor:
        return torch.cat([batch[k] for k in self.network_keys()], dim=1)

    def train_dataset(self):
        from medgen.data.patches import PatchDataset, PatchSampler

        d = self.config.data
        cases = self.load_cases("training")
        if not cases:
            raise DataError(self.datalist().source, "the training split is empty")
        mask_key = d.mask_key if d.mask_key and d.mask_key in cases[0] else None
        mode = d.patch_sampling if (mask_key or d.patch_sampling == "uniform") else "uniform"
        sampler = PatchSampler(
            d.patch_size, self.output_patch_size(), mode=mode, fg_key=mask_key,
            lesion_key=d.lesion_key if mode == "lesion_balanced" else None,
        )
        arrays = [{k: (v.numpy() if torch.is_tensor(v) else v) for k, v in c.items()} for c in cases]
        targets = [self.target_key()] + ([mask_key] if mask_key else [])
        dataset = PatchDataset(arrays, sampler, self.network_keys(), targets, seed=self.config.train.seed)
        dataset.procedural = True
        return dataset

    def validation_cases(self) -> list[dict]:
        return self.load_cases("validation")

    # ----- inference ------------------------------------------------------------------------------------
    def infer_step(self, batch: dict) -> dict:
        return {self.output_name: self.inference_network("G")(batch["input"])}

    def predict_case(self, case: dict) -> dict:
        x = self.network_input({k: case[k].unsqueeze(0) for k in self.network_keys()})
        inf = self.config.infer
        in_size = tuple(self.config.data.patch_size)
        out_size = tuple(self.output_patch_size())

        def predictor(windows):
            return self.infer_step({"input": windows})

        if out_size == in_size:
            out = sliding_window(predictor, x, in_size, overlap=inf.overlap, window_batch=inf.window_batch,
                                 blend=inf.blend, device=self.device, stitch_on_cpu=inf.stitch_on_cpu)
        else:
            out = valid_sliding_window(predictor, x, in_size, out_size, overlap=inf.overlap,
                                       window_batch=inf.window_batch, blend=inf.blend, device=self.device)
        return {k: v[0].float().cpu() for k, v in out.items()}

    def export_examples(self) -> dict:
        return {"G": torch.zeros(1, len(self.network_keys()), *self.config.data.patch_size)}

    # ----- units, metrics, outputs --------------------------------------------------------------------------
    def to_source_units(self, case: dict, tensor: torch.Tensor, params: dict | None) -> np.ndarray:
        from medgen.data.presets import invert_intensity

        arr = tensor.detach().float().cpu()
        if params is not None:
            arr = invert_intensity(arr, params)
        return np.asarray(arr, dtype=np.float32)

    def target_in_source_units(self, case: dict) -> np.ndarray:
        return self.to_source_units(case, case[self.target_key()], case["norm"].get(self.target_key()))

    def metric_mask(self, case: dict) -> np.ndarray | None:
        key = self.config.data.mask_key
        if key and key in case:
            return case[key].numpy()[0] > 0
        return None

    def evaluate_case(self, prediction: dict, case: dict) -> dict:
        from medgen.metrics import image_metrics

        if self.target_key() not in case:
            return {}
        pred = self.to_source_units(case, prediction[self.output_name], self.output_params(case))[0]
        target = self.target_in_source_units(case)[0]
        mask = self.metric_mask(case)
        values = target[mask] if mask is not None else target
        data_range = float(values.max() - values.min()) or 1.0
        return image_metrics(pred, target, data_range=data_range, mask=mask)

    def preview(self, case: dict, prediction: dict) -> dict:
        pred = prediction[self.output_name][0].float()
        images = {"input": case[self.source_keys()[0]][0], "output": pred}
        if self.target_key() in case:
            images["target"] = case[self.target_key()][0]
            images["error"] = (pred - case[self.target_key()][0]).abs()
        return images

    def write_outputs(self, case: dict, prediction: dict, out, suffix: str = "") -> list[dict]:
        reference_key = self.source_keys()[0]
        entries = []
        for name, tensor in prediction.items():
            params = self.output_params(case) if name == self.output_name else None
            arr = self.to_source_units(case, tensor, params)
            label = name + (f"_{suffix}" if suffix else "")
            path = out.write_image(f"{case['id']}_{label}.nii.gz", arr, case["paths"][reference_key],
                                   dtype=self.config.infer.output_dtype)
            entries.append({
                "path": str(path), "output": label,
                "reference_key": self.target_key() if name == self.output_name else None,
                "kind": "image", "data_range": None, "mask_key": self.config.data.mask_key or None,
                "units": "source" if params is not None else "normalised",
            })
        return entries


def check_patch_size(patch_size, spatial_dims: int = 3) -> None:
    if len(patch_size) != spatial_dims or any(int(p) < 4 for p in patch_size):
        raise ConfigError(f"data.patch_size must be {spatial_dims} sizes of at least 4, got {patch_size}")
