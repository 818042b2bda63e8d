"""The markdown page of a `medgen gpu-check` report (the JSON beside it holds every number unrounded)."""

from __future__ import annotations


def _num(value, fmt: str = "{:.3g}") -> str:
    return "-" if value is None else fmt.format(value)


def _environment_rows(report: dict) -> list[str]:
    env, probe, settings = report["environment"], report.get("probe") or {}, report["settings"]
    if env["device"] == "cuda":
        device = (f"{env['device_name']} ({env['device_memory_gib']} GiB, {env['multiprocessors']} SMs, compute "
                  f"{env['compute_capability']}; {env['device_count']} visible), driver {env.get('driver') or '?'}; "
                  f"host: {env['cpu']}, {env['cpu_cores']} cores")
    else:
        device = f"{env['device_name']}, no CUDA device"
    commit = env["commit"] + (" (uncommitted changes)" if env.get("dirty") else "") + f" [{env['source']}]"
    missing = ", ".join(f"{d} ({env['packages'][d]['needed_for']})" for d in env["missing"]) or "none"
    versions = (f"medgen {env['medgen']}, torch {env['torch']}, CUDA {env['cuda'] or '-'}, "
                f"cuDNN {env['cudnn'] or '-'}, MONAI {env['monai'] or 'MISSING'}, Python {env['python']}")
    rows = [("device", device), ("date", env["date"]), ("commit", commit), ("versions", versions),
            ("missing packages", missing)]
    if probe:
        rates = f"bf16 {_num(probe['bf16_tflops'])}, fp32 {_num(probe['fp32_tflops'])}"
        if probe.get("tf32_tflops"):
            rates += f", TF32 {_num(probe['tf32_tflops'])}"
        rows.append(("dense matmul probe", f"{probe['size']}^3 products: {rates} TFLOP/s"))
    if env["device"] == "cuda":  # what the "fp32" steps really run: torch's defaults keep convolutions on TF32
        tf32 = ("on: fp32 convolutions run on TF32 tensor cores" if env["cudnn_allow_tf32"]
                else "off: fp32 convolutions run in full fp32")
        rows.append(("fp32 settings", f"matmul precision {env['float32_matmul_precision']}; cuDNN TF32 {tf32}"))
    which = "configs/<name>.yaml (paper)" if settings["configs"] == "paper" else "configs/<name>_smoke.yaml (CPU mode)"
    rows.append(("pipelines run at", f"{which}; {settings['steps']} timed steps after {settings['warmup']} warm-up; "
                                     f"whole-volume inference {settings['volume']}^3" +
                 (f"; overrides {' '.join(settings['overrides'])}" if settings["overrides"] else "")))
    state = f"complete in {report['duration_s']:.0f} s" if report.get("complete") else "INCOMPLETE (stopped part-way)"
    rows.append(("run", state))
    return ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]


def _tests_section(tests: dict | None, device: str) -> list[str]:
    lines = [f"## Test suite on {device}", ""]
    if tests is None:
        return lines + ["Not run (--skip-tests).", ""]
    if tests.get("error") and tests.get("passed") is None:
        return lines + [f"**Error:** {tests['error']}", ""]
    counts = ", ".join(f"{tests.get(k, 0)} {k}" for k in ("passed", "failed", "errors", "skipped", "xfailed"))
    how = (f"{tests['workers']} workers x {tests['threads_per_worker']} thread(s) each (pytest-xdist)"
           if tests["workers"] else "serial")
    limit = f", per-test limit {tests['per_test_timeout_s']:g} s" if tests.get("per_test_timeout_s") else ""
    lines += [f"**{counts}** in {tests['duration_s']:.0f} s; {how}{limit}."]
    lines += [f"Note: {n}." for n in tests.get("notes", [])]
    lines += ["", f"Command: `{tests['command']}`; full output: `{tests['log']}`.", ""]
    if tests.get("failures"):
        lines += ["Failing:", ""]
        lines += [f"- `{f['test']}` ({f['kind']}): {f['message']}" for f in tests["failures"]]
        lines.append("")
    if tests.get("skip_reasons"):
        lines += ["Skip reasons:", ""]
        lines += [f"- {reason} ({n})" for reason, n in sorted(tests["skip_reasons"].items(), key=lambda kv: -kv[1])]
        lines.append("")
    return lines


def _hours(h) -> str:
    if h is None:
        return "-"
    return f"{h:.1f} h" if h >= 1 else f"{h * 60:.0f} min"


def _pipeline_rows(rows: list[dict], device: str) -> list[str]:
    memory = "peak GPU MB" if device == "cuda" else "peak RSS MB"
    header = ["pipeline", "config", "batch x patch", "amp", "steps/s", "samples/s", "speedup over fp32",
              "loader batches/s (margin)", "GFLOP/step", "TFLOP/s (amp / fp32)", "% of bf16 peak", "inference",
              memory, "whole training"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes = []
    for r in rows:
        if "error" in r:
            cells = [r["pipeline"], r.get("config", "-"), "error: " + " ".join(r["error"])[:120]] + [""] * 11
            out.append("| " + " | ".join(cells) + " |")
            continue
        patch = r.get("patch")
        size = f"{r['batch_size']} x {'x'.join(map(str, patch))}" if patch else str(r["batch_size"])
        amp = {"torch.bfloat16": "bf16", "torch.float16": "fp16", "None": "off"}.get(r.get("amp"), r.get("amp"))
        if "volume_inference_s" in r:
            infer = f"{r['volume_inference_s']:.2f} s ({r['volume']}^3)"
        elif "case_inference_s" in r:
            infer = f"{r['case_inference_s']:.3g} s (one case)"
        else:
            infer = "-"
        tflops = (f"{_num(r.get('tflops'))} / {_num(r.get('tflops_fp32'))}" if r.get("tflops") is not None else "-")
        loader = _num(r["data_batches_per_s"]) + (f" ({r['loader_margin']:.2g}x)" if r.get("loader_margin") else "")
        whole = (f"{r['paper_steps']} steps: {_hours(r.get('projected_train_h'))}" if r.get("paper_steps") else "-")
        cells = [r["pipeline"], r["config"], size, amp, _num(r["steps_per_s"]), _num(r.get("samples_per_s")),
                 _num(r.get("speedup_vs_plain"), "{:.2f}x"), loader,
                 _num(r.get("step_gflop"), "{:.4g}"), tflops,
                 _num(r.get("pct_of_bf16_peak"), "{:.2g}"), infer, _num(r["peak_memory_mb"], "{:.0f}"), whole]
        out.append("| " + " | ".join(cells) + " |")
        if r.get("flops_note") or r.get("flops_error"):
            said = (r.get("flops_note"), r.get("flops_error"))
            notes.append(f"- {r['pipeline']}: " + "; ".join(x for x in said if x))
        if r.get("data_path"):
            host = (f"; the host loader of the first GPU run: {r['host_loader_batches_per_s']:.3g} batches/s"
                    if r.get("host_loader_batches_per_s") else "")
            notes.append(f"- {r['pipeline']}: data {r['data_path']}{host}")
        if r.get("loader_is_bottleneck"):
            notes.append(f"- {r['pipeline']}: the data loader ({r['data_batches_per_s']:.3g} batches/s) is slower than "
                         "the training step consumes")
    return out + ([""] + notes if notes else [])


def _variant_rows(rows: list[dict]) -> list[str]:
    """Settings timed on the same batches as medgen's step: steps/s and ratios."""
    from medgen.bench import VARIANTS

    lines = []
    for r in rows:
        for name, v in (r.get("variants") or {}).items():
            if "error" in v:
                lines.append(f"| {r['pipeline']} | {name} | error: {v['error'][:120]} | | | |")
                continue
            lines.append(f"| {r['pipeline']} | {name} | {_num(1 / v['step_s'])} | {_num(v['vs_default'], '{:.2f}x')} | "
                         f"{_num(v.get('vs_plain'), '{:.2f}x')} | {_num(v.get('compile_s'), '{:.0f} s')} |")
    if not lines:
        return []
    what = "; ".join(f"{k}: {why}" for k, (_, why) in VARIANTS.items())
    return (["## Settings compared (same batches, same process)", "",
             "| pipeline | setting | steps/s | vs medgen's step | vs plain fp32 | compile time |", "|---|---|---|---|---|---|"]
            + lines + ["", what + ".", ""])


def _profile_rows(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        for which, ops in (r.get("profile") or {}).items():
            lines += [f"### {r['pipeline']}: {'medgen' if which == 'default' else which} step", "",
                      "| operator | ms per step | calls per step | share |", "|---|---|---|---|"]
            lines += [f"| `{o['name']}` | {o['self_ms_per_step']:.3g} | {o['calls_per_step']:.0f} | "
                      f"{100 * o['share']:.0f} % |" for o in ops]
            lines.append("")
    return (["## Where the step's time goes (torch.profiler, self time)", ""] + lines) if lines else []


def format_report(report: dict) -> str:
    env = report["environment"]
    lines = [f"# medgen gpu-check: {env['device_name']}, {env['date'][:10]}", ""]
    lines += _environment_rows(report) + [""]
    lines += _tests_section(report.get("tests"), env["device"])
    lines += ["## Pipelines (`medgen bench`, one subprocess each)", ""]
    if report["pipelines"]:
        lines += _pipeline_rows(report["pipelines"], env["device"])
    else:
        lines.append("None measured yet." if not report.get("complete") else "None asked for.")
    lines += ["", "steps/s: full training steps (critic and generator updates) with medgen's settings (amp column: "
              "bf16 autocast on CUDA by default; fused optimizers, cuDNN autotuning). samples/s: samples through "
              "the step (all critic and generator batches). speedup over fp32: the same step in plain fp32 eager "
              "(default optimizer kernels, no autotuning), time ratio. loader: the trainer's own loader (batches "
              "cut on the device where train.data_on_device chose it), its margin = batches made / batches the "
              "step consumes. GFLOP/step: torch FlopCounterMode (matmul / convolution, forward and backward; "
              "elementwise work uncounted). TFLOP/s: GFLOP/step over the step time, medgen step / fp32 step. "
              "% of bf16 peak: the medgen step's rate over the probe's bf16 rate. whole training: the config's "
              "full length at these rates (step and loader time added).", ""]
    lines += _variant_rows(report["pipelines"])
    lines += _profile_rows(report["pipelines"])
    from medgen.gpu_targets import format_targets, target_rows

    lines += ["## Speed targets (docs/benchmarks.md)", ""] + format_targets(report.get("targets")
                                                                              or target_rows(report)) + [""]
    return "\n".join(lines)
