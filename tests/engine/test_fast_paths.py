"""The trainer's speed settings against the plain path, on the CPU: patch batches cut on the device train
bit-identically (and resume exactly), fused optimizers and channels-last give the plain numbers within float
rounding, and the merged non-finite check still skips bad steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medgen.config import load_config
from medgen.data.phantoms import write_phantom_dataset
from medgen.engine import fast
from medgen.engine.commands import build_config, train_config
from medgen.engine.rundir import make_run_dir
from medgen.engine.trainer import Trainer
from medgen.errors import ConfigError
from medgen.pipelines.toy import ToyConfig, ToyDenoise

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "pet_lowdose_smoke.yaml"


@pytest.fixture(scope="module")
def head(tmp_path_factory) -> Path:
    return write_phantom_dataset("head", tmp_path_factory.mktemp("fast") / "head", n_cases=4, seed=1,
                                 shape=(20, 20, 20))


def _pet(head, root, name, steps, *extra, resume=False):
    cls, cfg = build_config("pet_lowdose", SMOKE, [
        f"data.dataset={head.parent}", f"output.root={root}", f"output.name={name}", "model.stages=1",
        "data.patch_size=[12,12,12]", "model.ngf=4", "model.ndf=4", "model.lr_decay_fraction=0", "train.deterministic=true", "train.threads=1",
        f"train.iterations={steps}", "train.val_every=100", "train.checkpoint_every=3", *extra])
    train_config(cls, cfg, resume=resume)
    return torch.load(Path(root) / "pet_lowdose" / name / "checkpoints" / "last.pt", weights_only=True)


def _assert_same(a, b, exact=True, **tol):
    for net in a["networks"]:
        for k in a["networks"][net]:
            x, y = a["networks"][net][k], b["networks"][net][k]
            if exact:
                assert torch.equal(x, y), (net, k)
            else:
                torch.testing.assert_close(x, y, **tol)


def test_device_batches_train_identically_and_resume_exactly(head, tmp_path):
    host = _pet(head, tmp_path, "host", 6, "train.data_on_device=off")
    device = _pet(head, tmp_path, "device", 6, "train.data_on_device=on")
    _assert_same(host, device)  # the same batches: the same run, bit for bit
    _pet(head, tmp_path, "split", 3, "train.data_on_device=on")
    resumed = _pet(head, tmp_path, "split", 6, "train.data_on_device=on", resume=True)
    _assert_same(device, resumed)
    log = (tmp_path / "pet_lowdose" / "device" / "log.txt").read_text()
    assert "data: on cpu" in log and "batches cut there" in log


def test_fused_optimizer_matches_and_resumes(head, tmp_path):
    plain = _pet(head, tmp_path, "plain", 6, "train.fused_optimizer=off")
    fused = _pet(head, tmp_path, "fused", 6, "train.fused_optimizer=on")
    assert fused["optimizers"]["G"]["param_groups"][0]["fused"] is True
    _assert_same(plain, fused, exact=False, rtol=1e-4, atol=1e-5)
    _pet(head, tmp_path, "split", 3, "train.fused_optimizer=on")
    resumed = _pet(head, tmp_path, "split", 6, "train.fused_optimizer=on", resume=True)
    _assert_same(fused, resumed)
    # a fused run resumed with plain kernels (a GPU checkpoint continued on a CPU): it runs, and stays close
    _pet(head, tmp_path, "mixed", 3, "train.fused_optimizer=on")
    mixed = _pet(head, tmp_path, "mixed", 6, "train.fused_optimizer=off", resume=True)
    assert mixed["optimizers"]["G"]["param_groups"][0]["fused"] is None
    _assert_same(fused, mixed, exact=False, rtol=1e-4, atol=1e-5)


def test_channels_last_matches_the_plain_layout(head, tmp_path):
    plain = _pet(head, tmp_path, "plain", 4)
    last = _pet(head, tmp_path, "last", 4, "train.channels_last=true")
    _assert_same(plain, last, exact=False, rtol=1e-3, atol=1e-4)


def test_fused_rebuild_keeps_groups_and_refuses_a_stepped_optimizer():
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam([{"params": [net.weight], "lr": 0.1}, {"params": [net.bias], "lr": 0.2,
                                                                   "weight_decay": 0.5}], betas=(0.5, 0.9))
    fused = fast.rebuild_optimizer(opt, True)
    assert fused is not opt and fused.defaults["fused"] is True
    assert [(g["lr"], g["weight_decay"], g["betas"], g["fused"]) for g in fused.param_groups] == \
        [(0.1, 0, (0.5, 0.9), True), (0.2, 0.5, (0.5, 0.9), True)]
    rms = torch.optim.RMSprop(net.parameters())
    assert fast.rebuild_optimizer(rms, True) is rms  # no fused kernels: unchanged
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    with pytest.raises(ConfigError, match="already stepped"):
        fast.rebuild_optimizer(opt, True)


def test_total_norm_is_the_norm_of_all_gradients():
    grads = [torch.randn(4, 5), torch.randn(7), torch.randn(2, 2, 2).bfloat16()]
    expect = torch.cat([g.float().flatten() for g in grads]).norm()
    torch.testing.assert_close(fast.total_norm(grads), expect)
    assert fast.total_norm([]) is None


def test_data_on_device_refused_for_a_dataset_without_patches(tmp_path):
    cfg = load_config(ToyConfig, None, ["train.iterations=1", "train.progress=off", "train.data_on_device=on"])
    trainer = Trainer(ToyDenoise(cfg), make_run_dir(tmp_path, "toy_denoise", "x"))
    with pytest.raises(ConfigError, match="cannot be cut on the device"):
        trainer.setup()
    cfg = load_config(ToyConfig, None, ["train.iterations=1", "train.progress=off"])  # auto: the host loader
    trainer = Trainer(ToyDenoise(cfg), make_run_dir(tmp_path, "toy_denoise", "y"))
    trainer.setup()
    assert trainer.data_on_device is False


def test_non_finite_loss_skipped_after_one_sync(tmp_path):
    """A NaN loss: the step is skipped (weights untouched, gradients cleared), with one host transfer."""
    cfg = load_config(ToyConfig, None, ["train.iterations=1", "train.progress=off"])
    pipe = ToyDenoise(cfg)
    trainer = Trainer(pipe, make_run_dir(tmp_path, "toy_denoise", "n"))
    trainer.setup()
    from medgen.engine.logging import RunLogger

    trainer.logger = RunLogger(tmp_path, 1, enabled=False)
    before = {k: v.clone() for k, v in pipe.networks["G"].state_dict().items()}
    x = torch.ones(1, 1, 16, 16)
    loss = pipe.networks["G"](x).mean() * float("nan")
    assert trainer.update("G", loss, "loss") is False
    assert trainer.skipped_steps == 1 and all(q.grad is None for q in pipe.networks["G"].parameters())
    assert all(torch.equal(before[k], v) for k, v in pipe.networks["G"].state_dict().items())
    assert trainer.update("G", pipe.networks["G"](x).mean(), "loss") is True
