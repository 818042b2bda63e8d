"""The shortcut check of anomaly evaluation: trivial image statistics (near-black fraction, mean intensity) score
the test set beside the model, and a model that does not beat one of them is warned about."""

import numpy as np

from medgen.data.cases import Case
from medgen.engine.commands import build_config
from medgen.engine.evaluation import compare_to_floors, floor_rows


def test_black_border_shortcut_is_flagged():
    cls, cfg = build_config("oct_anogan", None, [])
    p = cls(cfg)
    rng = np.random.default_rng(0)
    cases, model_rows = [], []
    for i in range(12):
        label = int(i >= 6)  # the abnormal scans come from another device: black side bands
        case = Case(id=f"c{i}", split="test", fields={"label": label, "dark_fraction": 0.05 + 0.3 * label
                                                      + 0.01 * rng.random(), "mean_intensity": 0.4})
        cases.append(case)
        model_rows.append(p.evaluate_case({"score": float(rng.normal(label * 0.8, 1.0))}, case))
    model = {"set_metrics": p.evaluate_set(model_rows)}
    floors = {}
    for name in ("random", "dark_fraction", "mean_intensity"):
        rows = [floor_rows(p, c)[name] for c in cases]
        floors[name] = {"set_metrics": p.evaluate_set(rows)}
    assert floors["dark_fraction"]["set_metrics"]["roc_auc"] == 1.0  # the statistic alone separates the classes
    warnings = compare_to_floors(p, model, floors)
    assert any(w.startswith("roc_auc") and "'dark_fraction'" in w for w in warnings), warnings
    # a model that separates the classes perfectly too is not beaten by it... but ties are still reported
    perfect = {"set_metrics": p.evaluate_set([dict(r, score=float(r["label"])) for r in model_rows])}
    assert any("'dark_fraction'" in w for w in compare_to_floors(p, perfect, floors))
    assert not any("'random'" in w or "'mean_intensity'" in w for w in compare_to_floors(p, perfect, floors))
