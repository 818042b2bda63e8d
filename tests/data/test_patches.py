"""medgen.data.patches: aligned in/out patches, sampling modes, determinism, border padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgen.data.patches import PatchDataset, PatchSampler, crop_centered
from medgen.errors import ConfigError


def _case(shape=(24, 20, 18)):
    ramp = 1 + np.arange(np.prod(shape), dtype=np.float32).reshape((1,) + shape)  # every voxel unique, > 0
    fg = np.zeros((1,) + shape, np.float32)
    fg[:, 4:20, 4:16, 3:15] = 1
    lesion = np.zeros_like(fg)
    lesion[:, 10:12, 8:10, 8:10] = 1
    return {"id": "c0", "x": ramp, "y": ramp * 2, "fg": fg, "lesion": lesion}


def test_input_and_output_patches_share_the_centre():
    case = _case()
    s = PatchSampler(input_size=12, output_size=(4, 6, 8), pad_mode="constant")
    rng = np.random.default_rng(0)
    for _ in range(30):
        p = s.sample(case, rng, ["x"], ["y"])
        assert p["x"].shape == (1, 12, 12, 12) and p["y"].shape == (1, 4, 6, 8)
        c = tuple(p["centre"])
        expect = case["x"][(0,) + c]
        assert p["x"][0, 6, 6, 6] == expect and p["y"][0, 2, 3, 4] == 2 * expect
        # a valid-conv network trims (12-4)/2, (12-6)/2, (12-8)/2 per side: the target is the input's middle
        np.testing.assert_array_equal(p["y"][0] / 2, p["x"][0, 4:8, 3:9, 2:10])


def test_sizes_validation():
    with pytest.raises(ConfigError, match="even difference"):
        PatchSampler(8, 5).sizes(3)
    with pytest.raises(ConfigError, match="needs fg_key"):
        PatchSampler(8, mode="foreground")
    with pytest.raises(ConfigError, match="unknown patch mode"):
        PatchSampler(8, mode="random")


def test_foreground_and_lesion_balanced_statistics():
    case = _case()
    rng = np.random.default_rng(1)
    fg_s = PatchSampler(8, mode="foreground", fg_key="fg")
    prep = fg_s.prepare(case)
    for _ in range(200):
        c = tuple(fg_s.sample(case, rng, ["x"], prepared=prep)["centre"])
        assert case["fg"][(0,) + c] == 1
    s = PatchSampler(8, mode="lesion_balanced", fg_key="fg", lesion_key="lesion", pos_fraction=0.3)
    prep = s.prepare(case)
    n, pos = 2000, 0
    for _ in range(n):
        p = s.sample(case, rng, ["x"], prepared=prep)
        c = (0,) + tuple(p["centre"])
        in_lesion = case["lesion"][c] == 1
        assert in_lesion == p["positive"]
        assert case["fg"][c] == 1  # negatives come from the foreground too
        pos += in_lesion
    # binomial(2000, 0.3): sd ~ 0.01
    assert abs(pos / n - 0.3) < 0.04


def test_lesion_balanced_without_lesion_falls_back():
    case = _case()
    case["lesion"][:] = 0
    s = PatchSampler(8, mode="lesion_balanced", lesion_key="lesion", pos_fraction=1.0)
    p = s.sample(case, np.random.default_rng(0), ["x"])
    assert p["positive"] is False


def test_dataset_is_deterministic_by_index():
    cases = [_case(), {**_case((16, 16, 16)), "id": "c1"}]
    ds = PatchDataset(cases, PatchSampler(8, 4, mode="foreground", fg_key="fg"), ["x"], ["y"], seed=5, length=100)
    a, b = ds[17], ds[17]
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["centre"], b["centre"]) and a["case_id"] == b["case_id"]
    again = PatchDataset(cases, PatchSampler(8, 4, mode="foreground", fg_key="fg"), ["x"], ["y"], seed=5, length=100)
    assert all(torch.equal(ds[i]["x"], again[i]["x"]) for i in range(0, 100, 7))
    other = PatchDataset(cases, ds.sampler, ["x"], ["y"], seed=6, length=100)
    assert not all(torch.equal(ds[i]["centre"], other[i]["centre"]) for i in range(10))
    assert {ds[i]["case_id"] for i in range(40)} == {"c0", "c1"}
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False)
    batch = next(iter(loader))
    assert batch["x"].shape == (4, 1, 8, 8, 8) and torch.equal(batch["x"][3], ds[3]["x"])


def test_border_padding_reflect_and_constant_2d():
    img = np.arange(25, dtype=np.float32).reshape(1, 5, 5)
    const = crop_centered(img, (0, 0), (4, 4), "constant", pad_value=-1)
    np.testing.assert_array_equal(const[0, :2], -1)
    np.testing.assert_array_equal(const[0, 2:, 2:], img[0, :2, :2])
    refl = crop_centered(img, (0, 0), (4, 4), "reflect")
    expect = np.pad(img[0], 2, mode="reflect")[:4, :4]
    np.testing.assert_array_equal(refl[0], expect)
    edge = crop_centered(img, (4, 4), (4, 4), "edge")
    np.testing.assert_array_equal(edge[0], np.pad(img[0], 2, mode="edge")[4:8, 4:8])
    big = crop_centered(img, (2, 2), (13, 13), "reflect")  # pad wider than the image
    np.testing.assert_array_equal(big[0], np.pad(img[0], 4, mode="reflect"))
    s = PatchSampler((6, 6), (2, 2))
    p = s.sample({"x": img, "y": img}, np.random.default_rng(0), ["x"], ["y"])
    assert p["x"].shape == (1, 6, 6) and p["y"].shape == (1, 2, 2)


