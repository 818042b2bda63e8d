import os
import warnings
from pathlib import Path

import pytest
import torch

from medgen.config import load_config
from medgen.engine.checkpoint import load_checkpoint, previous_path, save_checkpoint
from medgen.engine.rundir import make_run_dir
from medgen.engine.trainer import Trainer, TrainingDiverged
from medgen.errors import MedgenError, RunDirError
from medgen.pipelines.toy import ToyConfig, ToyDenoise


def _run(root, name, iterations, resume=False, extra=()):
    cfg = load_config(
        ToyConfig,
        None,
        [f"train.iterations={iterations}", "train.val_every=4", "train.log_every=2", "model.adversarial=true",
         "model.dropout=0.2", "train.deterministic=true", "train.progress=off", "train.batch_size=2", *extra],
    )
    run_dir = make_run_dir(root, "toy_denoise", name, resume=resume)
    pipeline = ToyDenoise(cfg)
    summary = Trainer(pipeline, run_dir, resume=resume).fit()
    return pipeline, summary, run_dir


def _same_weights(a, b):
    for name in a.networks:
        for (k, x), (_, y) in zip(a.networks[name].state_dict().items(), b.networks[name].state_dict().items()):
            if not torch.equal(x, y):
                return False
    return True


def test_resume_is_exact(tmp_path):
    """N steps straight == N/2 steps + resume + N/2 steps (GAN with dropout: RNG and data order restored)."""
    straight, _, _ = _run(tmp_path, "straight", 8)
    _run(tmp_path, "split", 4)
    resumed, _, _ = _run(tmp_path, "split", 8, resume=True)
    assert _same_weights(straight, resumed)
    other, _, _ = _run(tmp_path, "other_seed", 8, extra=["train.seed=1"])
    assert not _same_weights(straight, other)  # the comparison can fail


def test_run_outputs_and_learning(tmp_path):
    _, summary, run_dir = _run(tmp_path, "r", 40, extra=["model.adversarial=false", "model.dropout=0"])
    for name in ("config.yaml", "env.json", "log.txt", "metrics.csv", "progress.png", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "previews").glob("*.png"))
    import csv

    rows = [r for r in csv.DictReader(open(run_dir / "metrics.csv")) if r.get("val_mse")]
    first, last = float(rows[0]["val_mse"]), float(rows[-1]["val_mse"])
    assert last < 0.8 * first  # validation error falls while training
    assert summary["best_metric"] == pytest.approx(min(float(r["val_mse"]) for r in rows))


def test_run_dir_never_silently_reused(tmp_path):
    _run(tmp_path, "x", 2)
    with pytest.raises(RunDirError, match="already exists"):
        make_run_dir(tmp_path, "toy_denoise", "x")


def test_checkpoint_truncated_falls_back_to_previous(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)
    save_checkpoint({"step": 2}, path)
    assert previous_path(path).exists()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="previous checkpoint"):
        state = load_checkpoint(path)
    assert state["step"] == 1
    with pytest.raises(MedgenError, match="checksum|readable"):
        load_checkpoint(path, fallback=False)


class _Interrupted(BaseException):
    pass


@pytest.mark.parametrize("fail_at", range(1, 12))
def test_checkpoint_survives_a_kill_at_every_step_of_a_save(tmp_path, monkeypatch, fail_at):
    # Every rename, link and unlink inside save_checkpoint is a point where SIGKILL could land: whatever
    # has happened by then, last.pt must exist, pass its own checksum and hold the old or the new state.
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)
    save_checkpoint({"step": 2}, path)
    import medgen.engine.checkpoint as ckpt

    calls = {"n": 0}

    def interruptible(fn):
        def wrapped(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == fail_at:
                raise _Interrupted
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(ckpt.os, "replace", interruptible(os.replace))
    monkeypatch.setattr(ckpt.os, "link", interruptible(os.link))
    monkeypatch.setattr(Path, "unlink", interruptible(Path.unlink))
    try:
        save_checkpoint({"step": 3}, path)
        finished = True
    except _Interrupted:
        finished = False
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback: the newest file itself must verify
        step = load_checkpoint(path)["step"]
    assert step == 3 if finished else step in (2, 3)
    if previous_path(path).exists():
        assert load_checkpoint(previous_path(path), fallback=False)["step"] in (1, 2)
    save_checkpoint({"step": 4}, path)  # a later save recovers from any leftover temporary file
    assert load_checkpoint(path, fallback=False)["step"] == 4


def test_nonfinite_losses_skip_then_stop(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = ToyDenoise.train_step

    def poisoned(self, batch):
        calls["n"] += 1
        if calls["n"] >= 3:
            batch = dict(batch, image=batch["image"] * float("nan"))
        return original(self, batch)

    monkeypatch.setattr(ToyDenoise, "train_step", poisoned)
    with pytest.raises(TrainingDiverged, match="non-finite"):
        _run(tmp_path, "nan", 20, extra=["model.adversarial=false", "train.max_bad_steps=3"])
    log = (tmp_path / "toy_denoise" / "nan" / "log.txt").read_text()
    assert "step skipped" in log


def test_schedule_clipping_and_ema(tmp_path):
    pipeline, _, run_dir = _run(tmp_path, "sched", 10, extra=["model.lr_decay=true", "train.grad_clip=0.01",
                                                            "train.ema_decay=0.9", "model.adversarial=false"])
    lr = pipeline.optimizers["G"].param_groups[0]["lr"]
    assert lr == pytest.approx(0.0, abs=1e-12)  # constant for 5 steps, then linear to 0 at step 10
    grads = [p.grad for p in pipeline.networks["G"].parameters() if p.grad is not None]
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    assert total <= 0.01 + 1e-6  # clipped before the last step
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    ema = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    raw = state["networks"]["G"]
    assert set(raw) <= set(ema) and any(not torch.equal(ema[k], raw[k]) for k in raw)
    # inference uses the EMA copy, during training and after loading the run (regression: the loaded run used
    # the raw weights although validation had scored - and picked best.pt with - the EMA's)
    assert pipeline.inference_network("G") is not pipeline.networks["G"]
    from medgen.engine.commands import load_trained

    _, _, stages, _ = load_trained(run_dir, device="cpu", checkpoint="last")
    loaded = stages[0].inference_network("G").state_dict()
    assert all(torch.equal(loaded[k], ema[k]) for k in raw)
