"""Fault injection: kills, signals, divergence, unwritable outputs."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.child_env import child_env

from medgen.cli import main
from medgen.engine.rundir import check_writable, make_run_dir
from medgen.errors import RunDirError

REPO = Path(__file__).resolve().parents[2]
COMMON = ["model.adversarial=true", "model.dropout=0.2", "train.deterministic=true", "train.progress=off",
          "train.log_every=1", "train.checkpoint_every=3", "train.val_every=100"]




def _cmd(root, name, iterations, *extra):
    return [sys.executable, "-m", "medgen", "train", "toy_denoise", f"train.iterations={iterations}",
            f"output.root={root}", f"output.name={name}", *COMMON, *extra]


def _env():
    return child_env()


def _weights(run):
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["networks"]


def _wait_for_step(run, step, proc, timeout=120):
    t0 = time.time()
    csv = run / "metrics.csv"
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.stdout.read() if proc.stdout else ''}")
        if csv.exists():
            lines = csv.read_text().strip().splitlines()
            if len(lines) > 1 and lines[-1].split(",")[0].isdigit() and int(lines[-1].split(",")[0]) >= step:
                return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for training progress")


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    n = 120
    subprocess.run(_cmd(tmp_path, "straight", n), env=_env(), check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(_cmd(tmp_path, "killed", n), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = tmp_path / "toy_denoise" / "killed"
    _wait_for_step(run, 20 + int(time.time() * 1000) % 60, proc)  # a "random" step between 20 and 80
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert 0 < killed_at < n
    subprocess.run(_cmd(tmp_path, "killed", n, "--resume"), env=_env(), check=True, capture_output=True, timeout=300)
    a, b = _weights(tmp_path / "toy_denoise" / "straight"), _weights(run)
    for net in a:
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), (net, key)


def test_sigterm_writes_a_final_checkpoint(tmp_path):
    proc = subprocess.Popen(_cmd(tmp_path, "term", 100000, "train.checkpoint_every=100000"), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "toy_denoise" / "term"
    _wait_for_step(run, 7, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert 7 <= state["step"] < 100000
    assert "stopped by signal" in (run / "log.txt").read_text()


def test_unwritable_output_fails_before_training(tmp_path, capsys, monkeypatch):
    # /proc is a read-only file system even for root
    assert main(["train", "toy_denoise", "output.root=/proc/medgen_test", "train.iterations=1"]) == 2
    assert "cannot create run directory" in capsys.readouterr().err

    class Full:
        f_bavail, f_frsize = 10, 4096

    monkeypatch.setattr(os, "statvfs", lambda _: Full())
    with pytest.raises(RunDirError, match="MB free"):
        check_writable(tmp_path)
    with pytest.raises(RunDirError, match="MB free"):
        make_run_dir(tmp_path, "toy_denoise", "full")


def test_discriminator_winning_is_reported(tmp_path, monkeypatch):
    from medgen.pipelines.toy import ToyDenoise

    original = ToyDenoise.train_step

    def step(self, batch):
        logs = original(self, batch)
        logs["loss_d"] = torch.tensor(1e-5)  # as if D separated real and fake perfectly
        return logs

    monkeypatch.setattr(ToyDenoise, "train_step", step)
    assert main(["train", "toy_denoise", "train.iterations=12", "train.log_every=2", "train.d_win_patience=3",
                 "train.progress=off", "train.val_every=100", f"output.root={tmp_path}", "output.name=d",
                 "model.adversarial=true"]) == 0
    log = (tmp_path / "toy_denoise" / "d" / "log.txt").read_text()
    assert "wins outright" in log and log.count("wins outright") == 1
