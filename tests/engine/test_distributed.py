import os
import subprocess
import sys
from pathlib import Path

import torch


def test_two_gloo_ranks_keep_identical_replicas(tmp_path):
    script = Path(__file__).with_name("dist_train.py")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           str(script), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for net in a:
        for name in a[net]:
            assert torch.equal(a[net][name], b[net][name]), (net, name)
    run = tmp_path / "toy_denoise" / "dist"
    assert (run / "checkpoints" / "last.pt").exists()
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert len(state["rng"]) == 2 and state["step"] == 6  # both ranks' RNG states are kept
    # Ranks drew different data: their RNG states differ, yet the weights agree.
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
