"""`MixedDomainDataset`: training items that pair a labelled source patch with an unlabelled target patch, so
every batch mixes the two domains equally (Kamnitsas et al. 2017, sec. 3), optionally with a second, unlabelled
source patch drawn the way target patches are drawn, for the domain discriminator (see the class docstring).
"""

from __future__ import annotations

import torch


class MixedDomainDataset(torch.utils.data.Dataset):
    """Item i = {"source": source[i], "target": target[i], "source_adv": source_adv[i]} (the last two optional).
    All are deterministic in i (each PatchDataset draws from its own seed), so resume and workers stay exact.

    Why `source_adv`: labelled source segments are lesion-centred half of the time (DeepMedic's class balance),
    target segments cannot be (no labels), so a discriminator shown those two would tell the domains apart by
    lesion content alone and, through the reversed gradient, teach the segmenter to put lesion-like features
    into every target segment (over-segmentation). `source_adv` holds source segments sampled like the target
    ones (inside the brain mask), so source and target differ only in the domain.

    Endless, like its patch datasets: `epoch_size` (what the trainer counts as one epoch) is the source's
    plus the target's."""

    def __init__(self, source, target=None, source_adv=None):
        self.source, self.target, self.source_adv = source, target, source_adv
        self.epoch_size = source.epoch_size + (target.epoch_size if target is not None else 0)

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        item = {"source": _tensors(self.source[i])}
        if self.target is not None:
            item["target"] = _tensors(self.target[i])
        if self.source_adv is not None:
            item["source_adv"] = _tensors(self.source_adv[i])
        return item


    def parts(self) -> dict:
        return {k: ds for k, ds in (("source", self.source), ("target", self.target),
                                    ("source_adv", self.source_adv)) if ds is not None}

    def patch_datasets(self) -> list:
        return list(self.parts().values())

    # ----- the device-resident path (medgen.data.device_patches): each part cut on the device ----------------
    def plan(self, i):
        return {k: ds.plan(i) for k, ds in self.parts().items()}

    def device_batch(self, plans, device) -> dict:
        """What `default_collate([self[i] ...])` gives (each part's tensors only), cut on `device`."""
        return {k: _device_tensors(ds.device_batch(plans[k], device)) for k, ds in self.parts().items()}


def _tensors(item: dict) -> dict:
    return {k: v for k, v in item.items() if torch.is_tensor(v)}


def _device_tensors(batch: dict) -> dict:
    """The keys `_tensors` keeps in an item: the patches and the centre (bools and ids are plain values there)."""
    return {k: v for k, v in batch.items() if torch.is_tensor(v) and k not in ("positive", "case_index")}
