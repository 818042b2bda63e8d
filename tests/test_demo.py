"""`medgen demo`: phantoms checked in one line each, every pipeline's demo.yaml valid, each run shown beside
its baselines and floors with a verdict that says when the model loses."""
import sys

import pytest

from medgen.data.phantoms import write_phantom_dataset
from medgen.engine.commands import build_config
from medgen.engine.demo import DEMO_KEYS, demo_spec, gap_closed_line, run_demo, run_pipeline_demo, verdict
from medgen.errors import ConfigError
from medgen.registry import PIPELINES


def test_demo_writes_and_checks_phantoms_in_one_line_each(tmp_path, capsys):
    assert run_demo(tmp_path / "data", tmp_path / "runs", only=[]) == 0
    out = capsys.readouterr().out
    for kind in ("head", "lesion_domains", "oct", "expression"):
        assert (tmp_path / "data" / kind / "dataset.json").exists()
        (line,) = [x for x in out.splitlines() if f"{kind}/dataset.json" in x]
        assert line.startswith("OK ") and "no problems" in line
    assert len(out.splitlines()) <= 8  # a newcomer reads a few lines, not a table per file
    stamp = (tmp_path / "data" / "head" / "dataset.json").stat().st_mtime_ns
    assert run_demo(tmp_path / "data", tmp_path / "runs", only=[]) == 0  # a second run reuses what is there
    assert (tmp_path / "data" / "head" / "dataset.json").stat().st_mtime_ns == stamp


def test_a_demo_runs_in_its_own_process_and_prints_only_its_table(tmp_path, capsys):
    """The pipelines' demos run in worker processes (spawned): the parent prints the table and verdict, and
    what the worker prints goes to the pipeline's demo.log."""
    assert run_demo(tmp_path / "data", tmp_path / "runs", only=["expression_vae"], jobs=2) == 0
    out = capsys.readouterr().out
    assert "== expression_vae" in out and "verdict: tybalt" in out and "| baseline: pca" in out
    assert "step 10/" not in out  # the trainer's lines are in the log, not on the screen
    assert (tmp_path / "runs" / "expression_vae" / "demo.log").is_file()  # what the worker printed, if anything
    assert (tmp_path / "runs" / "expression_vae" / "demo_tybalt" / "eval" / "summary.json").is_file()
    assert "(1 demo(s) at a time)" in out  # never more workers than demos


@pytest.mark.parametrize("name", [n for n in PIPELINES.names() if demo_spec(PIPELINES.get(n))])
def test_every_demo_yaml_builds_valid_configs(name, tmp_path):
    cls = PIPELINES.get(name)
    spec = demo_spec(cls)
    assert set(spec) <= DEMO_KEYS and spec.get("description") and spec.get("note")
    for run in spec["runs"]:
        build_config(name, None, [*map(str, spec.get("common") or []), *map(str, run.get("overrides") or []),
                                  f"data.phantom_dir={tmp_path}", f"output.root={tmp_path}"])
    assert set(spec.get("baselines") or []) <= set(cls.baselines)


def test_all_six_pipelines_have_a_demo():
    assert {n for n in PIPELINES.names() if demo_spec(PIPELINES.get(n))} >= {
        "pet_lowdose", "mr_synthesis", "mr_to_ct", "lesion_uda", "oct_anogan", "expression_vae"}


def test_a_bad_demo_yaml_is_refused_with_its_name(tmp_path, monkeypatch):
    package = tmp_path / "fakedemo"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "demo.yaml").write_text("runs: [{name: a}]\nsteps: 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fakedemo", None)
    fake = type("Fake", (), {"__module__": "fakedemo.method", "name": "fake", "baselines": ()})
    with pytest.raises(ConfigError, match=r"fakedemo/demo.yaml: unknown key\(s\) steps"):
        demo_spec(fake)
    (package / "demo.yaml").write_text("common: [data.patch_size=[32,32]]\nruns: [{name: a}]\n")
    with pytest.raises(ConfigError, match="fakedemo/demo.yaml: not valid YAML"):
        demo_spec(fake)


def _summary(mean):
    return {"metrics": {"psnr": {"mean": mean}}, "set_metrics": {}}


def test_the_verdict_says_when_the_model_loses():
    runs = {"gan": _summary(19.7)}
    methods = {**runs, "baseline: linear_regression": _summary(21.5), "floor: target_mean": _summary(15.0)}
    line = verdict(runs, methods, "psnr", "max")
    assert "does NOT beat the best baseline linear_regression (21.5)" in line
    assert "beats the best floor target_mean (15)" in line
    assert "beats the best baseline" in verdict(runs, methods, "psnr", "min")  # lower is better: 19.7 < 21.5
    gap = gap_closed_line({"metric": "psnr", "low": "a", "run": "b", "high": "c"},
                          {"a": _summary(10.0), "b": _summary(12.5), "c": _summary(20.0)})
    assert gap.endswith(": 0.25")


def test_a_pipeline_demo_trains_predicts_and_compares(tmp_path):
    """One tiny run of the template through the demo runner: the table holds the run, the baseline and the floor."""
    import medgen.pipelines._template  # noqa: F401

    head = write_phantom_dataset("head", tmp_path / "data" / "head", n_cases=5, seed=1, shape=(24, 24, 24)).parent
    spec = {"common": [f"data.dataset={head}", "data.patch_size=[16,16,16]", "train.iterations=2",
                       "train.progress=off"],
            "runs": [{"name": "tiny"}], "baselines": ["linear_regression"], "note": "n"}
    result = run_pipeline_demo(PIPELINES.get("template_translation"), spec, tmp_path / "data", tmp_path / "runs")
    assert set(result["methods"]) == {"tiny", "baseline: linear_regression", "floor: target_mean"}
    assert result["metric"] == "psnr" and result["verdict"].startswith("tiny (psnr ")
    assert (tmp_path / "runs" / "template_translation" / "demo_tiny" / "eval" / "report.md").exists()
