"""benchmarks/paper_scale.py: its dry run goes through every experiment and writes every decision row (so the GPU
run cannot fail on a typo), the plan fits the time budget, the decision rules give the verdicts the docs state,
and it refuses to start without CUDA unless told."""
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.child_env import REPO, child_env, load_script

SCRIPT = REPO / "benchmarks" / "paper_scale.py"


@pytest.fixture(scope="module")
def ps():
    return load_script("benchmarks/paper_scale.py", "paper_scale_under_test")


def _run(tmp_path, *args):
    cmd = [sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
           *args]
    done = subprocess.run(cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (json_path,) = (tmp_path / "out").glob("paper_scale_*_dry-run.json")
    (md_path,) = (tmp_path / "out").glob("paper_scale_*_dry-run.md")
    return json.loads(json_path.read_text()), md_path.read_text()


def test_dry_run_measures_every_experiment_and_writes_every_decision(ps, tmp_path):
    data, md = _run(tmp_path, "--last-layer")
    assert data["dry_run"] is True and data["complete"] is True
    ex = data["experiments"]
    assert {p: ex[p]["status"] for p in ps.PIPELINES} == {p: "done" for p in ps.PIPELINES}
    runs = {(r["mode"], r["seed"]): r for r in ex["lesion_uda"]["runs"]}
    assert set(runs) == {(m, s) for m in (*ps.LESION_MODES, "uda_last_layer") for s in (0, 1)}
    assert all(0.0 <= r["mean_dice"] <= 1.0 and r["steps"] == ps.DRY_STEPS["lesion_uda"] for r in runs.values())
    assert all(r["logged_steps_per_s"] > 0 for r in runs.values())  # the rate to size the next run with
    assert np.isfinite(ex["lesion_uda"]["mean_dice"]["uda"])
    for task in ps.MR_TASKS:
        for seed in ("0", "1"):
            methods = ex["mr_synthesis"]["tasks"][task][seed]["methods"]
            assert {"cgan", "gea", "dea", "linear_regression"} <= set(methods)
            assert all(np.isfinite(methods[v]["mean"]["psnr"]) for v in ps.MR_VARIANTS)
            timing = ex["mr_synthesis"]["tasks"][task][seed]["timing"]
            assert all(timing[v]["logged_steps_per_s"] > 0 for v in ps.MR_VARIANTS)
        pairs = ex["mr_synthesis"]["paired"][task]["pairs"]
        assert set(pairs) == {"gea-cgan", "dea-gea"}
        assert pairs["gea-cgan"]["psnr"]["n_pairs"] == 2 * 2  # 2 seeds x 2 test phantoms
    oct0 = ex["oct_anogan"]["seeds"]["0"]
    assert set(oct0["methods"]) == set(ps.OCT_METHODS) and oct0["n_test"] == 8
    assert 0.0 <= oct0["methods"]["fanogan"]["roc_auc"] <= 1.0 and "pixel_auc" in oct0["methods"]["autoencoder"]
    rates = oct0["methods"]["fanogan"]["logged_steps_per_s"]
    assert rates["gan"] > 0 and rates["encoder"] > 0 and oct0["methods"]["autoencoder"]["logged_steps_per_s"] > 0
    assert oct0["delong_fanogan_minus_ae"]["auc_b"] == pytest.approx(oct0["methods"]["autoencoder"]["roc_auc"])
    assert [r["id"] for r in data["decisions"]] == list(ps.RULES)
    assert all(r["verdict"] in ps.VERDICTS for r in data["decisions"])
    assert "not run" not in {r["verdict"] for r in data["decisions"]}
    assert "| id | claim | measured | verdict |" in md
    for rid in ps.RULES:
        assert f"| {rid} |" in md


def test_runs_not_started_in_time_are_recorded_as_skipped(tmp_path):
    data, md = _run(tmp_path, "--only", "oct_anogan", "--hard-limit-minutes", "0")
    assert data["complete"] is False and data["experiments"]["oct_anogan"]["status"] == "partial"
    assert data["experiments"]["oct_anogan"]["seeds"]["0"] == {"skipped": "past the time limit"}
    assert data["experiments"]["lesion_uda"] == {"status": "not run"}
    assert all(r["verdict"] == "not run" for r in data["decisions"])
    assert "| oct_anogan.image_auc_gt_ae |" in md


def test_the_plan_fits_the_budget_and_never_exceeds_the_papers_length(ps):
    all3 = list(ps.PIPELINES)
    plan = ps.plan_runs(8 * 60, ps.ASSUMED_RATES, [0, 1], [0], False, all3)
    assert 0.97 * 8 * 60 <= plan["expected_total_s"] <= 8 * 60  # whole steps: a little under
    assert plan["lesion_uda"]["runs"] == 6 and plan["mr_synthesis"]["runs"] == 12 and plan["oct_anogan"]["runs"] == 2
    assert 0 < plan["lesion_uda"]["steps"] < ps.PAPER_LESION_STEPS
    long = ps.plan_runs(300 * 60, ps.ASSUMED_RATES, [0, 1], [0], True, all3)
    assert long["lesion_uda"]["steps"] == ps.PAPER_LESION_STEPS and long["lesion_uda"]["runs"] == 8
    assert long["mr_synthesis"]["epochs"] == ps.PAPER_MR_EPOCHS
    assert long["oct_anogan"]["fanogan_gan_steps"] <= ps.PAPER_FANOGAN_GAN
    assert long["expected_total_s"] <= 300 * 60
    # a measured rate half the assumed one halves the steps
    slow = ps.plan_runs(8 * 60, {**ps.ASSUMED_RATES, "lesion_uda": 8.5}, [0, 1], [0], False, ["lesion_uda"])
    fast = ps.plan_runs(8 * 60, ps.ASSUMED_RATES, [0, 1], [0], False, ["lesion_uda"])
    assert slow["lesion_uda"]["steps"] == pytest.approx(fast["lesion_uda"]["steps"] / 2, abs=1)
    with pytest.raises(SystemExit, match="no training time"):
        ps.plan_runs(60, ps.ASSUMED_RATES, [0, 1], [0], False, all3)


def _mr_tasks(offsets: dict, noise: float = 0.01) -> dict:
    """Per seed and task, per-case scores of each variant: a base plus the variant's offset plus noise."""
    rng = np.random.default_rng(0)
    tasks = {}
    for task in ("t1_t2", "t1_flair"):
        for seed in ("0", "1"):
            methods = {}
            for v, off in offsets.items():
                cases = [{"id": f"c{i}", "psnr": 20 + i + off + noise * rng.standard_normal(),
                          "edge_corr": 0.8 + 0.01 * i + off / 100 + noise / 100 * rng.standard_normal(),
                          "edge_l1": 0.2 - off / 100, "ssim": 0.9} for i in range(3)]
                methods[v] = {"cases": cases, "mean": {k: float(np.mean([c[k] for c in cases]))
                                                       for k in ("psnr", "edge_corr", "edge_l1", "ssim")}}
            tasks.setdefault(task, {})[seed] = {"methods": methods}
    return tasks


def test_the_decision_rules_give_the_documented_verdicts(ps):
    nan = float("nan")
    les = {"mean_dice": {"source_only": 0.2, "uda": 0.5, "target_supervised": 0.6, "uda_last_layer": 0.3},
           "gap": 0.4, "gap_closed_uda": 0.75, "gap_closed_uda_per_seed": {0: 0.7, 1: 0.8},
           "gap_closed_uda_last_layer": 0.25, "seeds_complete": [0, 1]}
    mr = {"paired": ps.mr_paired(_mr_tasks({"cgan": 0.0, "gea": 0.5, "dea": 0.2}))}
    oct_ = {"seeds": {"0": {"n_test": 100, "methods": {"fanogan": {"roc_auc": 0.93, "pixel_auc": 0.90},
                                                       "autoencoder": {"roc_auc": 0.75, "pixel_auc": 0.89}},
                            "delong_fanogan_minus_ae": {"auc_a": 0.93, "auc_b": 0.75, "difference": 0.18,
                                                        "low": 0.1, "high": 0.26, "p": 0.001}}}}
    v = {r["id"]: r["verdict"] for r in ps.decide({"lesion_uda": les, "mr_synthesis": mr, "oct_anogan": oct_})}
    assert v["lesion_uda.gap_exists"] == "shown" and v["lesion_uda.uda_closes_half_gap"] == "shown"
    assert v["lesion_uda.multi_layer_beats_last_layer"] == "shown"
    for task in ps.MR_TASKS:
        assert v[f"mr_synthesis.{task}.gea_gt_cgan"] == "shown"
        assert v[f"mr_synthesis.{task}.dea_gt_gea"] == "contradicted"  # dea 0.3 below gea on every pair
        assert v[f"mr_synthesis.{task}.ordering"] == "contradicted"
    assert v["oct_anogan.image_auc_gt_ae"] == "shown"
    assert v["oct_anogan.pixel_auc_gt_ae"] == "not shown"  # 0.01 apart: inside the margin
    assert v["oct_anogan.image_auc_ge_paper"] == "shown"
    # no gap to close: the UDA claim is undecided, not failed; uda a third of the way: not shown
    les_nogap = dict(les, mean_dice=dict(les["mean_dice"], target_supervised=0.22), gap=0.02, gap_closed_uda=nan)
    les_third = dict(les, gap_closed_uda=1 / 3)
    mr_tie = {"paired": ps.mr_paired(_mr_tasks({"cgan": 0.0, "gea": 0.0, "dea": 0.0}, noise=0.5))}
    oct_worse = {"seeds": {"0": dict(oct_["seeds"]["0"], delong_fanogan_minus_ae={
        "auc_a": 0.6, "auc_b": 0.8, "difference": -0.2, "low": -0.3, "high": -0.1, "p": 0.0004})}}
    v = {r["id"]: r["verdict"] for r in ps.decide({"lesion_uda": les_nogap, "mr_synthesis": mr_tie,
                                                   "oct_anogan": oct_worse})}
    assert v["lesion_uda.gap_exists"] == "not shown" and v["lesion_uda.uda_closes_half_gap"] == "undecided"
    assert v["mr_synthesis.t1_t2.ordering"] != "shown"
    assert v["oct_anogan.image_auc_gt_ae"] == "contradicted"
    v = {r["id"]: r["verdict"] for r in ps.decide({"lesion_uda": les_third})}
    assert v["lesion_uda.uda_closes_half_gap"] == "not shown" and v["oct_anogan.image_auc_gt_ae"] == "not run"
    # one seed (a run cut short): lesion_uda and mr_synthesis undecided, whatever the numbers say
    one_seed = {t: {"0": r["0"]} for t, r in _mr_tasks({"cgan": 0.0, "gea": 0.5, "dea": 1.0}).items()}
    v = {r["id"]: r["verdict"] for r in ps.decide({"lesion_uda": dict(les, seeds_complete=[0]),
                                                   "mr_synthesis": {"paired": ps.mr_paired(one_seed)}})}
    assert v["lesion_uda.uda_closes_half_gap"] == "undecided" and v["lesion_uda.gap_exists"] == "shown"
    assert v["mr_synthesis.t1_t2.gea_gt_cgan"] == "undecided" and v["mr_synthesis.t1_flair.ordering"] == "undecided"


def test_refuses_to_start_without_cuda(ps, tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ps.main(["--out", str(tmp_path / "out")]) == 2
    assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_failing_pipeline_is_recorded_and_the_next_one_still_runs(ps, tmp_path, monkeypatch):
    import torch

    real = ps._bench

    class Broken:
        @staticmethod
        def run_task(*args, **kwargs):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(ps, "_bench", lambda name: Broken if name == "mr_synthesis" else real(name))
    threads = torch.get_num_threads()
    out = tmp_path / "out"
    assert ps.main(["--dry-run", "--only", "mr_synthesis", "oct_anogan", "--out", str(out),
                    "--work", str(tmp_path / "work")]) == 1
    assert torch.get_num_threads() == threads  # the dry run's one thread is not left behind
    (json_path,) = out.glob("*.json")
    data = json.loads(json_path.read_text())
    mr = data["experiments"]["mr_synthesis"]
    assert mr["status"] == "error" and "illegal memory access" in mr["error"] and "Traceback" in mr["traceback"]
    assert data["experiments"]["oct_anogan"]["status"] == "done" and data["complete"] is False
    verdicts = {r["id"]: r["verdict"] for r in data["decisions"]}
    assert verdicts["mr_synthesis.t1_t2.ordering"] == "not run" and verdicts["oct_anogan.image_auc_gt_ae"] != "not run"
    assert "- mr_synthesis: error (RuntimeError: CUDA error" in next(out.glob("*.md")).read_text()
