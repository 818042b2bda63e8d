"""`medgen demo`: write the phantom datasets, check them, then run every pipeline's quick demo
(train -> infer -> evaluate on the phantoms, a few minutes on 2 CPU cores) and print its metrics."""

from __future__ import annotations

import time
from pathlib import Path

from medgen.errors import MedgenError


def write_phantoms(out: Path, seed: int = 0) -> dict[str, Path]:
    from medgen.data.phantoms import PHANTOM_KINDS, write_phantom_dataset

    import json

    paths = {}
    for kind in PHANTOM_KINDS:
        folder = out / kind
        if (folder / "dataset.json").exists():
            try:
                written = json.loads((folder / "dataset.json").read_text()).get("phantom") or {}
            except (OSError, ValueError, AttributeError):
                written = {}
            if written.get("seed") != seed:
                raise MedgenError(f"{folder} holds phantoms written with seed {written.get('seed')}, not {seed}; "
                                  "delete it or choose another --out")
            paths[kind] = folder / "dataset.json"
            print(f"phantom '{kind}': already at {folder}")
            continue
        t0 = time.perf_counter()
        paths[kind] = write_phantom_dataset(kind, folder, seed=seed)
        print(f"phantom '{kind}': wrote {folder} in {time.perf_counter() - t0:.1f} s")
    return paths


def run_demo(out="demo_data", runs="runs/demo", only=None, seed: int = 0) -> int:
    from medgen.data.check import main as check_main
    from medgen.registry import PIPELINES

    out, runs = Path(out), Path(runs)
    if seed != 0:  # each seed's phantoms and runs in their own folders: a seed never reuses another's data
        out, runs = out / f"seed{seed}", runs / f"seed{seed}"
    datasets = write_phantoms(out, seed)
    failures = 0
    for kind, path in datasets.items():
        print(f"\n== check-data {kind}")
        failures += check_main(str(path.parent)) != 0
    for name in PIPELINES.names():
        cls = PIPELINES.get(name)
        demo = getattr(cls, "demo", None)
        if demo is None or (only is not None and name not in only):
            continue
        print(f"\n== demo: {name}")
        t0 = time.perf_counter()
        try:
            result = demo(data_root=out, runs_root=runs, seed=seed)
        except MedgenError as exc:
            print(f"demo {name} failed: {exc}")
            failures += 1
            continue
        print(result.get("table", ""))
        print(f"{name}: {time.perf_counter() - t0:.0f} s, run in {result.get('run_dir')}")
    return 1 if failures else 0
