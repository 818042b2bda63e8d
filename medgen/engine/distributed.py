"""Data-parallel training under torchrun, over NCCL on GPUs and gloo on CPU.

medgen averages gradients itself (one flattened all-reduce per optimizer update) instead of wrapping
networks in DistributedDataParallel: GAN steps run the discriminator several times per update and freeze it
during the generator's step, which DDP's reducer only tolerates with `find_unused_parameters` and extra
synchronisation. Replicas start from rank 0's weights and apply identical averaged gradients, so they stay
identical; floating-point buffers (batch-norm statistics) are averaged once per step (see the trainer).
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from medgen.errors import MedgenError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_request: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_request != "cpu"
    if use_cuda and local_rank >= torch.cuda.device_count():
        # Checked before joining: NCCL cannot share one GPU between ranks, and a rank that fails after the
        # others joined leaves them waiting in their first collective.
        raise MedgenError(
            f"torchrun started local rank {local_rank} but this machine has {torch.cuda.device_count()} GPU(s): "
            f"use --nproc_per_node={torch.cuda.device_count()} or fewer, or train.device=cpu for CPU processes")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        # a gloo group left to the interpreter's teardown can abort a rank after all its work is done
        # ("terminate called without an active exception"): destroy it first, whoever called us
        atexit.register(cleanup)
    if use_cuda:
        torch.cuda.set_device(local_rank)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    if not (dist.is_available() and dist.is_initialized()):
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src)


def _all_reduce_mean(tensors: list, world_size: int) -> None:
    """Average tensors across ranks in place, in one flattened all-reduce."""
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t))
        offset += n


def average_gradients(params, world_size: int) -> None:
    """Average the gradients of `params` across ranks."""
    if world_size <= 1:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:  # every rank must send the same layout, so unused parameters count as zero
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    _all_reduce_mean([p.grad for p in params], world_size)


def average_buffers(module: torch.nn.Module, world_size: int) -> None:
    """Average floating-point buffers (batch-norm statistics) across ranks."""
    if world_size > 1:
        _all_reduce_mean([b for b in module.buffers() if b.is_floating_point()], world_size)


def reduce_sums(values: dict, device) -> dict:
    """Sum a dict of floats over ranks (used for validation metrics: sums and counts).

    Ranks may hold different keys (a rank with no validation case, a metric that was not finite on one
    rank), so the union of keys is agreed first: a rank that skipped the all-reduce would leave the others
    waiting in it for ever."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    keys = sorted(set().union(*gather_objects(sorted(values))))
    if not keys:
        return values
    tensor = torch.tensor([float(values.get(k, 0.0)) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return dict(zip(keys, tensor.tolist()))


def gather_objects(obj) -> list:
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
