import socket
import subprocess
import sys
from pathlib import Path

import torch

from tests.child_env import child_env




def _free_port() -> int:
    # A fixed port fails the test whenever anything else on the machine holds it.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_ranks_keep_identical_replicas(tmp_path):
    script = Path(__file__).with_name("dist_train.py")
    env = child_env()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           str(script), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for net in a:
        for name in a[net]:
            assert torch.equal(a[net][name], b[net][name]), (net, name)
    run = tmp_path / "toy_denoise" / "dist"
    assert (run / "checkpoints" / "last.pt").exists()
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert len(state["rng"]) == 2 and state["step"] == 6  # both ranks' RNG states are kept
    # Ranks drew different data: their RNG states differ, yet the weights agree.
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])


def test_batch_inference_split_across_ranks(tmp_path):
    import json

    import medgen.pipelines._template  # noqa: F401  (registers template_translation)
    from medgen.data.phantoms import write_phantom_dataset
    from medgen.engine.commands import build_config, train_config

    data = tmp_path / "data"
    dataset = write_phantom_dataset("head", data, n_cases=8, seed=2, shape=(16, 16, 16))
    cls, cfg = build_config("template_translation", None, [f"data.dataset={data}", "data.patch_size=[16,16,16]",
                                                     "train.iterations=2", "train.progress=off",
                                                     f"output.root={tmp_path}", "output.name=r"])
    train_config(cls, cfg)
    run = tmp_path / "template_translation" / "r"
    script = Path(__file__).with_name("dist_infer.py")
    env = child_env()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           str(script), str(run), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    test_ids = [c["id"] for c in json.loads(dataset.read_text())["test"]]
    manifest = json.loads((run / "predictions" / "manifest.json").read_text())
    assert sorted(manifest["cases"]) == sorted(test_ids)  # every case once, merged from both ranks
    assert all(e["status"] == "ok" for e in manifest["cases"].values())
    assert not list((run / "predictions").glob("manifest.rank*.json"))
    results = [json.loads((tmp_path / f"infer_rank{r}.json").read_text()) for r in (0, 1)]
    assert results[0]["written"] == results[1]["written"] == len(test_ids)  # summed over ranks
