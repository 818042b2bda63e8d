"""Unpaired image sets: two domains (say MR of some patients, CT of others) read from one dataset.json, and the
training items a translation method draws from them, one image of each domain, never a pair.

- `assign_domains(entries, key_a, key_b, domain_key)`: which domain ("a" or "b") each dataset entry belongs
  to. An entry's `domain` field decides when present; otherwise the key it holds; an entry holding both keys
  (a paired scan, as every head phantom) is used for ONE domain only, alternately A, B, A ... in the order the
  split lists them, so a method never sees both images of a subject.
- `DomainImages`: item i = one image of one domain as the networks see it: a 2D slice of a volume, a 2D image
  or a 3D patch, randomly cropped (or padded with the background value) to the patch size and randomly
  flipped; a pure function of (seed, i), so resumed training and DataLoader workers draw the same items.
- `UnpairedDataset`: item i = {"a": an A image, "b": a B image}, the two drawn independently.

Why not `medgen.data.patches.PatchDataset`: it crops aligned patches of several keys around one centre (paired
data); here every image stands alone, a 2D network reads slices of volumes, and a slice or volume smaller than
the patch is padded around its centre with the background, as the inference does (`medgen.inference.slicewise`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medgen.errors import DataError

DOMAINS = ("a", "b")


def assign_domains(entries: Sequence[dict], key_a: str, key_b: str, domain_key: str = "domain",
                   source=None) -> dict[str, str]:
    """{case id: "a" | "b"} for the entries of one split (see the module docstring); DataError naming `source`
    (the dataset.json) for an entry with an unknown domain, one whose domain's key is missing, or neither key."""
    out, turn = {}, 0
    for entry in entries:
        cid = str(entry.get("id"))
        has = {"a": key_a in entry, "b": key_b in entry}
        named = entry.get(domain_key) if domain_key else None
        if named is not None:
            dom = str(named).strip().lower()
            if dom not in DOMAINS:
                raise DataError(source, f"case '{cid}' has {domain_key}={named!r}: use 'a' (images of key '{key_a}') "
                                        f"or 'b' (images of key '{key_b}')")
            if not has[dom]:
                key = key_a if dom == "a" else key_b
                raise DataError(source, f"case '{cid}' is in domain {dom.upper()} ({domain_key} field) but has no "
                                        f"key '{key}'")
            out[cid] = dom
        elif has["a"] and has["b"]:  # a paired scan: one of its two images only, alternately
            out[cid] = DOMAINS[turn % 2]
            turn += 1
        elif has["a"] or has["b"]:
            out[cid] = "a" if has["a"] else "b"
        else:
            keys = ", ".join(k for k in entry if k != "id") or "none"
            raise DataError(source, f"case '{cid}' has neither '{key_a}' (domain A) nor '{key_b}' (domain B); "
                                    f"keys present: {keys}")
    return out


def _crop_or_pad(image: np.ndarray, size: Sequence[int], rng: np.random.Generator | None, pad_value: float) -> np.ndarray:
    """(C, *spatial) -> (C, *size): a random crop along axes longer than `size` (the paper's random crop; the
    centre when `rng` is None), the image centred and padded with `pad_value` along shorter ones."""
    out = np.full((image.shape[0], *size), pad_value, dtype=np.float32)
    src, dst = [slice(None)], [slice(None)]
    for n, s in zip(image.shape[1:], size):
        if n >= s:
            start = int(rng.integers(n - s + 1)) if rng is not None else (n - s) // 2
            src.append(slice(start, start + s))
            dst.append(slice(0, s))
        else:
            offset = (s - n) // 2
            src.append(slice(0, n))
            dst.append(slice(offset, offset + n))
    out[tuple(dst)] = image[tuple(src)]
    return out


class DomainImages(torch.utils.data.Dataset):
    """Images of one domain. `images`: (C, *spatial) float arrays (normalised, background at `pad_value`);
    `masks`: matching boolean arrays (or None): with `slice_axis` set, only slices that hold some of the mask
    are drawn. Item i = {"image": (C, *patch_size) tensor}: a uniformly drawn slice (2D network on volumes:
    `slice_axis` is the volume axis the slices cut), image or volume, randomly cropped / centred and padded to
    `patch_size`, flipped along its first spatial axis with probability 1/2 when `flip`. `epoch_size`: the
    number of distinct slices (or images, volumes) the domain holds."""

    def __init__(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None] | None, patch_size,
                 slice_axis: int | None = None, seed: int = 0, flip: bool = True, pad_value: float = -1.0,
                 length: int = 10**9):
        if not images:
            raise DataError(None, "DomainImages got no images")
        self.images = [np.ascontiguousarray(np.asarray(im, dtype=np.float32)) for im in images]
        self.patch_size = tuple(int(s) for s in patch_size)
        self.slice_axis, self.seed, self.flip, self.pad_value = slice_axis, int(seed), bool(flip), float(pad_value)
        self.length = int(length)
        masks = list(masks) if masks is not None else [None] * len(self.images)
        if slice_axis is None:
            self.items = [(i, None) for i in range(len(self.images))]
        else:
            self.items = []
            for i, (image, mask) in enumerate(zip(self.images, masks)):
                n = image.shape[1 + slice_axis]
                if mask is None:
                    self.items += [(i, k) for k in range(n)]
                else:
                    other = tuple(a for a in range(mask.ndim) if a != slice_axis)
                    held = np.flatnonzero(np.asarray(mask).any(axis=other))
                    self.items += [(i, int(k)) for k in held]
            if not self.items:
                raise DataError(None, "no slice of these images holds any foreground (every mask is empty)")
        self.epoch_size = len(self.items)

    def __len__(self) -> int:
        return self.length

    def image(self, index: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Item `index` of `items` cropped / padded (centred when `rng` is None), not flipped."""
        i, k = self.items[index]
        image = self.images[i]
        if k is not None:
            image = np.take(image, k, axis=1 + self.slice_axis)
        return _crop_or_pad(image, self.patch_size, rng, self.pad_value)

    def __getitem__(self, i: int) -> dict:
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, int(i)])
        out = self.image(int(rng.integers(len(self.items))), rng)
        if self.flip and rng.random() < 0.5:
            out = np.ascontiguousarray(out[:, ::-1])
        return {"image": torch.from_numpy(out)}


class UnpairedDataset(torch.utils.data.Dataset):
    """Item i = {"a": A image i, "b": B image i} from two `DomainImages` with their own seeds: the two images
    are independent (no pairing). Endless; `epoch_size` is the larger domain's (CycleGAN's epoch: one pass
    over the larger of the two image sets)."""

    def __init__(self, a: DomainImages, b: DomainImages):
        self.a, self.b = a, b
        self.epoch_size = max(a.epoch_size, b.epoch_size)

    def __len__(self) -> int:
        return min(len(self.a), len(self.b))

    def __getitem__(self, i: int) -> dict:
        return {"a": self.a[i]["image"], "b": self.b[i]["image"]}
