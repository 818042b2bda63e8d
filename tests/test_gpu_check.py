"""`medgen gpu-check` on whatever device runs the suite (the CPU in CI): its report files, the test-suite
summary it reads, and the parts that decide what runs."""

import json
import sys
import time

from medgen.cli import main
from medgen.gpu_check import derive_rates, environment, git_commit, repo_root, run_benches
from medgen.gpu_targets import target_rows
from medgen.suite_run import plan_workers, run_suite, summary_counts

MIXED = '''
import pytest
def test_ok(): pass
def test_bad(): assert 1 == 2, "one is not two"
@pytest.mark.skip(reason="needs a unicorn")
def test_skip(): pass
@pytest.mark.xfail(reason="known")
def test_xf(): assert 0
@pytest.fixture
def broken(): raise RuntimeError("setup broke")
def test_err(broken): pass
class TestK:
    @pytest.mark.parametrize("x", [1, 2])
    def test_p(self, x): assert x == 1
'''


def test_suite_run_reads_counts_failing_ids_and_skip_reasons(tmp_path):
    (tmp_path / "test_mixed.py").write_text(MIXED)
    r = run_suite(tmp_path, tmp_path / "log.txt", ["test_mixed.py"], workers=0)
    assert {k: r[k] for k in ("passed", "failed", "errors", "skipped", "xfailed")} == \
        {"passed": 2, "failed": 2, "errors": 1, "skipped": 1, "xfailed": 1}
    assert r["exit_code"] == 1 and r["workers"] == 0
    assert {(f["test"], f["kind"]) for f in r["failures"]} == {
        ("test_mixed.py::test_bad", "failed"), ("test_mixed.py::TestK::test_p[2]", "failed"),
        ("test_mixed.py::test_err", "error")}
    assert "one is not two" in next(f["message"] for f in r["failures"] if f["test"].endswith("test_bad"))
    assert r["skip_reasons"] == {"needs a unicorn": 1}
    assert r["summary"].startswith("2 failed, 2 passed, 1 skipped, 1 xfailed, 1 error")
    assert "test_bad" in (tmp_path / "log.txt").read_text()


def test_workers_and_threads_never_oversubscribe():
    assert plan_workers(None, 16, xdist=True) == (8, 2)  # H100 / H200 hosts: 8 workers x 2 threads
    assert plan_workers(None, 64, xdist=True) == (8, 8)
    assert plan_workers(None, 2, xdist=True) == (0, 2)  # one worker is no parallelism: serial
    assert plan_workers(None, 16, xdist=False) == (0, 16)
    assert plan_workers(3, 16, xdist=True) == (3, 5) and plan_workers(0, 16, xdist=True) == (0, 16)


def test_summary_line_counts():
    assert summary_counts("2 failed, 10 passed, 1 skipped, 3 errors, 4 warnings in 3.3s") == \
        {"passed": 10, "failed": 2, "errors": 3, "skipped": 1, "xfailed": 0}
    assert summary_counts("no tests ran in 0.1s") == dict.fromkeys(("passed", "failed", "errors", "skipped",
                                                                    "xfailed"), 0)
    assert summary_counts(None) is None


def test_rates_are_shares_of_the_probe():
    row = derive_rates({"step_gflop": 500.0, "step_s": 0.01, "plain_step_s": 0.02}, {"bf16_tflops": 100.0})
    assert (row["tflops"], row["tflops_fp32"], row["pct_of_bf16_peak"]) == (50.0, 25.0, 50.0)
    assert "tflops" not in derive_rates({"step_gflop": None, "step_s": 0.01}, {"bf16_tflops": 100.0})


def test_environment_names_missing_packages_and_commit(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # as on a machine without it
    monkeypatch.delenv("MEDGEN_COMMIT", raising=False)
    env = environment(repo_root())
    assert "SimpleITK" in env["missing"] and env["packages"]["SimpleITK"]["installed"] is False
    assert env["packages"]["torch"]["installed"] and env["torch"] and env["python"] and env["date"].endswith("Z")
    assert git_commit(tmp_path) == {"commit": "unknown", "source": "no git checkout"}  # a copy without .git
    monkeypatch.setenv("MEDGEN_COMMIT", "abc1234")
    assert git_commit(tmp_path)["commit"] == "abc1234"


def test_time_limit_stops_new_benches(tmp_path):
    rows = []
    run_benches(["toy_denoise"], "smoke", repo_root(), 1, 0, 0, [], {}, 60, time.monotonic(), tmp_path, rows.append)
    assert rows == [{"pipeline": "toy_denoise", "config": "defaults",
                     "error": ["not run: the --time-limit was reached"]}]


def test_unknown_pipeline_fails_before_anything_runs(tmp_path, capsys):
    assert main(["gpu-check", "--out", str(tmp_path), "--pipelines", "no_such"]) == 2
    assert "unknown pipeline 'no_such'" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_gpu_check_writes_json_and_markdown(tmp_path, monkeypatch, capsys):
    """The command end to end, small: one test file, the toy pipeline's bench, a small matmul probe."""
    monkeypatch.setenv("MEDGEN_COMMIT", "0123abc")
    code = main(["gpu-check", "--out", str(tmp_path), "--pipelines", "toy_denoise", "--configs", "smoke",
                 "--pytest-args=tests/test_config.py", "--workers", "0", "--probe-size", "128", "--steps", "2",
                 "--warmup", "1", "--volume", "0"])
    assert code == 0, capsys.readouterr()
    (js,) = tmp_path.glob("gpu-check_*.json")
    (md,) = tmp_path.glob("gpu-check_*.md")
    assert (tmp_path / f"{js.stem}_pytest.log").exists()
    report = json.loads(js.read_text())
    env = report["environment"]
    device = "cpu" if env["device"] == "cpu" else "nvidia"  # the name carries the device
    assert js.name.startswith(f"gpu-check_{env['date'][:10].replace('-', '')}-") and device in js.name.lower()
    for key in ("device_name", "torch", "cuda", "cudnn", "monai", "python", "date", "commit", "missing", "packages"):
        assert key in env, key
    assert env["commit"] == "0123abc" and report["complete"] is True
    assert report["probe"]["size"] == 128 and report["probe"]["bf16_tflops"] > 0
    tests = report["tests"]
    assert tests["passed"] > 0 and tests["failed"] == tests["errors"] == 0 and tests["failures"] == []
    (row,) = report["pipelines"]
    assert row["pipeline"] == "toy_denoise" and "error" not in row, row
    for key in ("steps_per_s", "speedup_vs_plain", "data_batches_per_s", "step_gflop", "tflops", "tflops_fp32",
                "pct_of_bf16_peak", "peak_memory_mb"):
        assert row[key] > 0, key
    text = md.read_text()
    assert env["device_name"] in text and "0123abc" in text and f"{tests['passed']} passed" in text
    assert "| toy_denoise | defaults |" in text and "% of bf16 peak" in text


def test_targets_judged_only_on_cuda_at_the_paper_configs():
    rows = [{"pipeline": "mr_synthesis", "steps_per_s": 12.0, "speedup_vs_plain": 1.2, "loader_margin": 6.0,
             "data_batches_per_s": 72.0, "batches_per_step": 1, "pct_of_bf16_peak": 9.0,
             "variants": {"fp32": {"vs_default": 0.5}}},
            {"pipeline": "pet_lowdose", "steps_per_s": 80.0, "speedup_vs_plain": 1.3, "loader_margin": 3.0,
             "data_batches_per_s": 240.0, "variants": {"compile": {"vs_plain": 2.4, "step_s": 0.01}}},
            {"pipeline": "oct_anogan", "samples_per_s": 9000.0, "step_gflop": 16000.0, "batch_size": 64,
             "batches_per_step": 6, "loader_margin": 8.0, "data_batches_per_s": 900.0},
            {"pipeline": "lesion_uda", "error": ["boom"]}]
    names = [r["pipeline"] for r in rows]
    report = {"environment": {"device": "cuda"}, "settings": {"configs": "paper", "pipelines": names},
              "probe": {"bf16_tflops": 790.0}, "pipelines": rows}
    got = {(r["pipeline"], r["target"]): r for r in target_rows(report)}
    assert got[("mr_synthesis", ">= 10 steps/s")]["status"] == "met"
    bf16 = got[("mr_synthesis", "bf16 step >= 1.5x the plain fp32 step")]
    assert bf16["status"] == "not met" and "bf16 alone, same settings: 2.00x" in bf16["measured"]
    assert got[("pet_lowdose", "loader >= 5x what the step consumes")]["status"] == "not met"
    best = got[("pet_lowdose", ">= 2x the plain fp32 eager step")]
    assert best["status"] == "met" and "(compile)" in best["measured"]
    oct_row = got[("oct_anogan", ">= 20,000 images/s")]
    # 16000 GFLOP over 384 images: 41.7 GFLOP each, so 790 TFLOP/s allow at most about 18,960 images/s
    assert oct_row["status"] == "not met" and "18,960 images/s" in oct_row["note"]
    assert got[("lesion_uda", ">= 17 steps/s")]["status"] == "unmeasured (bench failed)"
    assert ("mr_to_ct", "fraction of the bf16 peak printed") not in got  # not asked for
    cpu = dict(report, environment={"device": "cpu"})
    assert all(r["status"].startswith("unmeasured") for r in target_rows(cpu))
