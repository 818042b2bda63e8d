"""Which dataset index each rank reads at each step, as a pure function of (seed, step, rank).

Because the indices (and, for patch datasets, the patches themselves) depend only on the global sample
counter, a resumed run reads exactly the batches an uninterrupted run would have read, with any number of
DataLoader workers.
"""

from __future__ import annotations

import numpy as np
import torch


class StepSampler(torch.utils.data.Sampler):
    """Endless index stream for one rank, starting at batch number `start_batch`.

    - Endless datasets (they declare `epoch_size`; item i is a fresh sample drawn from (seed, i), e.g. random
      patches): index = global sample counter.
    - Finite datasets: a fresh permutation per epoch, seeded by (seed, epoch), shared by all ranks; each
      rank takes its own slice of every global batch.
    """

    def __init__(self, dataset, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, start_batch: int = 0):
        self.procedural = getattr(dataset, "epoch_size", None) is not None
        self.n = len(dataset)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_batch = start_batch
        self._perm_epoch = -1
        self._perm = None

    def _index(self, counter: int) -> int:
        if self.procedural:
            return counter
        epoch, pos = divmod(counter, self.n)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        return int(self._perm[pos])

    def __iter__(self):
        batch = self.start_batch
        while True:
            base = (batch * self.world_size + self.rank) * self.batch_size
            for b in range(self.batch_size):
                yield self._index(base + b)
            batch += 1
