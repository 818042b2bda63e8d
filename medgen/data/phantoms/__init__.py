"""Embedded procedural phantoms, so every pipeline runs on a fresh machine with no download.

    from medgen.data.phantoms import make_head, make_oct_bscan, make_expression, write_phantom_dataset
    write_phantom_dataset("head", "data/phantom_head")   # -> data/phantom_head/dataset.json

The generators are imported lazily (scipy / pandas load on first use) so `medgen list` stays quick.
See docs/phantoms.md for what each phantom models and its limits.
"""

from __future__ import annotations

from importlib import import_module

from medgen.data.phantoms.datasets import PHANTOM_KINDS, write_phantom_dataset

_LAZY = {
    "make_head": "medgen.data.phantoms.head",
    "make_anatomy": "medgen.data.phantoms.head",
    "head_affine": "medgen.data.phantoms.head",
    "TISSUE_NAMES": "medgen.data.phantoms.head",
    "make_oct_bscan": "medgen.data.phantoms.oct",
    "ANOMALIES": "medgen.data.phantoms.oct",
    "make_expression": "medgen.data.phantoms.expression",
    "phantom_dataset": "medgen.data.phantoms.cached",
}

__all__ = ["PHANTOM_KINDS", "write_phantom_dataset", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medgen.data.phantoms' has no attribute {name!r}")
