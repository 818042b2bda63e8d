"""The speed targets a `medgen gpu-check` run is judged against (docs/benchmarks.md, "Speed targets"), each a ratio
or a rate measured within the one run, at the paper configs on one H100 / H200.

A target is "met" or "not met" only on a CUDA run at the paper configs; elsewhere (CPU mode, a pipeline that
errored) it is "unmeasured", never guessed.
"""

from __future__ import annotations

THREE_D = ("lesion_uda", "mr_synthesis", "mr_to_ct", "pet_lowdose")


def _best_vs_plain(row: dict) -> tuple[float | None, str]:
    """The largest plain-step / step ratio over medgen's default step and every variant timed, and its name."""
    best, name = row.get("speedup_vs_plain"), "default"
    for v, vr in (row.get("variants") or {}).items():
        if vr.get("vs_plain") is not None and (best is None or vr["vs_plain"] > best):
            best, name = vr["vs_plain"], v
    return best, name


def _fmt(value, fmt="{:.3g}") -> str:
    return "-" if value is None else fmt.format(value)


def target_rows(report: dict) -> list[dict]:
    """One row per (target, pipeline): what was asked, what was measured, and the verdict."""
    env, settings = report["environment"], report["settings"]
    decisive = env.get("device") == "cuda" and settings.get("configs") == "paper"
    probe = (report.get("probe") or {}).get("bf16_tflops")
    rows = {r["pipeline"]: r for r in report.get("pipelines", [])}
    asked = set(settings.get("pipelines") or rows)
    out = []

    def add(pipeline, target, value, threshold, shown, note=""):
        if pipeline not in asked:
            return
        r = rows.get(pipeline)
        if r is None or "error" in r or value is None or not decisive:
            why = ("CPU mode / not the paper configs" if not decisive else
                   "not benched" if r is None else "bench failed" if "error" in r else "not measured")
            status = f"unmeasured ({why})"
        else:
            status = "met" if value >= threshold else "not met"
        out.append({"pipeline": pipeline, "target": target, "value": value, "threshold": threshold,
                    "measured": shown, "status": status, "note": note})

    for name, r in rows.items():
        margin = r.get("loader_margin")
        add(name, "loader >= 5x what the step consumes", margin, 5.0,
            f"{_fmt(margin)}x ({_fmt(r.get('data_batches_per_s'))} batches/s, "
            f"{r.get('batches_per_step', 1)} per step; {r.get('data_path', '?')})")
    for name, steps in (("mr_synthesis", 10.0), ("lesion_uda", 17.0)):
        r = rows.get(name, {})
        add(name, f">= {steps:g} steps/s", r.get("steps_per_s"), steps, f"{_fmt(r.get('steps_per_s'))} steps/s")
        fp32 = (r.get("variants") or {}).get("fp32", {}).get("vs_default")
        add(name, "bf16 step >= 1.5x the plain fp32 step", r.get("speedup_vs_plain"), 1.5,
            f"{_fmt(r.get('speedup_vs_plain'), '{:.2f}')}x" +
            (f" (bf16 alone, same settings: {1 / fp32:.2f}x)" if fp32 else ""))
    r = rows.get("oct_anogan", {})
    ceiling = ""
    if r.get("step_gflop") and probe:
        per_image = r["step_gflop"] / (r["batch_size"] * r.get("batches_per_step", 1))
        ceiling = (f"{per_image:.3g} GFLOP per image: at 100 % of the probe's {probe:.3g} TFLOP/s bf16 the chip "
                   f"could do at most {probe * 1e3 / per_image:,.0f} images/s")
    add("oct_anogan", ">= 20,000 images/s", r.get("samples_per_s"), 20000.0,
        f"{_fmt(r.get('samples_per_s'), '{:,.0f}')} images/s", ceiling)
    r = rows.get("pet_lowdose", {})
    best, which = _best_vs_plain(r)
    add("pet_lowdose", ">= 2x the plain fp32 eager step", best, 2.0, f"{_fmt(best, '{:.2f}')}x ({which})")
    for name in (n for n in THREE_D if n in asked):
        r = rows.get(name, {})
        pct = r.get("pct_of_bf16_peak")
        out.append({"pipeline": name, "target": "fraction of the bf16 peak printed", "value": pct, "threshold": None,
                    "measured": f"{_fmt(pct, '{:.2g}')} %",
                    "status": "printed" if pct is not None and decisive else
                    ("unmeasured (CPU mode / not the paper configs)" if not decisive else "unmeasured"),
                    "note": ""})
    return out


def format_targets(rows: list[dict]) -> list[str]:
    lines = ["| pipeline | target | measured | verdict |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['pipeline']} | {r['target']} | {r['measured']} | {r['status']} |")
    notes = [f"- {r['pipeline']}: {r['note']}" for r in rows if r.get("note")]
    return lines + ([""] + notes if notes else [])
