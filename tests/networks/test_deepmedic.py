import pytest
import torch

from medgen.errors import ConfigError
from medgen.networks import DeepMedic, DomainDiscriminator


def small(**kw):
    args = dict(channels=(4, 4, 6, 6), residual_layers=(4,), fc_channels=(8, 8), feature_layers=(2, 4))
    args.update(kw)
    return DeepMedic(3, in_channels=2, out_channels=3, **args)


def test_default_sizes_match_the_paper():
    net = DeepMedic()
    assert net.margin == 8
    sizes = net.input_sizes(21)
    assert sizes.normal == (37, 37, 37)  # training segment 37^3 -> 21^3
    assert sizes.subsampled == ((23, 23, 23),)  # 7^3 output at 1/3 resolution + 2 * 8
    assert sizes.context == (69, 69, 69)
    assert net.output_size(69) == (21, 21, 21)
    assert DeepMedic(subsample_factors=(3, 5)).input_sizes(21).context == (105, 105, 105)  # (5 + 16) * 5
    assert [p.out_channels for p in [net.normal.layers[0]]] == [30]
    assert net.feature_channels == (30, 40, 40, 50, 30, 40, 40, 50, 150, 150)


def test_forward_context_patch_and_features():
    net = small()
    sizes = net.input_sizes(5)
    assert sizes.normal == (13,) * 3 and sizes.subsampled == ((11,) * 3,) and sizes.context == (33,) * 3
    x = torch.randn(2, 2, *sizes.context)
    logits = net(x, output_size=5)
    assert logits.shape == (2, 3, 5, 5, 5)
    logits, feats = net(x, return_features=True)  # largest output that fits 33: 9
    assert logits.shape == (2, 3, 9, 9, 9)
    # normal L2, L4; subsampled L2, L4 (upsampled, cropped to the normal layer's size); FC1, FC2
    assert [tuple(f.shape[1:]) for f in feats] == [
        (4, 13, 13, 13), (6, 9, 9, 9), (4, 13, 13, 13), (6, 9, 9, 9), (8, 9, 9, 9), (8, 9, 9, 9)
    ]
    assert tuple(f.shape[1] for f in feats) == net.feature_channels
    d = DomainDiscriminator(3, in_channels=sum(net.feature_channels), channels=(8,))
    assert d(feats).shape == (2, 1)


def test_split_inputs_are_centred_and_pre_extracted_inputs_agree():
    net = small().eval()
    ramp = torch.arange(33, dtype=torch.float32)
    x = ramp.view(1, 1, 33, 1, 1).expand(1, 2, 33, 33, 33).contiguous()
    x_normal, (x_sub,) = net.split_inputs(x, output_size=5)
    assert x_normal.shape[2:] == (13, 13, 13) and x_sub.shape[2:] == (11, 11, 11)
    # both crops centred on voxel 16: the mean of a linear ramp is its centre
    assert x_normal[0, 0, :, 0, 0].mean() == pytest.approx(16.0)
    assert x_sub[0, 0, :, 0, 0].mean() == pytest.approx(16.0)
    assert torch.allclose(x_sub[0, 0, :, 0, 0], torch.arange(1.0, 33.0, 3.0))  # avg of (0,1,2)=1, (3,4,5)=4, ...
    stride = small(subsample_mode="stride")
    assert torch.allclose(stride.split_inputs(x, 5)[1][0][0, 0, :, 0, 0], torch.arange(1.0, 33.0, 3.0))
    xr = torch.randn(1, 2, 33, 33, 33)
    a = net(xr, output_size=5)
    xn, subs = net.split_inputs(xr, 5)
    assert torch.allclose(a, net(xn, subs))


def test_residual_pads_channels():
    net = small(fc_channels=(8,), subsample_factors=())
    x = torch.randn(2, 2, 9, 9, 9)
    outs = net.normal(x)
    # layer 4 = conv(...) + crop(layer 2 output) zero-padded from 4 to 6 channels
    layer4 = net.normal.layers[3](outs[2])
    assert torch.allclose(outs[3][:, :4], layer4[:, :4] + outs[1][:, :, 2:-2, 2:-2, 2:-2], atol=1e-6)
    assert torch.allclose(outs[3][:, 4:], layer4[:, 4:])
    assert net(x).shape == (2, 3, 1, 1, 1)


def test_errors_and_2d():
    with pytest.raises(ConfigError, match="odd"):
        DeepMedic(subsample_factors=(2,))
    net = small()
    with pytest.raises(ConfigError, match="too small"):
        net(torch.randn(1, 2, 20, 20, 20))
    with pytest.raises(ConfigError, match="smaller than"):
        net(torch.randn(1, 2, 13, 13, 13), [torch.randn(1, 2, 7, 7, 7)])
    net2 = DeepMedic(2, 1, 2, channels=(4, 4, 4), residual_layers=(), fc_channels=(4,), subsample_factors=(3,))
    s = net2.input_sizes(4)
    assert net2(torch.randn(1, 1, *s.context), output_size=4).shape == (1, 2, 4, 4)
