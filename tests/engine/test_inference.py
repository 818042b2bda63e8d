import pytest
import torch
from torch import nn

from medgen.inference.windows import sliding_window, valid_sliding_window


def _valid_net(dims=3):
    conv = nn.Conv3d if dims == 3 else nn.Conv2d
    torch.manual_seed(0)
    return nn.Sequential(conv(1, 4, 5), nn.ReLU(), conv(4, 2, 3)).eval()  # margin 3 on every side


@pytest.mark.parametrize("dims,shape", [(3, (21, 18, 13)), (2, (37, 29))])
def test_valid_window_stitching_equals_whole_forward(dims, shape):
    """Output windows smaller than input windows, mirror-padded: the stitched result equals one forward
    pass over the padded whole image (constant blending, any overlap)."""
    net = _valid_net(dims)
    x = torch.randn(1, 1, *shape)
    margin = 3
    pad = [margin] * (2 * dims)
    with torch.no_grad():
        whole = net(nn.functional.pad(x, pad, mode="reflect"))
    in_size, out_size = (14,) * dims, (8,) * dims
    for overlap in (0.0, 0.5):
        out = valid_sliding_window(lambda w: net(w), x, in_size, out_size, overlap=overlap, window_batch=3)["output"]
        assert out.shape == whole.shape
        torch.testing.assert_close(out, whole, atol=1e-5, rtol=1e-5)


def test_valid_window_rejects_odd_margin():
    with pytest.raises(ValueError, match="even margin"):
        valid_sliding_window(lambda w: w, torch.zeros(1, 1, 8, 8), (9, 9), (4, 4))


def test_monai_window_pointwise_net_is_exact_and_returns_dicts():
    net = nn.Conv3d(2, 3, 1).eval()
    x = torch.randn(1, 2, 20, 17, 9)
    with torch.no_grad():
        whole = net(x)
        out = sliding_window(lambda w: {"a": net(w), "b": net(w) * 2}, x, (8, 8, 8), overlap=0.25, blend="gaussian",
                             stitch_on_cpu="always")
    torch.testing.assert_close(out["a"], whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["b"], 2 * whole, atol=1e-5, rtol=1e-5)
    assert out["a"].device.type == "cpu"
    # called outside no_grad (a user's script), trainable weights build no graph
    free = sliding_window(lambda w: {"a": net(w)}, x, (8, 8, 8), overlap=0.25)
    assert not free["a"].requires_grad


def test_volume_smaller_than_window_is_padded_and_cropped_back():
    calls = []

    def predictor(w):
        calls.append(tuple(w.shape[2:]))
        return w * 2

    x = torch.randn(1, 1, 10, 16, 7)
    out = sliding_window(predictor, x, (16, 16, 16), overlap=0.25)["output"]
    assert all(c == (16, 16, 16) for c in calls)  # the network always sees whole windows
    assert out.shape == x.shape
    torch.testing.assert_close(out, 2 * x)


def test_valid_windows_blend_as_monai_does():
    """The valid-convolution path weighs overlapping windows with MONAI's importance map, so with output
    windows as large as the input ones it gives MONAI's sliding_window_inference result exactly."""
    from medgen.inference.windows import sliding_window, valid_sliding_window

    torch.manual_seed(0)
    x = torch.rand(1, 1, 20, 18, 16)

    def window_mean(w):  # depends on where the window lies, so the blend weights show in the result
        return w.mean(dim=(2, 3, 4), keepdim=True).expand_as(w).clone()

    for blend in ("gaussian", "constant"):
        same = sliding_window(window_mean, x, (8, 8, 8), overlap=0.5, blend=blend)["output"]
        valid = valid_sliding_window(window_mean, x, (8, 8, 8), (8, 8, 8), overlap=0.5, blend=blend)["output"]
        torch.testing.assert_close(valid, same)
