"""The scripts researchers run (pipelines/<name>.py): the same flags for every pipeline, and each one runs
train -> infer -> evaluate end to end on its smoke config as a separate process."""
import subprocess
import sys

import pytest

from tests.child_env import REPO, child_env

PIPELINES = ["pet_lowdose", "mr_synthesis", "mr_to_ct", "lesion_uda", "oct_anogan", "expression_vae", "unpaired_translation"]
SHORTEST = {"oct_anogan": ["train.iterations=3", "model.encoder_iterations=1"]}  # the GAN phase needs a step


def test_the_scripts_are_identical_but_for_the_name():
    texts = {name: (REPO / "pipelines" / f"{name}.py").read_text().replace(name, "NAME") for name in PIPELINES}
    assert len(set(texts.values())) == 1


@pytest.mark.parametrize("name", PIPELINES)
def test_a_script_trains_predicts_and_evaluates(name, tmp_path):
    cmd = [sys.executable, str(REPO / "pipelines" / f"{name}.py"), "-c", str(REPO / "configs" / f"{name}_smoke.yaml"),
           "--out", str(tmp_path / "runs"), "output.name=s", f"data.phantom_dir={tmp_path / 'data'}",
           *SHORTEST.get(name, ["train.iterations=2", "train.epochs=0"])]
    done = subprocess.run(cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    run = tmp_path / "runs" / name / "s"
    assert (run / "checkpoints" / "last.pt").exists() or (run / "stage1" / "checkpoints" / "last.pt").exists()
    assert (run / "predictions" / "manifest.json").exists() and (run / "eval" / "report.md").exists()
    assert f"report: {run / 'eval' / 'report.md'}" in done.stdout
