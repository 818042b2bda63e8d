"""The trainer's speed settings (`train.*`), each with a plain fallback that gives the same numbers within float
rounding (tests/engine/test_fast_paths.py): fused optimizer kernels, channels-last memory layout, patch batches
cut on the device, and a gradient norm taken with multi-tensor kernels.

Why these: the first H200 run (docs/benchmarks.md) found the 3D GANs at 1-5 % of the chip, a patch loader
slower than the step, and launch-bound small steps. A fused Adam is one kernel per step instead of a dozen
multi-tensor launches (torch.optim.Adam, `fused=True`); channels-last is the layout cuDNN's fast 3D
convolution kernels use under bf16; the device path removes the host-side crop and the PCIe copy.
"""

from __future__ import annotations

import torch

from medgen.errors import ConfigError

FUSABLE = ("Adam", "AdamW", "SGD")  # torch optimizers with a fused implementation


def use_fused(request: str, device: torch.device) -> bool:
    """`train.fused_optimizer`: auto = on CUDA (on a CPU the fused kernels exist but are not faster)."""
    return request == "on" or (request == "auto" and device.type == "cuda")


def rebuild_optimizer(opt: torch.optim.Optimizer, fused: bool) -> torch.optim.Optimizer:
    """`opt` itself, or the same optimizer (same groups and settings, no state yet) with fused kernels when
    `fused` and its class has them. Must run before any step and before schedulers are attached."""
    if not fused or type(opt).__name__ not in FUSABLE or type(opt).__module__.split(".")[:2] != ["torch", "optim"]:
        return opt
    if opt.state:
        raise ConfigError("rebuild_optimizer: the optimizer has already stepped")
    groups = [{**g, "fused": True, "foreach": False} for g in opt.param_groups]
    try:
        return type(opt)(groups, fused=True)
    except (RuntimeError, ValueError):  # parameters on a device or of a dtype without fused kernels
        return opt


def restore_optimizer_impl(opt: torch.optim.Optimizer) -> None:
    """After loading a checkpoint, whose saved groups carry the kernel flags of the run that wrote it: this
    optimizer's own flags again (`opt.defaults`), and the step counters where those kernels keep them (fused or
    capturable: float32 on the parameter's device; otherwise on the CPU)."""
    flags = {k: opt.defaults[k] for k in ("fused", "foreach") if k in opt.defaults}
    for group in opt.param_groups:
        group.update(flags)
        on_device = bool(group.get("fused")) or bool(group.get("capturable"))
        for q in group["params"]:
            state = opt.state.get(q, {})
            step = state.get("step")
            if torch.is_tensor(step):
                state["step"] = step.to(q.device, torch.float32) if on_device else step.cpu()


def memory_format(channels_last: bool, spatial_dims: int):
    """`train.channels_last`: the layout for networks and batches (None: torch's default)."""
    if not channels_last:
        return None
    if spatial_dims == 3:
        return torch.channels_last_3d
    if spatial_dims == 2:
        return torch.channels_last
    raise ConfigError("train.channels_last applies to 2D and 3D pipelines only")


def to_memory_format(batch, fmt):
    """Image tensors of a batch (4D for channels_last, 5D for channels_last_3d) in `fmt`; the rest unchanged."""
    rank = 5 if fmt is torch.channels_last_3d else 4
    if torch.is_tensor(batch):
        return batch.contiguous(memory_format=fmt) if batch.dim() == rank and batch.is_floating_point() else batch
    if isinstance(batch, dict):
        return {k: to_memory_format(v, fmt) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_memory_format(v, fmt) for v in batch)
    return batch


def total_norm(grads: list) -> torch.Tensor | None:
    """The L2 norm of all gradients together, in float32 (None when there are none)."""
    if not grads:
        return None
    norms = torch._foreach_norm([g.detach().float() if g.dtype != torch.float32 else g.detach() for g in grads])
    return torch.linalg.vector_norm(torch.stack(norms))


def choose_data_path(request: str, dataset, device: torch.device, pipeline: str,
                     max_fraction: float = 0.25) -> tuple[bool, str]:
    """`train.data_on_device` -> (cut batches on the device?, a line for the log).

    auto: on CUDA when the dataset can (a PatchDataset or a dataset of them) and its volumes take at most
    `max_fraction` of the device's free memory; on: wherever the run is (a CPU too: tests), or a ConfigError;
    off: the host DataLoader."""
    from medgen.data.device_patches import resident_bytes, supports_device_batches

    host = "host (DataLoader)"
    if request == "off":
        return False, host
    if not supports_device_batches(dataset):
        if request == "on":
            raise ConfigError(f"train.data_on_device=on, but {pipeline}'s training dataset ({type(dataset).__name__}) "
                              "cannot be cut on the device (only patch datasets can); use auto or off")
        return False, host
    need = resident_bytes(dataset)
    if request == "auto":
        if device.type != "cuda":
            return False, host
        free, _ = torch.cuda.mem_get_info(device)
        if need > max_fraction * free:
            return False, (f"{host}: the volumes need {need / 2**30:.1f} GiB, more than {max_fraction:.0%} of the "
                           f"{free / 2**30:.1f} GiB free on {device}")
    return True, f"on {device} ({need / 2**20:.0f} MiB of volumes, batches cut there)"
