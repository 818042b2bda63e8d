"""From the names researchers give their images (T1.nii.gz, sub-01_T2w, 'AX FLAIR', channel 'CT') to
the dataset keys medgen's pipelines use (t1, t2, flair, ct, mask, lesion ...), for `medgen make-dataset`.

Only names that clearly denote one key are mapped; anything else is left to the user (`--key`,
`--rename`), because a wrong guess would silently train on the wrong contrast.
"""

from __future__ import annotations

import re

# medgen key -> names seen in the wild, compared lower-case without separators.
# BraTS: t1n / t1c / t2w / t2f; BIDS suffixes: T1w, T2w, FLAIR, PDw, ct, pet; open_ms_data: T1POST.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "t1": ("t1", "t1w", "t1n", "t1native", "t1pre", "mprage", "t1mprage"),
    "t1c": ("t1c", "t1ce", "t1gd", "t1post", "t1wce", "t1contrast", "t1postcontrast", "t1gad"),
    "t2": ("t2", "t2w"),
    "flair": ("flair", "t2f", "t2flair", "t2wflair"),
    "pd": ("pd", "pdw"),
    "ct": ("ct",),
    "mr": ("mr", "mri"),
    "pet": ("pet",),
    "low_dose": ("lowdose",),
    "full_dose": ("fulldose", "standarddose"),
    "mask": ("mask", "brainmask", "headmask"),
    "lesion": ("lesion", "lesions", "lesionmask", "lesionseg"),
    "seg": ("seg", "dseg", "segmentation", "labelmap", "segfusionsimplepseudogt"),
    "tissue": ("tissue", "tissues"),
}
_LOOKUP = {name: key for key, names in SYNONYMS.items() for name in names}
_CONTRAST_WORDS = {"post", "gd", "gad", "gado", "ce", "contrast"}


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def sanitize_key(name: str) -> str:
    """A usable key from any name: lower case, runs of other characters -> '_' ('T1 POST' -> 't1_post')."""
    key = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return key if key and not key[0].isdigit() and key != "id" else f"k_{key}"  # 'id' names the case


def key_for_name(name: str) -> str | None:
    """The medgen key a whole name denotes ('T1w' -> 't1', 'lesion_mask' -> 'lesion'), or None."""
    return _LOOKUP.get(_squash(name))


def key_from_text(text: str) -> str | None:
    """The key a free-text label such as a DICOM SeriesDescription denotes ('AX T1 POST GAD' -> 't1c',
    'sag 3D FLAIR' -> 'flair'), or None when it names none or several (a localizer, 'T1/T2 fusion')."""
    whole = key_for_name(text)
    if whole:
        return whole
    words = [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]
    found = {_LOOKUP[w] for w in words if w in _LOOKUP and _LOOKUP[w] not in ("mask", "seg")}
    if "t1" in found and (_CONTRAST_WORDS & set(words) or "+" in text):
        found = (found - {"t1"}) | {"t1c"}
    return found.pop() if len(found) == 1 else None
