"""Model export (TorchScript, ONNX), each checked numerically against the eager model.

TorchScript uses `torch.jit.trace` (torch deprecates it in favour of torch.export, but it still produces the
most portable artefact for C++ / older runtimes; its DeprecationWarning is silenced here). Tracing records the
ops for the example input's shape path, so export with the patch size you will run. The model is exported in
eval mode (dropout off, batch norm running statistics) and its previous mode is restored afterwards.
ONNX needs the optional extra: `pip install medgen[export]` (onnx + onnxruntime).
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from medgen.errors import MedgenError

__all__ = ["export_torchscript", "export_onnx", "verify_export", "flatten_outputs"]

DEFAULT_ATOL = 1e-4


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
        got = flatten_outputs(exported(*args))
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


def export_torchscript(model: nn.Module, example_input, path, atol: float = DEFAULT_ATOL) -> Path:
    """Trace `model` on `example_input` (a tensor or tuple of tensors), save to `path`, reload the file and
    verify it against the eager model. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    args = _as_args(example_input)
    with _EvalMode(model), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            traced = torch.jit.trace(model, args, check_trace=False, strict=False)
        except Exception as exc:  # tracing failures are deep torch errors: say what failed
            raise MedgenError(f"TorchScript tracing of {type(model).__name__} failed: {exc}") from exc
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path), map_location="cpu" if not args or args[0].device.type == "cpu" else None)
    verify_export(model, loaded, args, atol=atol, what=f"TorchScript file {path}")
    return path


def _require_onnx():
    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise MedgenError(f"ONNX export needs {' and '.join(missing)}: pip install medgen[export]")
    import onnx
    import onnxruntime

    return onnx, onnxruntime


def export_onnx(model: nn.Module, example_input, path, opset: int = 17, atol: float = DEFAULT_ATOL,
                dynamic_batch: bool = True) -> Path:
    """Export to ONNX (opset 17 by default), check the graph with onnx.checker, run it with onnxruntime on the
    example input and verify it against the eager model. Inputs are named input0.., outputs output0..; the batch
    axis is dynamic unless dynamic_batch=False. Raises MedgenError naming the extra when onnx is missing."""
    onnx, ort = _require_onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    args = _as_args(example_input)
    with _EvalMode(model), torch.no_grad():
        n_out = len(flatten_outputs(model(*args)))
        input_names = [f"input{i}" for i in range(len(args))]
        output_names = [f"output{i}" for i in range(n_out)]
        axes = {name: {0: "batch"} for name in input_names + output_names} if dynamic_batch else None
        kwargs = dict(input_names=input_names, output_names=output_names, opset_version=opset, dynamic_axes=axes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                try:  # the TorchScript-based exporter: no onnxscript dependency, supports dynamic_axes
                    torch.onnx.export(model, args, str(path), dynamo=False, **kwargs)
                except TypeError:  # older torch without the dynamo flag
                    torch.onnx.export(model, args, str(path), **kwargs)
            except MedgenError:
                raise
            except Exception as exc:
                raise MedgenError(f"ONNX export of {type(model).__name__} failed: {exc}") from exc
    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(*inputs):
        feeds = {name: t.detach().cpu().numpy() for name, t in zip(input_names, inputs)}
        return session.run(None, feeds)

    verify_export(model, run, args, atol=atol, what=f"ONNX file {path}")
    return path
