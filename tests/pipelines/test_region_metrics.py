"""Image-to-image metrics inside an optional region (data.region_mask_key: a lesion or tumour map) beside the
whole-mask ones, so an estimate that is right in the brain and wrong in the lesion shows it."""

import json

import numpy as np
import pytest

from medgen.data.phantoms import write_phantom_dataset
from medgen.engine.commands import build_config
from medgen.errors import DataError


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    return write_phantom_dataset("head", tmp_path_factory.mktemp("region") / "head", n_cases=4, seed=3,
                                 shape=(32, 32, 32), lesions=3).parent


def _pipeline(head, tmp_path, *extra):
    cls, cfg = build_config("mr_synthesis", None, [f"data.dataset={head}", "data.patch_size=[16,16,16]",
                                                   "model.ngf=4", "model.ndf=4", f"output.root={tmp_path}", *extra])
    return cls(cfg)


def test_metrics_inside_and_outside_the_lesion(head, tmp_path):
    p = _pipeline(head, tmp_path, "data.region_mask_key=lesion", "model.target_key=flair")
    case = next(c for c in p.data.load("test") if "lesion" in c.arrays and bool(c["lesion"].sum() > 0))
    ref = p.reference(case)
    lesion = case["lesion"].numpy()[0] > 0
    rng = np.random.default_rng(0)
    pred = ref + rng.normal(0, 0.01 * float(np.abs(ref).max()), ref.shape).astype(np.float32)
    pred[lesion] = float(np.median(ref[~lesion & p.metric_mask(case)]))  # the lesion's contrast not recovered
    m = p.evaluate_case({p.output_name: pred[None]}, case)
    assert m["psnr_lesion"] < m["psnr"] < m["psnr_outside_lesion"]
    assert m["psnr_outside_lesion"] - m["psnr_lesion"] > 10
    assert {"ssim_lesion", "mae_lesion", "nmse_outside_lesion"} <= set(m)
    assert "lesion" in p.describe_evaluation()["region_metrics"]
    # without the setting: whole-mask metrics only, as before
    q = _pipeline(head, tmp_path / "b", "model.target_key=flair")
    assert not any(k.endswith("lesion") for k in q.evaluate_case({q.output_name: pred[None]}, q.data.load("test")[0]))


def test_region_on_another_grid_is_an_error_naming_it(head, tmp_path):
    import nibabel as nib
    import shutil

    dst = tmp_path / "h"
    shutil.copytree(head, dst)
    meta = json.loads((dst / "dataset.json").read_text())
    case = meta["test"][0]
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)), str(dst / case["lesion"]))
    p = _pipeline(dst, tmp_path, "data.region_mask_key=lesion")
    with pytest.raises(DataError, match="lesion"):
        p.data.load("test")
