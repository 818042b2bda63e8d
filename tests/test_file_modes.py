"""Files a shared server can use: every file medgen writes gets the mode a plain open() would give (0666 less the
umask: 0644 under the usual 022), atomic writes included (a temporary file from mkstemp is 0600 until chmod)."""

import os
import stat

import pytest

import medgen.pipelines._template  # noqa: F401  (registers template_translation)
from medgen.data.phantoms import write_phantom_dataset
from medgen.engine.commands import build_config, evaluate, infer, train_config
from medgen.files import atomic_write, write_json_atomic


@pytest.fixture
def umask():
    """Set a umask for one test and restore the process's own afterwards."""
    before = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(before)


def _modes(root) -> dict[str, int]:
    """{relative path: permission bits} of every file and folder under `root`."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = stat.S_IMODE(os.lstat(path).st_mode)
    return out


def test_dataset_run_predictions_and_report_are_readable_by_others(umask, tmp_path):
    umask(0o022)
    head = write_phantom_dataset("head", tmp_path / "data" / "head", n_cases=5, seed=3, shape=(16, 16, 16))
    cls, cfg = build_config("template_translation", None, [
        f"data.dataset={head.parent}", "data.patch_size=[16,16,16]", "train.iterations=2", "train.val_every=1",
        "train.keep_checkpoints=1", "train.progress=off", f"output.root={tmp_path / 'runs'}", "output.name=r"])
    train_config(cls, cfg)
    run = tmp_path / "runs" / "template_translation" / "r"
    evaluate(infer(run)["out"])
    modes = _modes(tmp_path)
    # what a run, its predictions and its report consist of (the test would pass vacuously without them)
    for name in ("config.yaml", "env.json", "log.txt", "metrics.csv", "progress.png", "checkpoints/best.pt",
                 "checkpoints/last.pt", "checkpoints/last.prev.pt", "checkpoints/last.pt.sha256",
                 "predictions/manifest.json", "eval/report.md", "eval/report.html", "eval/summary.json"):
        assert os.path.join("runs/template_translation/r", name) in modes, name
    assert any(p.endswith(".nii.gz") and p.startswith("runs/template_translation/r/predictions") for p in modes)
    assert any("tfevents" in p for p in modes)
    wrong = {p: oct(m) for p, m in modes.items()
             if m != (0o755 if os.path.isdir(tmp_path / p) else 0o644)}
    assert not wrong


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_write_follows_the_umask(umask, tmp_path, mask, mode):
    umask(mask)
    assert stat.S_IMODE(atomic_write(tmp_path / "a.txt", "x").stat().st_mode) == mode
    assert stat.S_IMODE(write_json_atomic(tmp_path / "b.json", {"a": 1}).stat().st_mode) == mode
    written = atomic_write(tmp_path / "c.bin", lambda tmp: tmp.write_bytes(b"\0"))
    assert stat.S_IMODE(written.stat().st_mode) == mode
