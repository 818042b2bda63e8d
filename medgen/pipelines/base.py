"""The pipeline contract. A pipeline says WHAT to train; the shared engine (`medgen.engine.trainer`)
owns HOW: loops, AMP, distributed gradient averaging, checkpoints, logging, previews, validation,
sliding-window inference and writing outputs.

A pipeline declares:
- `config_class`: a typed config (paper defaults, each naming its source);
- `input_keys` / `target_keys`: the dataset keys it reads (the same words as in dataset.json);
- `build_networks()` -> {name: nn.Module} and `build_optimizers(networks)` -> {name: Optimizer};
- `train_dataset()`: a torch Dataset whose item i is deterministic given i (so resume is exact);
- `train_step(batch)` -> {name: scalar tensor} (and optionally `critic_step(batch)`, run
  `critic_steps` times per train step with fresh batches, for WGAN-style alternation);
- `infer_step(batch)` -> {name: tensor} on a batch of windows / images;
- `validation_cases()` and `evaluate_case(prediction, case)` -> {metric: float} for the key metric.

Inside steps, call `self.update(optimizer_name, loss)`: the engine then does zero-grad, backward (with the
fp16 scaler when used), cross-rank gradient averaging, clipping, the non-finite check and the step.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from medgen.engine.options import PipelineConfig


class Pipeline:
    name: ClassVar[str] = "base"
    description: ClassVar[str] = ""
    config_class: ClassVar[type] = PipelineConfig
    spatial_dims: ClassVar[int] = 3
    input_keys: ClassVar[tuple[str, ...]] = ("image",)
    target_keys: ClassVar[tuple[str, ...]] = ()
    key_metric: ClassVar[str] = "loss"
    key_metric_mode: ClassVar[str] = "min"  # "min" or "max"
    critic_steps: int = 0  # critic_step() calls (each with a fresh batch) before every train_step()
    ema_network: ClassVar[str | None] = None  # the network an EMA (train.ema_decay > 0) follows

    def __init__(self, config, device: torch.device | str = "cpu", stage: int = 1, previous: tuple = ()):
        self.config = config
        self.device = torch.device(device)
        self.stage = stage  # 1-based position in a cascade (progressive refinement, auto-context)
        self.previous = tuple(previous)  # trained pipelines of the earlier stages, in order
        self.networks: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.step = 0  # main-network steps done so far (set by the engine)
        self.steps_per_epoch = 1  # set by the engine from the dataset size
        self._engine = None  # the Trainer attaches itself here
        self.checkpoint: dict | None = None  # {path, sha256, step} of the loaded weights (set by the engine)

    # ----- what a pipeline defines -------------------------------------------------------------
    def build_networks(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def build_optimizers(self, networks: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def build_schedulers(self, optimizers: dict, total_steps: int) -> dict:
        """Learning-rate schedulers, stepped once per train step. Default: none."""
        return {}

    def train_dataset(self) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def validation_cases(self) -> list[dict]:
        return []

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def critic_step(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def infer_step(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict_case(self, case: dict) -> dict[str, torch.Tensor]:
        """Outputs for one whole case, on the CPU. Default: infer_step on the case as one batch."""
        batch = {k: v.unsqueeze(0).to(self.device) if torch.is_tensor(v) else v for k, v in case.items()}
        return {k: v[0].cpu() for k, v in self.infer_step(batch).items()}

    def evaluate_case(self, prediction: dict, case: dict) -> dict[str, float]:
        return {}

    def preview(self, case: dict, prediction: dict) -> dict[str, Any]:
        """Named images for the validation montage (e.g. input / output / target / error)."""
        return {}

    # ----- cascades and whole-dataset inference (used by medgen.engine.api) ---------------------------
    @classmethod
    def num_stages(cls, config) -> int:
        """How many stages `medgen train` trains in sequence (see medgen.engine.cascade)."""
        return 1

    def load_cases(self, split: str, dataset: str | None = None) -> list[dict]:
        """Whole cases of a split, loaded and normalised, for validation and inference."""
        raise NotImplementedError(f"pipeline '{self.name}' does not load dataset cases")

    def case_ids(self, split: str) -> list[str]:
        """The ids of a split's cases, in order (inference splits them across ranks)."""
        return [c["id"] for c in self.load_cases(split)]

    def input_files(self, split: str) -> dict[str, object]:
        """Case id -> what its prediction is made from (its dataset entry: file paths and values), so a rerun of
        inference knows when an input changed. Default: the pipeline's `datalist()` entries, if it has one."""
        datalist = getattr(self, "datalist", None)
        if datalist is None:
            return {}
        return {str(e.get("id")): {k: v for k, v in e.items() if k != "id"} for e in datalist().split(split)}

    def iter_cases(self, split: str, skip=()):
        """Cases one at a time for inference, leaving out the ids in `skip`; a case that fails to load
        is yielded as {"id", "split", "error"}."""
        yield from (c for c in self.load_cases(split) if c["id"] not in skip)

    def write_outputs(self, case: dict, prediction: dict, out, suffix: str = "") -> list[dict]:
        """Write one case's outputs (in the source geometry and units) as `<id>_<output>[_<suffix>]` through `out`
        (a `medgen.engine.outputs.OutputFolder`); returns manifest entries {path, output, reference_key, kind,
        data_range, mask_key}."""
        raise NotImplementedError(f"pipeline '{self.name}' does not write outputs")

    def export_examples(self) -> dict[str, torch.Tensor]:
        """Network name -> an example input, for `medgen export` (networks worth exporting only)."""
        return {}

    def state_dict(self) -> dict:
        """Pipeline state stored in checkpoints beside the networks (e.g. normalisation parameters)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # ----- services of the engine, for use inside steps ------------------------------------------
    @property
    def epoch(self) -> float:
        """Fractional epoch of the current step (for schedules defined in epochs)."""
        return self.step / max(self.steps_per_epoch, 1)

    def update(self, optimizer: str, loss: torch.Tensor, loss_name: str | None = None) -> bool:
        """Backward `loss` and step `optimizer`. Returns False when the step was skipped (non-finite)."""
        if self._engine is None:
            raise RuntimeError("update() is only available while the engine runs the pipeline")
        return self._engine.update(optimizer, loss, loss_name or optimizer)

    @contextmanager
    def frozen(self, *names: str):
        """Freeze networks (no parameter gradients) for a block, e.g. D during the generator's step."""
        nets = [self.networks[n] for n in names]
        flags = [[p.requires_grad for p in net.parameters()] for net in nets]
        for net in nets:
            net.requires_grad_(False)
        try:
            yield
        finally:
            for net, fl in zip(nets, flags):
                for p, f in zip(net.parameters(), fl):
                    p.requires_grad_(f)

    def inference_network(self, name: str) -> nn.Module:
        """The network to use for inference: its EMA copy when one is kept."""
        if self._engine is not None and name == self.ema_network and self._engine.ema is not None:
            return self._engine.ema.module
        return self.networks[name]
