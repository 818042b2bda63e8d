"""The pipeline contract: a pipeline says WHAT to train and predict; the engine (`medgen.engine`) owns HOW
(loops, AMP, distributed gradients, checkpoints, logging, previews, validation, whole-dataset inference,
writing and evaluating outputs). Every name below is checked when the pipeline is registered.

| name | must / may | meaning (default) |
|---|---|---|
| `name`, `description` | must | registry key (= the config's `pipeline`); one line for `medgen list` |
| `config_class` | must | a `PipelineConfig` dataclass with the paper's defaults, each naming its source |
| `spatial_dims` | may | 3 volumes, 2 images, 0 tables (3) |
| `phantom` | may | embedded dataset kind used when `data.dataset` is empty (None: a dataset is required) |
| `case_keys()` | may | the dataset keys a case is read from, as `medgen.data.cases.CaseKey`s ([]) |
| `prepare_case(case)` | may | method-specific checks / normalisation of a loaded `Case` (unchanged) |
| `data_source()` | may | where cases come from: image datasets are read through `case_keys` (override for tables) |
| `train_dataset()` | must | a torch Dataset; item i a pure function of (seed, i); an endless one sets `epoch_size` |
| `validation_cases()` | may | cases scored during training (the validation split) |
| `build_networks()` | must | {name: nn.Module} |
| `build_optimizers(networks)` | must | {name: Optimizer} |
| `build_schedulers(optimizers, total_steps)` | may | {name: scheduler}, stepped once per train step ({}) |
| `train_step(batch)` | must | one update; returns {name: scalar tensor} to log |
| `critic_steps`, `critic_step(batch)` | may | critic updates before each train step, each on a fresh batch (0) |
| `ema_network` | may | the network an EMA follows when `train.ema_decay > 0` (None) |
| `num_stages(config)` | may | cascade stages trained in sequence; stage k sees `case["previous"]` (1) |
| `predict_case(case)` | must | {name: tensor} for one whole case, on the CPU |
| `output_name` | may | the main prediction, fed to the next cascade stage ("output") |
| `outputs(case, prediction)` | must | {name: `Output`}: results in final form (source units, geometry); written and scored |
| `evaluate_case(outputs, case)` | may | {metric: float} of one case's output values ({}) |
| `evaluate_set(rows)` | may | metrics over all cases from their per-case rows, e.g. an AUC ({}) |
| `floors(case)` | may | {name: output values} of trivial predictions scored beside the model ({}) |
| `baselines` | may | names in `medgen.baselines.registry.BASELINES` fitted and scored beside the model (()) |
| `describe_evaluation()` | may | how outputs are scored: region, data range, units ({}) |
| `lower_is_better` | may | metrics of `evaluate_case` where lower is better, beyond errors and losses (()) |
| `key_metric`, `key_metric_mode` | may | the validation metric that picks best.pt, "min" or "max" ("loss", "min") |
| `preview(case, prediction)` | may | named images for the validation montage ({}) |
| `export_examples()` | may | {network: example input} worth exporting ({}) |
| `state_dict()`, `load_state_dict(state)` | may | pipeline state saved beside the networks (e.g. fitted scalers) |

Services the engine provides: `update(optimizer, loss)` (zero-grad, backward, cross-rank averaging, clipping,
non-finite check, step), `frozen(*networks)`, `inference_network(name)` (its EMA copy when kept),
`output_values(case, prediction)`, `with_previous(case)`, `epoch`, `step`, `device`, `config`, `stage`,
`previous`, `data` (the `CaseSource`), `dataset_ref`.
How to write one: docs/extending.md, and the `_template` pipeline to copy.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from medgen.config.sections import PipelineConfig
from medgen.errors import ConfigError

PREVIOUS_KEY = "previous"  # a cascade stage's input from the stage before it


class Pipeline:
    # ----- identity ----------------------------------------------------------------------------------
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_class: ClassVar[type] = PipelineConfig
    # ----- data --------------------------------------------------------------------------------------
    spatial_dims: ClassVar[int] = 3
    phantom: ClassVar[str | None] = None
    # ----- method --------------------------------------------------------------------------------------
    critic_steps: int = 0
    ema_network: ClassVar[str | None] = None
    output_name: ClassVar[str] = "output"
    key_metric: ClassVar[str] = "loss"
    key_metric_mode: ClassVar[str] = "min"
    baselines: ClassVar[tuple[str, ...]] = ()
    lower_is_better: ClassVar[tuple[str, ...]] = ()  # beyond the names evaluation knows (errors, losses, ...)

    def __init__(self, config, device: torch.device | str = "cpu", stage: int = 1, previous: tuple = ()):
        self.config = config
        self.device = torch.device(device)
        self.stage = stage  # 1-based position in a cascade (progressive refinement, auto-context)
        self.previous = tuple(previous)  # trained pipelines of the earlier stages, in order
        self.networks: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.step = 0  # main-network steps done so far (set by the engine)
        self.steps_per_epoch = 1  # set by the engine from the dataset size
        self.checkpoint: dict | None = None  # {path, sha256, step} of the loaded weights (set by the engine)
        self._engine = None  # the Trainer attaches itself here
        self._data = None

    # ----- data ----------------------------------------------------------------------------------------
    def case_keys(self) -> list:
        return []

    def prepare_case(self, case):
        return case

    def data_source(self):
        from medgen.data.cases import CaseSource, load_image_case, resolve_dataset

        ref = resolve_dataset(self.config.data, self.phantom, seed=0)
        if not self.config.data.dataset:  # record the resolved phantom in the run's config.yaml
            self.config.data.dataset = str(ref.path)
        keys = self.case_keys()
        if not keys:
            raise ConfigError(f"pipeline '{self.name}' reads no dataset keys (case_keys() is empty)")

        def load_entry(entry, split):
            case = load_image_case(entry, split, keys, source.datalist.source, self.spatial_dims)
            return self.with_previous(self.prepare_case(case))

        inputs = [k.name for k in keys if k.role == "input"]
        source = CaseSource(ref, load_entry, skip_bad_cases=self.config.data.skip_bad_cases,
                            image_key=inputs[0] if len(inputs) == 1 else None)
        return source

    @property
    def data(self):
        """The pipeline's `CaseSource`: ids, entries and cases of each split."""
        if self._data is None:
            self._data = self.data_source()
        return self._data

    @property
    def dataset_ref(self) -> dict | None:
        """{path, sha256} of the dataset this pipeline read, once it has read one (recorded by the engine)."""
        return self._data.ref.as_dict() if self._data is not None else None

    def with_previous(self, case):
        """For a cascade's stage k > 1: the case with stage k-1's estimate under `previous`."""
        if not self.previous:
            return case
        from medgen.engine.cascade import cascade_predict

        estimate = cascade_predict(self.previous, case, self.output_name)[-1][self.output_name]
        return case.with_arrays(**{PREVIOUS_KEY: estimate.detach().float().cpu()})

    def train_dataset(self) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def validation_cases(self) -> list:
        return self.data.load("validation")

    # ----- method --------------------------------------------------------------------------------------
    def build_networks(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def build_optimizers(self, networks: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def build_schedulers(self, optimizers: dict, total_steps: int) -> dict:
        return {}

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def critic_step(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @classmethod
    def num_stages(cls, config) -> int:
        return 1

    # ----- prediction and evaluation -----------------------------------------------------------------
    def predict_case(self, case) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def outputs(self, case, prediction: dict) -> dict:
        raise NotImplementedError

    def evaluate_case(self, outputs: dict, case) -> dict[str, float]:
        return {}

    def evaluate_set(self, rows: list[dict]) -> dict[str, float]:
        return {}

    def floors(self, case) -> dict[str, dict]:
        return {}

    def describe_evaluation(self) -> dict:
        return {}

    def output_values(self, case, prediction: dict) -> dict:
        """The values `evaluate_case` scores: `outputs` without figures (what `medgen evaluate` reads back)."""
        return {k: o.value for k, o in self.outputs(case, prediction).items() if o.kind != "figure"}

    def preview(self, case, prediction: dict) -> dict[str, Any]:
        return {}

    def export_examples(self) -> dict[str, torch.Tensor]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # ----- services of the engine, for use inside steps ------------------------------------------------
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


# What registration checks: the names a pipeline must define, and the values the others may take.
REQUIRED = ("build_networks", "build_optimizers", "train_step", "predict_case", "train_dataset", "outputs")


def check_contract(cls) -> None:
    """Raise ConfigError naming what is missing or wrong, when a pipeline class is registered."""
    where = f"pipeline class {cls.__module__}.{cls.__name__}"
    problems = []
    if not cls.name or not cls.name.isidentifier() or cls.name != cls.name.lower():
        problems.append(f"`name` must be a lower-case identifier, got {cls.name!r}")
    if not cls.description:
        problems.append("`description` (one line for `medgen list`) is empty")
    if not (dataclasses.is_dataclass(cls.config_class) and issubclass(cls.config_class, PipelineConfig)):
        problems.append("`config_class` must be a dataclass subclassing medgen.config.sections.PipelineConfig")
    elif cls.config_class is PipelineConfig:
        problems.append("`config_class` is the bare PipelineConfig: declare the method's own config")
    else:
        default = cls.config_class.__dataclass_fields__["pipeline"].default
        if default != cls.name:
            problems.append(f"`config_class` field `pipeline` defaults to {default!r}, not the name {cls.name!r}")
    for method in REQUIRED:
        if getattr(cls, method) is getattr(Pipeline, method):
            problems.append(f"`{method}` is not defined")
    if cls.critic_steps and cls.critic_step is Pipeline.critic_step:
        problems.append("`critic_steps` > 0 but `critic_step` is not defined")
    if not isinstance(cls.spatial_dims, property) and cls.spatial_dims not in (0, 2, 3):  # a property: per config
        problems.append(f"`spatial_dims` must be 0, 2 or 3, got {cls.spatial_dims!r}")
    if cls.key_metric_mode not in ("min", "max"):
        problems.append(f"`key_metric_mode` must be 'min' or 'max', got {cls.key_metric_mode!r}")
    if cls.phantom is not None:
        from medgen.data.phantoms.datasets import PHANTOM_KINDS

        if cls.phantom not in PHANTOM_KINDS:
            problems.append(f"`phantom` {cls.phantom!r} is not an embedded dataset ({', '.join(PHANTOM_KINDS)})")
    if not isinstance(cls.lower_is_better, tuple) or not all(isinstance(m, str) for m in cls.lower_is_better):
        problems.append(f"`lower_is_better` must be a tuple of metric names, got {cls.lower_is_better!r}")
    if not isinstance(cls.baselines, tuple):
        problems.append(f"`baselines` must be a tuple of names, got {cls.baselines!r}")
    else:
        from medgen.baselines.registry import BASELINES

        unknown = [b for b in cls.baselines if b not in BASELINES]
        if unknown:
            problems.append(f"`baselines` names unknown baselines {unknown} (known: {', '.join(sorted(BASELINES))})")
    if problems:
        raise ConfigError(f"{where} breaks the pipeline contract (medgen/pipelines/base.py): " + "; ".join(problems))
