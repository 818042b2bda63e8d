"""`medgen demo`: write the phantom datasets, check them (one line each), then run every pipeline's quick demo:
train -> infer -> evaluate on its phantom with the settings in the pipeline's `demo.yaml`, and print one
short table per pipeline: each run beside the pipeline's baselines and floors on the same test cases, with a
one-line verdict. Everything a step prints goes to `<runs>/<pipeline>/demo.log`.

The pipelines' demos are independent, so `jobs` of them run at once, each in its own process (`spawn`: a fresh
interpreter, no state shared with the parent) on one torch thread (each demo.yaml sets `train.threads=1`; on two
cores, two single-threaded processes finish sooner than one process on two threads, whose OpenMP threads wait on
each other). The tables are printed in the pipelines' order whatever order they finish in.

`demo.yaml` (package data beside the pipeline's method; safe YAML, plain data only):

| key | meaning |
|---|---|
| `description` | one line shown above the table |
| `common` | config overrides for every run (the runner adds the phantom folder, output root and seed) |
| `runs` | a list of `{name, overrides}`: the runs to train, in order |
| `baselines` | the pipeline's baselines to fit and show (default: none; fitting some takes minutes) |
| `floors` | the floors to show (default: all the pipeline scores) |
| `metrics` | the columns to show (default: every metric) |
| `verdict` | `{metric, mode}` the verdict compares (default: the pipeline's key metric) |
| `where` | `{field: value}`: score only the test cases whose dataset.json fields match |
| `gap_closed` | `{metric, low, high, run}`: the fraction of the gap between runs `low` and `high` that `run` closes |
| `note` | shown under the table: what a demo-sized run cannot show, and the benchmark that does |
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from importlib import resources
from pathlib import Path

from medgen.errors import ConfigError, MedgenError

DEMO_KEYS = {"description", "common", "runs", "baselines", "floors", "metrics", "verdict", "where", "gap_closed",
             "note"}


def demo_spec(cls) -> dict | None:
    """The pipeline's demo.yaml as a dict (None when it has none), checked against DEMO_KEYS."""
    import yaml

    package = cls.__module__.rsplit(".", 1)[0]
    try:
        path = resources.files(package) / "demo.yaml"
        if not path.is_file():
            return None
        text = path.read_text()
    except ModuleNotFoundError:
        return None
    where = f"{package}/demo.yaml"
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(sorted(DEMO_KEYS))}")
    unknown = set(spec) - DEMO_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(DEMO_KEYS))}")
    runs = spec.get("runs") or []
    if not runs or not all(isinstance(r, dict) and r.get("name") for r in runs):
        raise ConfigError(f"{where}: `runs` must be a non-empty list of {{name, overrides}}")
    unknown_baselines = set(spec.get("baselines") or []) - set(cls.baselines)
    if unknown_baselines:
        raise ConfigError(f"{where}: {cls.name} has no baseline(s) {sorted(unknown_baselines)} "
                          f"(it declares {list(cls.baselines)})")
    return spec


def write_phantoms(out: Path, seed: int = 0) -> dict[str, Path]:
    """Every embedded phantom at the generator's defaults under `out/<kind>` (reused when already there)."""
    from medgen.data.phantoms import PHANTOM_KINDS, write_phantom_dataset

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
        else:
            write_phantom_dataset(kind, folder, seed=seed)
        paths[kind] = folder / "dataset.json"
    return paths


def run_pipeline_demo(cls, spec: dict, data_root: Path, runs_root: Path, seed: int = 0) -> dict:
    """Train, predict and evaluate each run of the spec; returns {"table", "verdict", "lines", "seconds"}."""
    from medgen.engine.commands import evaluate, infer, train

    base = [*map(str, spec.get("common") or []), f"data.phantom_dir={data_root}", f"output.root={runs_root}",
            f"train.seed={seed}"]
    where = {str(k): str(v) for k, v in (spec.get("where") or {}).items()}
    summaries, first = {}, None
    t0 = time.perf_counter()
    for i, run in enumerate(spec["runs"]):
        overrides = base + [*map(str, run.get("overrides") or []), f"output.name=demo_{run['name']}"]
        result = train(cls.name, None, overrides, overwrite=True)
        predictions = Path(result["run_dir"]) / "predictions"
        infer(result["run_dir"], split="test", out=predictions, overwrite=True, device="auto")
        evaluation = evaluate(predictions, overwrite=True, baselines=(spec.get("baselines") or []) if i == 0 else [],
                              where=where)
        summaries[run["name"]] = evaluation["summary"]
        if first is None:
            first = evaluation["summary"]
    methods = dict(summaries)
    methods.update({f"baseline: {k}": v for k, v in first.get("baselines", {}).items()})
    shown_floors = spec.get("floors")
    methods.update({f"floor: {k}": v for k, v in first.get("floors", {}).items()
                    if shown_floors is None or k in shown_floors})
    verdict_spec = spec.get("verdict") or {}
    metric = verdict_spec.get("metric") or _key_metric(cls, first)
    mode = verdict_spec.get("mode") or cls.key_metric_mode
    lines = []
    if spec.get("gap_closed"):
        lines.append(gap_closed_line(spec["gap_closed"], summaries))
    return {"methods": methods, "metric": metric, "mode": mode, "verdict": verdict(summaries, methods, metric, mode),
            "lines": lines, "seconds": time.perf_counter() - t0}


def _key_metric(cls, summary: dict) -> str:
    key = cls.key_metric if isinstance(cls.key_metric, str) else None
    return key if key and (key in summary.get("metrics", {}) or key in summary.get("set_metrics", {})) else next(
        iter(summary.get("set_metrics") or summary.get("metrics") or {"-": None}))


def value_of(summary: dict, metric: str) -> float | None:
    v = (summary.get("set_metrics") or {}).get(metric)
    if v is None:
        v = ((summary.get("metrics") or {}).get(metric) or {}).get("mean")
    return v if v is not None and math.isfinite(v) else None


def verdict(runs: dict, methods: dict, metric: str, mode: str) -> str:
    """One line: the best run on `metric` against the best baseline and the best floor."""
    def best(items):
        scored = [(n, value_of(s, metric)) for n, s in items if value_of(s, metric) is not None]
        if not scored:
            return None, None
        return (max if mode == "max" else min)(scored, key=lambda t: t[1])

    run, mine = best(runs.items())
    if run is None:
        return f"no run has a {metric} to compare"
    parts = []
    for kind in ("baseline", "floor"):
        name, theirs = best([(k, v) for k, v in methods.items() if k.startswith(kind + ": ")])
        if name is None:
            continue
        beats = mine > theirs if mode == "max" else mine < theirs
        parts.append(f"{'beats' if beats else 'does NOT beat'} the best {kind} {name.split(': ', 1)[1]} "
                     f"({theirs:.4g})")
    return f"{run} ({metric} {mine:.4g}) " + (" and ".join(parts) if parts else "has nothing to compare with")


def gap_closed_line(spec: dict, runs: dict) -> str:
    from medgen.metrics.domain_adaptation import gap_closed

    metric = spec.get("metric", "dice")
    values = [value_of(runs.get(spec[k], {}), metric) for k in ("low", "run", "high")]
    if None in values:
        return f"fraction of the {metric} gap closed: not computable (a run has no {metric})"
    low, mid, high = values
    g = gap_closed(low, mid, high)
    said = "nan (the two reference runs score the same)" if not math.isfinite(g) else f"{g:.2f}"
    return (f"fraction of the {metric} gap between {spec['low']} ({low:.3g}) and {spec['high']} ({high:.3g}) "
            f"closed by {spec['run']} ({mid:.3g}): {said}")


def _demo_in_log(name: str, data_root: Path, runs_root: Path, seed: int, log: Path) -> dict:
    """One pipeline's demo with everything it prints in `log`: its result, or {"error": message}."""
    from medgen.registry import PIPELINES

    cls = PIPELINES.get(name)
    # a worker process of its own: its file descriptors 1 and 2 are pointed at the log, so what the trainer's
    # logging handlers, warnings and libraries write lands there too, not only Python-level prints
    with open(log, "w") as fh:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            return run_pipeline_demo(cls, demo_spec(cls), data_root, runs_root, seed)
        except MedgenError as exc:
            return {"error": str(exc)}
        finally:
            sys.stdout.flush()
            sys.stderr.flush()


def default_jobs() -> int:
    """Two demos at once where there are two cores or more (each runs on one thread)."""
    return max(1, min(2, os.cpu_count() or 1))


def run_demo(out="demo_data", runs="runs/demo", only=None, seed: int = 0, jobs: int | None = None) -> int:
    from medgen.data.check import main as check_main
    from medgen.engine.evaluation import methods_table
    from medgen.registry import PIPELINES

    out, runs = Path(out), Path(runs)
    if seed != 0:  # each seed's phantoms and runs in their own folders: a seed never reuses another's data
        out, runs = out / f"seed{seed}", runs / f"seed{seed}"
    t_all = time.perf_counter()
    datasets = write_phantoms(out, seed)
    failures = 0
    print(f"phantoms in {out} ({time.perf_counter() - t_all:.0f} s); check-data:")
    for kind, path in datasets.items():
        failures += check_main(str(path.parent), summary=True) != 0
    todo = []
    for name in PIPELINES.names():
        if only is not None and name not in only:
            continue
        spec = demo_spec(PIPELINES.get(name))
        if spec is not None:
            (runs / name).mkdir(parents=True, exist_ok=True)
            todo.append((name, spec))
    jobs = max(1, min(jobs or default_jobs(), len(todo) or 1))
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_demo_in_log, name, out, runs, seed, runs / name / "demo.log") for name, _ in todo]
        for (name, spec), future in zip(todo, futures):
            print(f"\n== {name}: {spec.get('description', '')}".rstrip(), flush=True)
            result = future.result()
            if "error" in result:
                print(f"FAILED: {result['error']} (details: {runs / name / 'demo.log'})")
                failures += 1
                continue
            print(methods_table(result["methods"], key_metric=result["metric"], metrics=spec.get("metrics")))
            for line in result["lines"]:
                print(line)
            print(f"verdict: {result['verdict']}")
            if spec.get("note"):
                print(f"note: {' '.join(str(spec['note']).split())}")
            print(f"({result['seconds']:.0f} s; runs and log under {runs / name})", flush=True)
    print(f"\ndemo finished in {time.perf_counter() - t_all:.0f} s ({jobs} demo(s) at a time)"
          + (f" with {failures} failure(s)" if failures else ""))
    return 1 if failures else 0
