"""One owner of randomness: the config's seed, offset by rank; RNG states travel in checkpoints.

The saved states are plain data (CPU tensors, ints, floats, lists) so a checkpoint loads with
`torch.load(weights_only=True)`, and they are always restored from the CPU: `torch.set_rng_state` takes
only a CPU ByteTensor, so a state that went through `map_location="cuda"` (or any other device or dtype)
is brought back before use. CUDA generator states are saved only when CUDA is in use, and restored only
where CUDA exists (a GPU run resumed on a CPU-only machine has no CUDA generator to restore).
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from medgen.errors import MedgenError


def seed_everything(seed: int, rank: int = 0, deterministic: bool = False) -> int:
    """Seed python, numpy and torch with `seed + rank`; optionally force deterministic kernels."""
    effective = int(seed) + int(rank)
    random.seed(effective)
    np.random.seed(effective % 2**32)
    torch.manual_seed(effective)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return effective


def get_rng_state() -> dict:
    """The python, numpy, torch (and, when CUDA is in use, every CUDA device's) generator states."""
    version, internal, gauss = random.getstate()
    bit_generator, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [int(version), [int(v) for v in internal], gauss],
        "numpy": {"bit_generator": str(bit_generator), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def _byte_state(value, what: str) -> torch.Tensor:
    """A generator state as the CPU uint8 tensor torch wants, whatever device / type it was loaded as."""
    try:
        tensor = torch.as_tensor(value).detach().to("cpu")
    except (TypeError, ValueError, RuntimeError) as exc:
        raise MedgenError(f"checkpoint RNG state '{what}' is not a tensor of bytes ({type(value).__name__})") from exc
    if tensor.dtype != torch.uint8:
        if tensor.is_floating_point() or tensor.min() < 0 or tensor.max() > 255:
            raise MedgenError(f"checkpoint RNG state '{what}' holds values outside 0-255 ({tensor.dtype})")
        tensor = tensor.to(torch.uint8)
    return tensor.contiguous()


def set_rng_state(state: dict) -> None:
    """Restore what `get_rng_state` saved (also the older format with numpy's tuple state)."""
    py = state["python"]
    random.setstate((int(py[0]), tuple(int(v) for v in py[1]), py[2]))
    npst = state["numpy"]
    if isinstance(npst, dict):
        keys = np.asarray(torch.as_tensor(npst["keys"]).cpu().numpy(), dtype=np.uint32)
        np.random.set_state((npst["bit_generator"], keys, int(npst["pos"]), int(npst["has_gauss"]),
                             float(npst["cached_gaussian"])))
    else:
        np.random.set_state(npst)
    torch.set_rng_state(_byte_state(state["torch"], "torch"))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        n = min(len(cuda), torch.cuda.device_count())
        for i in range(n):
            torch.cuda.set_rng_state(_byte_state(cuda[i], f"cuda:{i}"), device=i)
