import math

import pytest
import torch
from torch import nn

from medgen.errors import ConfigError
from medgen.networks import init_weights


def net():
    return nn.Sequential(nn.Conv3d(64, 64, 3), nn.BatchNorm3d(4096), nn.Linear(256, 512), nn.InstanceNorm2d(8))


def test_normal_default_and_norm_layers():
    m = init_weights(net())
    w = m[0].weight
    assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001
    assert torch.count_nonzero(m[0].bias) == 0 and torch.count_nonzero(m[2].bias) == 0
    bn = m[1]
    assert abs(bn.weight.mean().item() - 1.0) < 0.002 and abs(bn.weight.std().item() - 0.02) < 0.002
    assert torch.count_nonzero(bn.bias) == 0


def test_other_schemes():
    m = init_weights(net(), "xavier", gain=1.0)
    fan_in = fan_out = 64 * 27
    assert m[0].weight.std().item() == pytest.approx(math.sqrt(2.0 / (fan_in + fan_out)), rel=0.03)
    m = init_weights(net(), "kaiming")
    assert m[2].weight.std().item() == pytest.approx(math.sqrt(2.0 / 256), rel=0.03)
    m = init_weights(net(), "orthogonal", gain=0.5)
    w = m[2].weight  # 512 x 256: orthonormal columns scaled by gain
    assert torch.allclose(w.T @ w, 0.25 * torch.eye(256), atol=1e-4)
    with pytest.raises(ConfigError, match="unknown init scheme"):
        init_weights(net(), "uniform")


def test_lazy_module_needs_a_forward_first():
    with pytest.raises(ConfigError, match="forward"):
        init_weights(nn.LazyConv3d(4, 3))
