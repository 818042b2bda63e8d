"""lesion_uda on scans as users bring them: no brain mask (derived for skull-stripped scans, refused for whole
heads), sequences and domains checked for every case before training, a test case from a third domain (or
none) recorded as such rather than as the target."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from medgen.data.phantoms import write_phantom_dataset
from medgen.engine.commands import build_config, infer, train_config
from medgen.errors import DataError

SMOKE = "configs/lesion_uda_smoke.yaml"


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("lesion_uda_inputs")
    return write_phantom_dataset("lesion_domains", root / "ld", n_cases=4, seed=5, shape=(32, 32, 32),
                                 spacing=(4.5, 4.5, 4.5), lesions=4).parent


def _copy(phantoms, dst, strip=False, drop_mask=False):
    """A copy of the phantoms; `strip`: images zero outside the brain (skull-stripped); `drop_mask`: no brain_mask."""
    shutil.copytree(phantoms, dst)
    meta = json.loads((dst / "dataset.json").read_text())
    for split in ("training", "validation", "test"):
        for case in meta[split]:
            brain = np.asarray(nib.load(dst / case["brain_mask"]).dataobj) > 0
            if strip:
                for k in ("t1", "t2", "flair"):
                    img = nib.load(dst / case[k])
                    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, np.float32) * brain, img.affine), dst / case[k])
            if drop_mask:
                del case["brain_mask"]
    (dst / "dataset.json").write_text(json.dumps(meta))
    return dst, meta


def _cfg(dataset, tmp_path, *extra):
    return build_config("lesion_uda", SMOKE, [f"data.dataset={dataset}", f"output.root={tmp_path}", "output.name=r",
                                              *extra])


def test_brain_mask_derived_for_skull_stripped_scans(phantoms, tmp_path):
    given = _cfg(phantoms, tmp_path)
    dst, meta = _copy(phantoms, tmp_path / "stripped", strip=True, drop_mask=True)
    derived = _cfg(dst, tmp_path)
    a = given[0](given[1]).data.load("training")[0]
    b = derived[0](derived[1]).data.load("training")[0]
    assert b.fields["brain_mask_source"] == "derived"
    # the brain: where the stripped sequences are above zero (the phantom's brain mask, up to zero-valued voxels)
    agree = (a["brain_mask"] > 0) == (b["brain_mask"] > 0)
    assert float(agree.float().mean()) > 0.999
    inside = b["brain_mask"][0] > 0
    for k in ("t1", "t2", "flair"):  # z-scored inside the derived mask, as with a given one
        x = b[k][0][inside]
        assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-2
        torch.testing.assert_close(b[k][0][inside], a[k][0][inside], atol=0.05, rtol=0.05)


def test_whole_head_without_mask_is_refused_with_the_reason(phantoms, tmp_path):
    dst, _ = _copy(phantoms, tmp_path / "head", drop_mask=True)
    cls, cfg = _cfg(dst, tmp_path)
    with pytest.raises(DataError, match=r"t1.nii.gz.*no 'brain_mask' key.*does not look skull-stripped.*"
                                        r"data.mask_key=''"):
        cls(cfg).data.load("training")
    cls, cfg = _cfg(dst, tmp_path, "data.mask_key=", "train.iterations=1")
    with pytest.warns(UserWarning, match="WHOLE volume"):  # deliberately, and loudly
        train_config(cls, cfg)


def test_sequences_and_domains_of_every_case_checked_before_training(phantoms, tmp_path):
    dst, meta = _copy(phantoms, tmp_path / "t2only")
    for k in ("t1", "flair"):
        del meta["test"][0][k]  # a T2-only scan in the test split
    meta["validation"][0]["domain"] = "C"
    (dst / "dataset.json").write_text(json.dumps(meta))
    cls, cfg = _cfg(dst, tmp_path, "train.iterations=2")
    with pytest.raises(DataError) as err:
        train_config(cls, cfg)
    text = str(err.value)
    assert f"test case '{meta['test'][0]['id']}' has no ['t1', 'flair']" in text
    assert f"validation case '{meta['validation'][0]['id']}' has domain='C'" in text
    assert "data.channels=['t2']" in text  # what every case has
    assert not (tmp_path / "lesion_uda" / "r" / "checkpoints" / "last.pt").exists()  # nothing trained


def test_test_case_of_a_third_domain_is_recorded_as_such(phantoms, tmp_path, capsys):
    dst, meta = _copy(phantoms, tmp_path / "third")
    third, unnamed = meta["test"][0]["id"], meta["test"][1]["id"]
    meta["test"][0]["domain"] = "stroke_site"
    del meta["test"][1]["domain"]
    (dst / "dataset.json").write_text(json.dumps(meta))
    cls, cfg = _cfg(dst, tmp_path, "train.iterations=2")
    summary = train_config(cls, cfg)
    result = infer(summary["run_dir"])
    assert result["failed"] == 0
    cases = json.loads((tmp_path / "lesion_uda" / "r" / "predictions" / "manifest.json").read_text())["cases"]
    assert cases[third]["fields"]["domain"] == "stroke_site"
    assert cases[unnamed]["fields"]["domain"] == "unspecified"
    # a scan that cannot be segmented later on: the console says which case and why, not only a count
    from medgen.cli import main

    dst2, meta2 = _copy(phantoms, tmp_path / "later")
    del meta2["test"][0]["t1"]
    (dst2 / "dataset.json").write_text(json.dumps(meta2))
    assert main(["infer", str(summary["run_dir"]), str(dst2), "--out", str(tmp_path / "p2")]) == 1
    err = capsys.readouterr().err
    assert f"failed: case '{meta2['test'][0]['id']}'" in err and "no key(s) ['t1']" in err
