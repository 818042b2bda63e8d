"""Device crossings a CPU can check: a GPU-trained run reloaded where there is no GPU, generator states of
the wrong type, more torchrun ranks than GPUs, a CPU-trained run continued on the default device.

On a CUDA machine the same tests cross the other way (the suite runs on CUDA whenever one is present)."""
import io
import random

import numpy as np
import pytest
import torch

from medgen.config import load_config
from medgen.engine import commands as api
from medgen.engine.checkpoint import load_checkpoint, save_checkpoint
from medgen.engine.rundir import make_run_dir
from medgen.engine.seeding import get_rng_state, set_rng_state
from medgen.engine.trainer import Trainer, resolve_device
from medgen.errors import MedgenError
from medgen.pipelines.toy import ToyConfig, ToyDenoise

COMMON = ["train.val_every=2", "train.log_every=2", "model.adversarial=true", "model.dropout=0.2",
          "train.deterministic=true", "train.progress=off", "train.batch_size=2"]


def _train(root, name, iterations, resume=False, extra=()):
    cfg = load_config(ToyConfig, None, [f"train.iterations={iterations}", *COMMON, *extra])
    run_dir = make_run_dir(root, "toy_denoise", name, resume=resume)
    pipeline = ToyDenoise(cfg, resolve_device(cfg.train.device))
    Trainer(pipeline, run_dir, resume=resume).fit()
    return pipeline, run_dir


def _as_if_saved_on_a_gpu(path, monkeypatch):
    """Rewrite a checkpoint so every tensor is recorded on 'cuda:0', as torch.save records a GPU run's tensors."""
    import torch.serialization as ser

    state = load_checkpoint(path)
    state["config"]["train"]["device"] = "cuda:0"
    with monkeypatch.context() as m:
        m.setattr(ser, "location_tag", lambda storage: "cuda:0")
        save_checkpoint(state, path, keep_previous=False)
    return path


def _weights(pipeline):
    return {k: {n: t.detach().cpu().clone() for n, t in v.state_dict().items()} for k, v in pipeline.networks.items()}


def test_gpu_saved_run_resumes_and_infers_without_a_gpu(tmp_path, monkeypatch):
    straight, _ = _train(tmp_path, "straight", 6)
    _, run = _train(tmp_path, "gpu", 4)
    for name in ("last.pt", "best.pt"):
        _as_if_saved_on_a_gpu(run / "checkpoints" / name, monkeypatch)
    if not torch.cuda.is_available():  # the file really is a "GPU" file: a plain load fails on this machine
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    resumed, _ = _train(tmp_path, "gpu", 6, resume=True)  # restores weights, optimizers and RNG states
    for net, tensors in _weights(straight).items():
        for key, value in tensors.items():
            assert torch.equal(value, _weights(resumed)[net][key]), (net, key)
    _, _, stages, _ = api.load_trained(run / "checkpoints" / "best.pt", device="auto")
    case = stages[0].validation_cases()[0]
    prediction = stages[0].predict_case(case)
    assert prediction["output"].device.type == "cpu"  # predictions come back to the host, whatever the device
    assert prediction["output"].shape == case["target"].shape


def test_cpu_trained_run_continues_and_infers_on_the_default_device(tmp_path):
    _train(tmp_path, "r", 4, extra=["train.device=cpu"])
    pipeline, run = _train(tmp_path, "r", 6, resume=True, extra=["train.device=auto"])  # a GPU when one exists
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 6
    _, _, stages, _ = api.load_trained(run, device="auto")
    out = stages[0].predict_case(stages[0].validation_cases()[0])["output"]
    assert out.device.type == "cpu" and torch.isfinite(out).all()


def test_checkpoint_tensors_always_load_on_the_cpu(tmp_path, monkeypatch):
    import torch.serialization as ser

    path = tmp_path / "c.pt"

    with monkeypatch.context() as m:
        m.setattr(ser, "location_tag", lambda storage: "cuda:0")
        save_checkpoint({"networks": {"G": {"w": torch.ones(2)}}, "rng": get_rng_state()}, path)
    state = load_checkpoint(path)
    assert state["networks"]["G"]["w"].device.type == "cpu"
    assert state["rng"]["torch"].device.type == "cpu"


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_rng_state_restores_from_a_wrong_type_or_container():
    state = get_rng_state()
    expected = _draws()
    # What a careless round trip does to a state: a long tensor, a numpy array, a list.
    mangled = dict(state, torch=state["torch"].long(),
                   numpy=dict(state["numpy"], keys=state["numpy"]["keys"].numpy()),
                   python=[state["python"][0], tuple(state["python"][1]), state["python"][2]])
    set_rng_state(mangled)
    assert _draws() == expected
    # The format-1 numpy state (numpy's own tuple) is still understood.
    set_rng_state(state)
    legacy = dict(state, numpy=np.random.get_state())
    set_rng_state(legacy)
    assert _draws() == expected


def test_rng_state_with_impossible_bytes_is_a_clear_error():
    state = get_rng_state()
    with pytest.raises(MedgenError, match="outside 0-255"):
        set_rng_state(dict(state, torch=state["torch"].float() * 300))


def test_checkpoint_rng_state_is_weights_only_data(tmp_path):
    buf = io.BytesIO()
    torch.save(get_rng_state(), buf)
    buf.seek(0)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(buf) == []


def test_ranks_beyond_the_gpus_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto", 0) == torch.device("cuda", 0)
    with pytest.raises(MedgenError, match="--nproc_per_node=1"):
        resolve_device("auto", 1)
    with pytest.raises(MedgenError, match="needs GPU cuda:3"):
        resolve_device("cuda:3", 0)
    assert resolve_device("cpu", 5) == torch.device("cpu")
    # torchrun's second rank is refused before it joins the process group
    from medgen.engine import distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(MedgenError, match="local rank 1 but this machine has 1 GPU"):
        distributed.init_distributed("auto")


def test_a_device_that_does_not_exist_is_a_clear_error():
    if not torch.cuda.is_available():
        with pytest.raises(MedgenError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(MedgenError, match="not a device"):
        resolve_device("gpu0")
