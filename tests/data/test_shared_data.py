"""Every image under ../shared/data loads through medgen's loaders and presets (skipped when absent).

This is what a user's real files look like: int16 / uint8 / big-endian float, LAS / LPS / RAS, 2D
masks, both OCT layouts. Each file must load, have a sensible shape and give finite normalised values
whose inverse returns the input's units.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medgen.data.io import load_bscan, load_header, load_image
from medgen.data.presets import get_preset, invert_intensity

pytestmark = pytest.mark.shared_data

LABEL_WORDS = ("mask", "seg")


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name.endswith((".nii", ".nii.gz")))


def _check_volume(path: Path, preset_name: str) -> None:
    img = load_image(path, expect_dims=3)
    assert img.ndim == 4 and img.shape[0] == 1 and min(img.shape[1:]) >= 32, (path, img.shape)
    x = img.numpy()
    if any(w in path.name.lower() for w in LABEL_WORDS):
        assert np.all(np.mod(x, 1) == 0) and x.max() > 0, path  # integer labels, not empty
        return
    y, params = get_preset(preset_name).forward(img)
    yn = y.numpy()
    assert np.isfinite(yn).all(), path
    if preset_name in ("mr", "ct"):
        assert yn.min() >= -1 and yn.max() <= 1, path
    if preset_name == "pet":
        assert yn.min() >= x.min() / params["scale"] - 1e-6 and np.percentile(yn[yn > 0], 50) < 1.5, path
    back = invert_intensity(y, params).numpy()
    if preset_name == "pet":
        np.testing.assert_allclose(back, x, rtol=1e-5, atol=1e-3)
    elif preset_name == "mr":
        # voxels at p_low map to -1 like the background (documented): compare above it
        span = params["high"] - params["low"]
        inside = (x > params["low"] + 1e-4 * span) & (x < params["high"])
        np.testing.assert_allclose(back[inside], x[inside], rtol=1e-4, atol=1e-3)


def test_pet_volumes(shared_data):
    files = _images(shared_data / "pet_lowdose")
    assert len(files) == 5
    for p in files:
        _check_volume(p, "pet")
    hdr = load_header(shared_data / "pet_lowdose/amyloid_pet/subj01/pet.nii.gz")
    assert hdr.shape == (128, 128, 89) and hdr.spacing == pytest.approx((2.0, 2.0, 2.0), abs=1e-3)


def test_mr_volumes(shared_data):
    files = _images(shared_data / "mr_synthesis")
    assert len(files) == 10
    for p in files:
        _check_volume(p, "mr")


def test_lesion_da_volumes(shared_data):
    files = _images(shared_data / "lesion_da")
    assert len(files) == 25
    for p in files:
        _check_volume(p, "mr")
    seg = load_image(next(p for p in files if "seg_fusion" in p.name)).numpy()
    assert set(np.unique(seg).tolist()) <= {0, 1, 2, 4}  # BraTS labels


def test_mr_to_ct_volumes(shared_data):
    files = _images(shared_data / "mr_to_ct")
    assert len(files) == 6
    for p in files:
        _check_volume(p, "ct" if "ct" in p.name.lower() else "mr")


def test_oct_bscans_both_layouts(shared_data):
    root = shared_data / "oct_anogan"
    layouts = set()
    scans = [p for p in _images(root) if "abnormal_masks" not in p.parts]
    assert len(scans) == 29
    for p in scans:
        layouts.add(load_header(p).shape)
        b = load_bscan(p)
        assert b.ndim == 2 and b.shape[0] == b.shape[1] and b.shape[0] in (256, 512), (p, b.shape)
        y, params = get_preset("oct", out_range=(-1, 1)).forward(b)
        assert np.isfinite(y).all() and y.min() >= -1 and y.max() <= 1 and params["in_high"] == 1.0
    assert (512, 512, 3) in layouts and (3, 512, 512) in layouts
    mask = load_image(root / "abnormal_masks" / "mh_case0011.nii.gz", expect_dims=2)
    assert tuple(mask.shape) == (1, 512, 512) and set(np.unique(mask.numpy()).tolist()) == {0.0, 1.0}
    assert load_bscan(root / "abnormal" / "mh_case0011.nii.gz").shape == mask.shape[1:]


def test_expression_parquet(shared_data):
    from medgen.data.tabular import load_matrix

    files = sorted((shared_data / "expression_vae" / "tcga_mirna").glob("*.parquet"))
    matrices = [p for p in files if not p.name.endswith("_groups.parquet")]
    assert len(matrices) == 4
    for p in matrices:
        df = load_matrix(p)
        assert df.shape[0] > 400 and df.shape[1] >= 47 and np.isfinite(df.to_numpy()).all()
