"""Model export (TorchScript, ONNX), each file carrying its metadata and checked numerically against the eager
model, at the example it was traced with and at every further example the pipeline gives (another spatial size
for a fully convolutional network, another batch size).

Conversion is MONAI's (`monai.networks.utils.convert_to_torchscript` / `convert_to_onnx`, tracing). The metadata
goes where MONAI reads it: the TorchScript file's extra file `metadata.json` (`monai.data.load_net_with_metadata`
returns it), and the ONNX model's `metadata_props` (key `medgen`, JSON). The check is medgen's `verify_export`
rather than MONAI's `verify=True`: it compares every output of a (nested) result, also at the further examples,
and fails with a MedgenError naming the file. Tracing records the ops of the example's path, so a network whose
Python code depends on the input size is exported for the size it was traced with (`dynamic_spatial=False`).
The model is exported in eval mode (dropout off, batch norm running statistics) and its previous mode restored.
TorchScript's `torch.jit.trace` is deprecated by torch in favour of torch.export, but still gives the most
portable file for C++ and older runtimes; its warnings are silenced here. ONNX uses the TorchScript-based
exporter (`dynamo=False`), which takes `dynamic_axes`, and needs the optional extra: `pip install medgen[export]`.

What a pipeline offers for export is `Pipeline.export_examples()`: {name: example input of the network `name`}
or {name: `Exportable`} (any module, its example, names, dynamic axes, or why it cannot be exported).
`export_networks` writes them all for `medgen export --format torchscript|onnx`; the bundle is `medgen.engine.bundle`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medgen.errors import MedgenError

__all__ = ["Exportable", "exportables", "export_torchscript", "export_onnx", "verify_export", "flatten_outputs",
           "export_networks", "staged_folder", "FORMATS"]

DEFAULT_ATOL = 1e-4
FORMATS = ("bundle", "torchscript", "onnx")
SUFFIX = {"torchscript": ".ts", "onnx": ".onnx"}


@dataclass
class Exportable:
    """One module a pipeline offers for export.

    example: the input(s) it is traced with (a tensor or a tuple of tensors), batch axis first.
    module: the module; None means the pipeline's network of the same name (as loaded for inference).
    input_names / output_names: names of the inputs and of the outputs in order (ONNX names; metadata).
    dynamic_spatial: the axes after the channel axis may change size (a fully convolutional network): ONNX makes
        them dynamic, and `other_examples` should hold an input of another size, which the file is checked on.
    other_examples: further inputs the exported file must agree with the eager module on.
    description: what the module computes, in a sentence (metadata).
    metadata: what a user needs to feed it and read its output: preprocessing, units, windows (metadata).
    unavailable: why it cannot be exported ("" when it can); `medgen export` says so instead of writing a file.
    """

    example: Any = None
    module: nn.Module | None = None
    input_names: tuple[str, ...] = ("input",)
    output_names: tuple[str, ...] = ("output",)
    dynamic_spatial: bool = False
    other_examples: tuple = ()
    description: str = ""
    metadata: dict = field(default_factory=dict)
    unavailable: str = ""


def exportables(pipeline) -> dict[str, Exportable]:
    """`pipeline.export_examples()` with every entry an `Exportable` whose module is set."""
    found = {}
    for name, value in (pipeline.export_examples() or {}).items():
        item = value if isinstance(value, Exportable) else Exportable(example=value)
        if item.module is None and not item.unavailable:
            if name not in pipeline.networks:
                raise MedgenError(f"pipeline '{pipeline.name}' offers '{name}' for export but has no network of that name")
            item = dataclasses.replace(item, module=pipeline.networks[name])
        found[name] = item
    return found


def _as_args(example_input) -> tuple:
    return tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)


def flatten_outputs(out) -> list[torch.Tensor]:
    """Tensors of a (nested) output in order: a tensor, tuples/lists, dict values."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flatten_outputs(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in flatten_outputs(v)]
    import numpy as np

    if isinstance(out, np.ndarray):
        return [torch.from_numpy(out)]
    raise MedgenError(f"cannot compare model output of type {type(out).__name__}")


class _EvalMode:
    """Put a model in eval mode and restore its previous mode afterwards."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def verify_export(model: nn.Module, exported: Callable, example_input, atol: float = DEFAULT_ATOL,
                  what: str = "exported model") -> float:
    """Run `model` (eval mode) and `exported` on the example input; return the max abs difference, raise
    MedgenError if any output differs by more than `atol` or the outputs do not match in number/shape."""
    args = _as_args(example_input)
    with _EvalMode(model), torch.no_grad():
        ref = flatten_outputs(model(*args))
        try:
            got = flatten_outputs(exported(*args))
        except MedgenError:
            raise
        except Exception as exc:  # e.g. a fixed-size graph run at another size: say which file and input
            shapes = ", ".join(str(tuple(a.shape)) for a in args)
            raise MedgenError(f"{what} fails on an input of shape {shapes}: {type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0][:300]}") from exc
    if len(ref) != len(got):
        raise MedgenError(f"{what} returns {len(got)} outputs, the eager model {len(ref)}")
    worst = 0.0
    for i, (r, g) in enumerate(zip(ref, got)):
        g = torch.as_tensor(g)
        if tuple(r.shape) != tuple(g.shape):
            raise MedgenError(f"{what} output {i} has shape {tuple(g.shape)}, the eager model {tuple(r.shape)}")
        diff = (r.detach().float().cpu() - g.detach().float().cpu()).abs().max().item() if r.numel() else 0.0
        worst = max(worst, diff)
    if not worst <= atol:  # also catches NaN
        raise MedgenError(f"{what} differs from the eager model: max abs difference {worst:.3g} > tolerance {atol:.3g}")
    return worst


def _json_bytes(metadata: dict | None) -> bytes:
    return json.dumps(metadata or {}, indent=1, default=str).encode()


def export_torchscript(model: nn.Module, example_input, path, atol: float = DEFAULT_ATOL, metadata: dict | None = None,
                       other_examples=(), extra_files: dict | None = None) -> Path:
    """Trace `model` on `example_input` (a tensor or tuple of tensors) with MONAI's `convert_to_torchscript`, save
    it to `path` with `metadata` as the extra file `metadata.json` (what `monai.data.load_net_with_metadata` reads;
    MONAI, torch and numpy versions added) and `extra_files` {name: text}, reload the file and verify it against
    the eager model on the example and on each of `other_examples`. Returns the path."""
    from monai.config import get_config_values
    from monai.networks.utils import convert_to_torchscript

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    args = _as_args(example_input)
    meta = {**get_config_values(), **(metadata or {})}
    files = {"metadata.json": _json_bytes(meta), **{k: v.encode() if isinstance(v, str) else v
                                                   for k, v in (extra_files or {}).items()}}
    with _EvalMode(model), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            convert_to_torchscript(model, str(path), extra_files=files, use_trace=True, inputs=args,
                                   check_trace=False, strict=False)
        except Exception as exc:  # tracing failures are deep torch errors: say what failed
            raise MedgenError(f"TorchScript tracing of {type(model).__name__} failed: {exc}") from exc
        device = args[0].device if args and isinstance(args[0], torch.Tensor) else torch.device("cpu")
        loaded = torch.jit.load(str(path), map_location=device)
    for example in (args, *other_examples):
        verify_export(model, loaded, example, atol=atol, what=f"TorchScript file {path}")
    return path


def _require_onnx():
    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise MedgenError(f"ONNX export needs {' and '.join(missing)}: pip install medgen[export]")
    import onnx
    import onnxruntime

    return onnx, onnxruntime


def export_onnx(model: nn.Module, example_input, path, opset: int = 17, atol: float = DEFAULT_ATOL,
                dynamic_batch: bool = True, dynamic_spatial: bool = False, input_names=None, output_names=None,
                metadata: dict | None = None, other_examples=()) -> Path:
    """Export to ONNX with MONAI's `convert_to_onnx` (opset 17 by default), store `metadata` as JSON in the model's
    `metadata_props` (key "medgen"), check the graph with onnx.checker, run it with onnxruntime on the example and
    on each of `other_examples`, and verify it against the eager model. Inputs are named `input_names` (default
    input0..), outputs `output_names` (default output0..); the batch axis is dynamic unless dynamic_batch=False,
    and with dynamic_spatial every axis after the channel axis too (inputs, and outputs of 3 or more dimensions).
    Raises MedgenError naming the extra when onnx is missing."""
    onnx, ort = _require_onnx()
    from monai.networks.utils import convert_to_onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    args = _as_args(example_input)
    with _EvalMode(model), torch.no_grad():
        outputs = flatten_outputs(model(*args))
        input_names = list(input_names or [f"input{i}" for i in range(len(args))])
        output_names = list(output_names or [f"output{i}" for i in range(len(outputs))])
        if len(input_names) != len(args) or len(output_names) != len(outputs):
            raise MedgenError(f"{type(model).__name__} takes {len(args)} input(s) and returns {len(outputs)} "
                              f"output(s); names given: {input_names}, {output_names}")

        def axes(tensor) -> dict:
            named = {0: "batch"} if dynamic_batch else {}
            if dynamic_spatial and tensor.dim() >= 3:
                named.update({d: f"spatial{d - 2}" for d in range(2, tensor.dim())})
            return named

        dynamic = {n: axes(t) for n, t in zip(input_names + output_names, list(args) + outputs)}
        dynamic = {n: a for n, a in dynamic.items() if a} or None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:  # the TorchScript-based exporter: no onnxscript needed, supports dynamic_axes
                convert_to_onnx(model, list(args), input_names=input_names, output_names=output_names,
                                opset_version=opset, dynamic_axes=dynamic, filename=str(path), verify=False,
                                use_trace=True, dynamo=False)
            except Exception as exc:
                raise MedgenError(f"ONNX export of {type(model).__name__} failed: {exc}") from exc
    graph = onnx.load(str(path))
    if metadata:
        entry = graph.metadata_props.add()
        entry.key, entry.value = "medgen", json.dumps(metadata, default=str)
        graph.doc_string = str(metadata.get("description", ""))
        onnx.save(graph, str(path))
    onnx.checker.check_model(graph)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(*inputs):
        feeds = {name: t.detach().cpu().numpy() for name, t in zip(input_names, inputs)}
        return session.run(None, feeds)

    for example in (args, *other_examples):
        verify_export(model, run, example, atol=atol, what=f"ONNX file {path}")
    return path


# ----- writing a set of files, all or nothing -------------------------------------------------------------------
@contextlib.contextmanager
def staged_folder(target: Path, replace: Callable[[Path], None] | None = None):
    """Yield a hidden temporary folder beside `target`; when the block succeeds, move what it holds into `target`
    (files into an existing folder, or the folder itself as `target`); when it fails, remove it, and every folder
    created for it, so a failed export leaves nothing behind - not even an empty export/ folder. `replace(path)`
    is called for a path about to be replaced (it raises to refuse, or removes what is there)."""
    target = Path(target)
    created = []
    parent = target.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    except OSError as exc:
        raise MedgenError(f"cannot write into {target.parent}: {exc.strerror or exc}") from None
    try:
        yield tmp
        mode = 0o777 & ~_umask()
        os.chmod(tmp, mode)  # mkdtemp makes it private; a plain mkdir would not
        if target.is_dir():
            for item in sorted(tmp.iterdir()):
                dest = target / item.name
                if dest.exists() and replace is not None:
                    replace(dest)
                os.replace(item, dest)
            tmp.rmdir()
        else:
            if target.exists():
                raise MedgenError(f"{target} exists and is not a folder")
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        raise


def _umask() -> int:
    from medgen.files import current_umask

    return current_umask()


# ----- medgen export --format torchscript|onnx --------------------------------------------------------------------
def file_metadata(pipeline, run_dir, name: str, item: Exportable, fmt: str) -> dict:
    """What each exported file says about itself: where it comes from and how to use it."""
    import medgen

    args = _as_args(item.example)
    return {
        "name": f"{pipeline.name} {name}", "description": item.description, "format": fmt,
        "pipeline": pipeline.name, "network": name, "stage": pipeline.stage,
        "run": str(Path(run_dir).name), "checkpoint": dict(pipeline.checkpoint or {}),
        "medgen_version": medgen.__version__,
        "inputs": {n: {"shape": list(a.shape), "dtype": str(a.dtype).removeprefix("torch."),
                       "dynamic_axes": ["batch"] + ([f"spatial{d}" for d in range(a.dim() - 2)]
                                                    if item.dynamic_spatial else [])}
                   for n, a in zip(item.input_names, args)},
        "outputs": list(item.output_names), **item.metadata,
    }


def export_networks(pipeline_name: str, stages, run_dir, fmt: str, network: str | None = None, out=None,
                    overwrite: bool = False) -> tuple[list[Path], list[str]]:
    """Write every exportable module of every stage as `<name>[_stage<k>].ts` or `.onnx` into `out` (default
    `<run>/export`), all or nothing; an existing file is replaced only with `overwrite`. Returns the files
    written and, for what a pipeline offers but cannot export, why."""
    if fmt not in SUFFIX:
        raise MedgenError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out) if out else Path(run_dir) / "export"
    plan, skipped = [], []
    for stage in stages:
        found = exportables(stage)
        if network:
            if network not in found:
                offered = sorted(found) or "no networks"
                raise MedgenError(f"{run_dir}: pipeline '{pipeline_name}' exports {offered}, not '{network}'")
            found = {network: found[network]}
        for name, item in found.items():
            if item.unavailable:
                if network:
                    raise MedgenError(f"{run_dir}: cannot export '{name}' of pipeline '{pipeline_name}': {item.unavailable}")
                skipped.append(f"{name}: {item.unavailable}")
                continue
            tag = f"{name}_stage{stage.stage}" if len(stages) > 1 else name
            plan.append((stage, name, item, f"{tag}{SUFFIX[fmt]}"))
    if not plan:
        why = "; ".join(skipped) or "it declares no exportable networks"
        raise MedgenError(f"{run_dir}: pipeline '{pipeline_name}' has nothing to export ({why})")
    clash = [out / f for *_, f in plan if (out / f).exists()]
    if clash and not overwrite:
        raise MedgenError(f"{clash[0]} already exists; pass --overwrite to replace it, or --out to export elsewhere")
    if fmt == "onnx":
        _require_onnx()  # before any work
    written = []
    with staged_folder(out, replace=lambda p: None) as tmp:
        for stage, name, item, file in plan:
            meta = file_metadata(stage, run_dir, name, item, fmt)
            if fmt == "onnx":
                export_onnx(item.module, item.example, tmp / file, dynamic_spatial=item.dynamic_spatial,
                            input_names=item.input_names, output_names=item.output_names, metadata=meta,
                            other_examples=item.other_examples)
            else:
                export_torchscript(item.module, item.example, tmp / file, metadata=meta,
                                   other_examples=item.other_examples)
            written.append(out / file)
    return written, skipped
