"""A seeded training / validation / test split of cases: grouped by subject, stratified by label.

Why our own: scikit-learn's splitters each do part of it (GroupShuffleSplit: groups, no strata;
StratifiedShuffleSplit: strata, no groups; StratifiedGroupKFold: both, but as k folds of equal size),
all two-way, and with the few subjects of a medical study their rounding leaves validation or test empty
(three subjects at 0.8 / 0.1 / 0.1 give 3 / 0 / 0). Here every subject's cases stay in one split, each
stratum is divided by largest remainders, and a split given a non-zero fraction gets at least one
subject whenever there are enough subjects; the caller decides what an empty split means.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

import numpy as np

from medgen.errors import ConfigError

SPLITS = ("training", "validation", "test")


def parse_fractions(text: str | Sequence[float]) -> tuple[float, float, float]:
    """'0.8,0.1,0.1' or '70,15,15' or (0.8, 0.1, 0.1) -> fractions summing to 1."""
    try:
        parts = [float(x) for x in (text.split(",") if isinstance(text, str) else text)]
    except (TypeError, ValueError):
        raise ConfigError(f"split must be three numbers (training, validation, test), e.g. 0.8,0.1,0.1; got {text!r}") from None
    if len(parts) != 3 or any(not np.isfinite(p) or p < 0 for p in parts) or sum(parts) <= 0:
        raise ConfigError(f"split must be three non-negative numbers (training, validation, test) with a "
                          f"positive sum, e.g. 0.8,0.1,0.1; got {text!r}")
    total = sum(parts)
    return tuple(p / total for p in parts)  # type: ignore[return-value]


def _largest_remainder(n: int, fractions: Sequence[float]) -> list[int]:
    raw = [n * f for f in fractions]
    counts = [int(np.floor(r)) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def split_cases(
    case_ids: Sequence[str],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    groups: Mapping[str, str] | None = None,
    strata: Mapping[str, str] | None = None,
    stratum_fractions: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, list[str]]:
    """Assign cases to training / validation / test; returns {split: sorted case ids}.

    groups: case -> subject; a subject's cases all go to one split (default: each case alone).
    strata: case -> label (a subject takes its cases' most common label); each label's subjects are
    divided by the fractions separately, so every split gets its share of each label.
    stratum_fractions: label -> fractions for that label only (e.g. OCT abnormal scans: (0, 0, 1)).
    The result depends only on the inputs and `seed`: subjects are sorted, then shuffled per label with
    numpy's default_rng(seed). A split with a non-zero fraction that rounding left empty takes one
    subject from the largest split, as long as that one keeps at least one.
    """
    fr = parse_fractions(fractions)
    ids = sorted(dict.fromkeys(str(c) for c in case_ids))
    group_of = {c: str((groups or {}).get(c, c)) for c in ids}
    members: dict[str, list[str]] = {}
    for c in ids:
        members.setdefault(group_of[c], []).append(c)
    label_of_group = {}
    for g, cs in members.items():
        votes = Counter(str((strata or {}).get(c, "")) for c in cs)
        label_of_group[g] = sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
    by_label: dict[str, list[str]] = {}
    for g in sorted(members):
        by_label.setdefault(label_of_group[g], []).append(g)

    rng = np.random.default_rng(seed)
    # per label: its shuffled subjects and how many go to each split
    plan = {}
    for label in sorted(by_label):
        gs = by_label[label]
        gs = [gs[i] for i in rng.permutation(len(gs))]
        f = parse_fractions(stratum_fractions[label]) if label in (stratum_fractions or {}) else fr
        plan[label] = (gs, _largest_remainder(len(gs), f), f)

    def total(i: int) -> int:
        return sum(p[1][i] for p in plan.values())

    for i in range(3):  # fill a split the fractions ask for but rounding left empty
        if total(i) or fr[i] == 0:
            continue
        donors = [j for j in range(3) if j != i and total(j) > 1]
        if not donors:
            continue
        j = max(donors, key=lambda d: (total(d), -d))
        candidates = [lab for lab, p in plan.items() if p[1][j] > 0 and p[2][i] > 0]
        if not candidates:
            continue
        lab = max(candidates, key=lambda lab: (plan[lab][1][j], lab))
        plan[lab][1][j] -= 1
        plan[lab][1][i] += 1

    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for gs, counts, _ in plan.values():
        start = 0
        for s, n in zip(SPLITS, counts):
            for g in gs[start:start + n]:
                out[s].extend(members[g])
            start += n
    return {s: sorted(v) for s, v in out.items()}
