"""Run the test suite in a subprocess (in parallel where pytest-xdist is installed) and read its JUnit XML:
pass / fail / error / skip counts, the failing test ids with their messages, and every skip reason.

Used by `medgen gpu-check`, where the suite runs on whatever device `train.device: auto` picks. Parallel
workers each get `cpus // workers` OpenMP / BLAS threads: without that cap every worker starts one thread per
core, and the oversubscribed machine makes ordinary tests pass per-test time limits.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from importlib.util import find_spec
from pathlib import Path

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def importable(name: str) -> bool:
    """Whether `import name` would find a module, without importing it."""
    if name in sys.modules:
        return sys.modules[name] is not None  # None: import blocked
    try:
        return find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def plan_workers(requested: int | None, cpus: int, xdist: bool) -> tuple[int, int]:
    """-> (xdist workers, threads per worker); 0 workers means a serial run (threads: torch's default, all cores).

    Default: up to 8 workers, two cores each. More workers than that only add CUDA contexts and start-up
    time on one GPU; fewer than two is a serial run."""
    if not xdist:
        return 0, cpus
    workers = min(8, cpus // 2) if requested is None else requested
    if workers < 2:
        return 0, cpus
    return workers, max(1, cpus // workers)


def run_suite(repo, log_path, pytest_args=(), workers: int | None = None, per_test_timeout: float = 300,
              timeout: float | None = None) -> dict:
    """Run `python -m pytest` in `repo` and summarise it; the whole console output goes to `log_path`.

    `pytest_args` are appended (paths, -k, -m ...). `per_test_timeout` applies where pytest-timeout is
    installed; `timeout` bounds the whole run: past it the run is interrupted (SIGINT, so pytest still
    writes its summary and XML), then killed."""
    repo, log_path = Path(repo), Path(log_path)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    xdist, timeout_plugin = importable("xdist"), importable("pytest_timeout")
    n, threads = plan_workers(workers, cpus, xdist)
    notes = []
    if not xdist:
        notes.append("serial: pytest-xdist is not installed")
    elif n == 0:
        notes.append(f"serial: {'--workers 0' if workers is not None else f'{cpus} CPU core(s)'}")
    if not timeout_plugin:
        notes.append("no per-test time limit: pytest-timeout is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "junit_family=xunit1",
               f"--junitxml={xml}"]
        if n:
            cmd += ["-n", str(n), "--dist", "loadfile"]  # by file: module-scoped fixtures are built once
        if timeout_plugin and per_test_timeout:
            cmd += ["--timeout", f"{per_test_timeout:g}"]
        cmd += list(pytest_args)
        env = dict(os.environ, MPLBACKEND="Agg")
        if n:
            env.update({var: str(threads) for var in THREAD_VARS})
        t0 = time.perf_counter()
        timed_out = False
        with open(log_path, "w", encoding="utf-8") as log:
            log.write("$ " + shlex.join(cmd) + "\n")
            log.flush()
            proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # its own process group: workers end with it
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                code = _interrupt(proc)
        result = {
            "command": "python " + shlex.join(cmd[1:]).replace(str(xml), "<junit.xml>"),
            "exit_code": code,
            "duration_s": time.perf_counter() - t0,
            "workers": n,
            "threads_per_worker": threads if n else None,
            "per_test_timeout_s": per_test_timeout if timeout_plugin else None,
            "notes": notes,
            "log": log_path.name,
        }
        if timed_out:
            notes.append(f"the whole run passed its {timeout:g} s limit and was interrupted")
        if xml.exists():
            result.update(read_junit(xml))
        else:
            result["error"] = f"pytest wrote no JUnit XML (exit code {code}); see {log_path.name}"
    result["summary"] = _last_summary_line(log_path)
    counted = summary_counts(result["summary"])
    if counted is not None:
        # pytest's own tally wins: a test cut off by an interruption appears in the XML as if it had passed
        result.update(counted)
    return result


def summary_counts(line: str | None) -> dict | None:
    """'2 failed, 10 passed, 1 skipped, 1 error in 3.3s' -> counts; None when there is no such line."""
    if not line:
        return None
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "xfailed": 0}
    words = {"error": "errors", "errors": "errors", **{k: k for k in counts}}
    for number, word in re.findall(r"(\d+) (\w+)", line.split(" in ")[0]):
        if word in words:
            counts[words[word]] = int(number)
    return counts


def _interrupt(proc: subprocess.Popen) -> int:
    """SIGINT to the run's process group (pytest writes its report), then SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGINT, 60), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            return proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def _last_summary_line(log_path: Path) -> str | None:
    """pytest's own last line, e.g. '3 failed, 330 passed, 12 skipped in 122.81s'."""
    lines = [ln.strip("= \n") for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines()]
    hits = [ln for ln in lines if " in " in ln and any(w in ln for w in ("passed", "failed", "error", "skipped",
                                                                         "no tests ran"))]
    return hits[-1] if hits else None


def _node_id(case: ET.Element) -> str:
    """pytest's node id from an xunit1 <testcase> (file, classname, name)."""
    name, classname, file = case.get("name", ""), case.get("classname", ""), case.get("file")
    if not file:
        return f"{classname}::{name}" if classname else name
    module = file[:-3].replace("/", ".") if file.endswith(".py") else file
    inner = classname[len(module) + 1:].replace(".", "::") if classname.startswith(module + ".") else ""
    return "::".join(p for p in (file, inner, name) if p)


def _first_line(text: str | None, limit: int = 300) -> str:
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    return line[:limit]


def read_junit(path) -> dict:
    """Counts, failing ids (with their first message line) and skip reasons from pytest's JUnit XML."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "xfailed": 0}
    failures, skips = [], []
    for case in ET.parse(path).getroot().iter("testcase"):
        test = _node_id(case)
        outcome = "passed"
        for child in case:
            if child.tag == "failure":
                outcome = "failed"
                failures.append({"test": test, "kind": "failed", "message": _first_line(child.get("message"))})
            elif child.tag == "error":
                counts["errors"] += 1
                outcome = "error" if outcome == "passed" else outcome
                failures.append({"test": test, "kind": "error", "message": _first_line(child.get("message"))})
            elif child.tag == "skipped":
                kind = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
                outcome = kind
                skips.append({"test": test, "kind": kind, "reason": _first_line(child.get("message"))})
        if outcome in ("passed", "failed", "skipped", "xfailed"):
            counts[outcome] += 1
    reasons: dict[str, int] = {}
    for s in skips:
        if s["kind"] == "skipped":
            reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
    return {**counts, "failures": failures, "skips": skips, "skip_reasons": reasons}
