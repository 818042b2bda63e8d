import importlib.util

import pytest
import torch

from medgen.engine.export import export_onnx, export_torchscript, verify_export
from medgen.errors import MedgenError
from medgen.networks import MLPEncoder, UNetGenerator, NieFCN

HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def _roundtrip(model, x, tmp_path, name):
    model.train()  # export must switch to eval and restore the mode
    path = export_torchscript(model, x, tmp_path / name)
    assert path.is_file() and model.training
    loaded = torch.jit.load(str(path))
    return model.eval(), loaded


def test_torchscript_unet(tmp_path):
    model = UNetGenerator(3, 1, 1, ngf=4, patch_size=16)
    x = torch.randn(1, 1, 16, 16, 16)
    model, loaded = _roundtrip(model, x, tmp_path, "unet.pt")
    x2 = torch.randn(2, 1, 16, 16, 16)  # another batch: same numbers as eager
    assert torch.allclose(loaded(x2), model(x2), atol=1e-5)


def test_torchscript_fcn(tmp_path):
    model = NieFCN(3, 2, 1, channels=(4,) * 8)
    x = torch.randn(1, 2, 20, 20, 20)
    model, loaded = _roundtrip(model, x, tmp_path, "sub/fcn.pt")
    assert loaded(x).shape == (1, 1, 4, 4, 4)


def test_torchscript_vae_encoder_tuple_output(tmp_path):
    model = MLPEncoder(30, 5, hidden_sizes=(10,))
    x = torch.rand(4, 30)
    model, loaded = _roundtrip(model, x, tmp_path, "enc.pt")
    mu, logvar = loaded(x)
    assert torch.allclose(mu, model(x)[0], atol=1e-6) and torch.allclose(logvar, model(x)[1], atol=1e-6)


def test_verify_export_raises_on_mismatch():
    model = torch.nn.Linear(3, 2)
    other = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    assert verify_export(model, model, x) == 0.0
    with pytest.raises(MedgenError, match="max abs difference"):
        verify_export(model, other, x)
    with pytest.raises(MedgenError, match="shape"):
        verify_export(model, lambda t: model(t)[:, :1], x)


@pytest.mark.skipif(HAS_ONNX, reason="onnx is installed: the missing-extra message cannot be shown")
def test_onnx_missing_extra_message(tmp_path):
    with pytest.raises(MedgenError, match=r"pip install medgen\[export\]"):
        export_onnx(torch.nn.Linear(3, 2), torch.randn(1, 3), tmp_path / "m.onnx")


@pytest.mark.skipif(not HAS_ONNX, reason="onnx/onnxruntime not installed (pip install medgen[export])")
def test_onnx_unet_roundtrip(tmp_path):
    model = UNetGenerator(2, 1, 1, ngf=4, num_downs=3)
    x = torch.randn(1, 1, 16, 16)
    path = export_onnx(model, x, tmp_path / "unet.onnx")
    assert path.is_file()
