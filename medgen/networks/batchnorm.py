"""Control over what a training-mode forward does to BatchNorm running statistics.

`bn_running_stats(net, update=False)` lets a forward pass normalise its batch by the batch's own statistics
(as any training-mode forward does) while leaving the running averages, which inference uses, untouched.
Used by `lesion_uda` to run one forward pass per domain and keep only the target domain's statistics for test
time (as AdaBN: Li et al., "Revisiting batch normalization for practical domain adaptation", 2016).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def bn_running_stats(net: torch.nn.Module, update: bool):
    """Let a train-mode forward update the BatchNorm running statistics (update=True) or leave them as they
    are (momentum 0: running = 1 * running + 0 * batch); the batch statistics normalise the batch either way."""
    if update:
        yield
        return
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (mom, nbt) in zip(bns, saved):
            m.momentum = mom
            m.num_batches_tracked.copy_(nbt)
