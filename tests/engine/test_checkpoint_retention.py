"""Which checkpoints a run keeps (train.keep_checkpoints) and what they take on disk."""

import pytest

from medgen.config import load_config
from medgen.engine.checkpoint import disk_use, link_checkpoint, load_checkpoint, save_checkpoint
from medgen.engine.rundir import make_run_dir
from medgen.engine.trainer import Trainer
from medgen.errors import ConfigError
from medgen.pipelines.toy import ToyConfig, ToyDenoise


def _train(root, name, extra=()):
    cfg = load_config(ToyConfig, None, ["train.iterations=12", "train.val_every=4", "train.log_every=4",
                                        "train.progress=off", "train.deterministic=true", *extra])
    run_dir = make_run_dir(root, "toy_denoise", name)
    summary = Trainer(ToyDenoise(cfg), run_dir).fit()
    return summary, run_dir


def test_default_keeps_best_last_and_one_previous(tmp_path):
    summary, run_dir = _train(tmp_path, "r")
    folder = run_dir / "checkpoints"
    assert sorted(p.name for p in folder.glob("*.pt")) == sorted(["best.pt", "last.pt", "last.prev.pt"])
    assert not list(folder.glob(".*"))  # no temporary file left behind
    use = disk_use(folder)
    best, last = load_checkpoint(folder / "best.pt"), load_checkpoint(folder / "last.pt", fallback=False)
    assert last["step"] == 12 and best["step"] == summary["best_step"]
    # best.pt of the step last.pt was written at is the same file, not a second copy
    same = (folder / "best.pt").stat().st_ino in {(folder / n).stat().st_ino for n in ("last.pt", "last.prev.pt")}
    assert same == (summary["best_step"] in (8, 12))
    assert use["copies"] == 3 - same
    assert summary["checkpoint_bytes"] == use["bytes"] > 0
    log = (run_dir / "log.txt").read_text()
    assert f"checkpoints: {use['bytes'] / 1e6:.1f} MB on disk in {use['copies']} distinct file(s)" in log


def test_best_and_last_of_one_step_share_their_file(tmp_path):
    # the toy's validation error falls monotonically on a fixed seed: the final step is the best
    summary, run_dir = _train(tmp_path, "r", ["model.adversarial=false", "model.dropout=0"])
    folder = run_dir / "checkpoints"
    assert summary["best_step"] == 12
    assert (folder / "best.pt").stat().st_ino == (folder / "last.pt").stat().st_ino
    assert load_checkpoint(folder / "last.pt", fallback=False)["step"] == 12
    assert disk_use(folder)["copies"] == 2
    # That the shared file holds what last.pt must (RNG states included) is shown by
    # test_trainer.py::test_resume_is_exact, whose first run ends on its first, so best, validation.


def test_keep_checkpoints_keeps_the_newest_step_files(tmp_path):
    _, run_dir = _train(tmp_path, "r", ["train.keep_checkpoints=2"])
    folder = run_dir / "checkpoints"
    assert sorted(p.name for p in folder.glob("step*.pt")) == ["step0000008.pt", "step0000012.pt"]
    assert not (folder / "step0000004.pt.sha256").exists()
    assert load_checkpoint(folder / "step0000008.pt", fallback=False)["step"] == 8
    _, run_all = _train(tmp_path, "all", ["train.keep_checkpoints=-1"])
    assert len(list((run_all / "checkpoints").glob("step*.pt"))) == 3


def test_keep_checkpoints_is_checked():
    with pytest.raises(ConfigError, match="keep_checkpoints"):
        load_config(ToyConfig, None, ["train.keep_checkpoints=-2"])


def test_a_linked_checkpoint_survives_replacing_its_source(tmp_path):
    save_checkpoint({"step": 1}, tmp_path / "last.pt")
    link_checkpoint(tmp_path / "last.pt", tmp_path / "best.pt")
    save_checkpoint({"step": 2}, tmp_path / "last.pt")
    assert load_checkpoint(tmp_path / "best.pt", fallback=False)["step"] == 1
    assert load_checkpoint(tmp_path / "last.pt", fallback=False)["step"] == 2
    assert load_checkpoint(tmp_path / "last.prev.pt", fallback=False)["step"] == 1
