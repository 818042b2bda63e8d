"""Metrics of domain-adaptation results.

`gap_closed`: the fraction of the gap between a model trained on the source domain only and one trained on
target labels (the upper bound) that an adapted model closes on the target domain, as Kamnitsas et al. 2017
compare their settings (source-only, adversarial adaptation, target-supervised) by target Dice.
"""

from __future__ import annotations

import numpy as np

__all__ = ["gap_closed"]


def gap_closed(dice_source_only: float, dice_uda: float, dice_target_supervised: float) -> float:
    """(Dice_uda - Dice_source_only) / (Dice_target_supervised - Dice_source_only); NaN when there is no gap
    to close (target-supervised not above source-only: the ratio would mean nothing)."""
    gap = dice_target_supervised - dice_source_only
    if not np.isfinite(gap) or gap < 1e-9:
        return float("nan")
    return float((dice_uda - dice_source_only) / gap)
