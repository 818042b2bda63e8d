"""The procedural phantoms: determinism, anatomy, contrasts, units, domains, OCT anomalies, expression,
and the dataset writer."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medgen.data.phantoms import (
    PHANTOM_KINDS,
    make_expression,
    make_head,
    make_oct_bscan,
    write_phantom_dataset,
)
from medgen.data.phantoms.head import BACKGROUND, CSF, GM, LESION, NUCLEI, SCALP, SKULL, WM
from medgen.errors import MedgenError

SHAPE, SPACING = (32, 32, 32), (6.0, 6.0, 6.0)


@pytest.fixture(scope="module")
def head():
    return make_head(1, SHAPE, SPACING, lesions=4)


@pytest.fixture(scope="module")
def head_b():
    return make_head(1, SHAPE, SPACING, lesions=4, domain="B")


def med(img, tissue, label, erode=False):
    m = tissue == label
    if erode:
        m = ndimage.binary_erosion(m)
    assert m.sum() > 0, f"label {label} empty"
    return float(np.median(img[m]))


# ---------------------------------------------------------------- head: structure


def test_head_keys_types_and_affine(head):
    arrays = {k: v for k, v in head.items() if k != "affine"}
    assert set(arrays) == {"tissue", "head_mask", "brain_mask", "lesion", "t1", "t2", "pd", "flair", "ct", "pet"}
    for k, v in arrays.items():
        assert v.shape == SHAPE, k
        assert v.dtype == (np.uint8 if k in ("tissue", "head_mask", "brain_mask", "lesion") else np.float32), k
    aff = head["affine"]
    np.testing.assert_allclose(np.diag(aff)[:3], SPACING)
    centre = aff @ np.array([(SHAPE[0] - 1) / 2, (SHAPE[1] - 1) / 2, (SHAPE[2] - 1) / 2, 1.0])
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)
    t = head["tissue"]
    np.testing.assert_array_equal(head["head_mask"], t > 0)
    np.testing.assert_array_equal(head["brain_mask"], np.isin(t, [CSF, GM, WM, NUCLEI, LESION]))
    np.testing.assert_array_equal(head["lesion"], t == LESION)


def test_head_deterministic_by_seed():
    a = make_head(5, (24, 24, 24), (8.0, 8.0, 8.0))
    b = make_head(5, (24, 24, 24), (8.0, 8.0, 8.0))
    c = make_head(6, (24, 24, 24), (8.0, 8.0, 8.0))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert (a["tissue"] != c["tissue"]).mean() > 0.01  # a different subject, not a copy
    assert not np.array_equal(a["t1"], c["t1"])


def test_noise_free_mr_differs_only_by_the_noise():
    noisy = make_head(5, (24, 24, 24), (8.0, 8.0, 8.0))
    clean = make_head(5, (24, 24, 24), (8.0, 8.0, 8.0), mr_noise=False)
    for k in ("tissue", "brain_mask", "ct", "pet"):
        np.testing.assert_array_equal(noisy[k], clean[k], err_msg=k)
    brain = noisy["brain_mask"] > 0
    for k in ("t1", "t2", "pd", "flair"):
        residual = (noisy[k] - clean[k])[brain]
        # domain A's Rician noise sigma is 2 % of the mean GM / WM signal; the clean image keeps every other term
        assert 0.01 < residual.std() / clean[k][brain].mean() < 0.04, k
        assert abs(residual.mean()) < 0.01 * clean[k][brain].mean(), k
        assert clean[k][noisy["tissue"] == 0].max() < noisy[k][noisy["tissue"] == 0].max(), k


def test_all_tissue_classes_and_lesion_control(head):
    counts = np.bincount(head["tissue"].ravel(), minlength=8)
    assert np.all(counts[:8] > 0), counts
    assert counts[GM] > 0.4 * counts[WM]  # a real cortex, not a thin rind
    healthy = make_head(1, SHAPE, SPACING, lesions=0)
    assert healthy["lesion"].sum() == 0 and LESION not in healthy["tissue"]
    # Same anatomy apart from the lesions: lesions only replace white matter.
    changed = healthy["tissue"] != head["tissue"]
    assert np.all(head["tissue"][changed] == LESION) and np.all(healthy["tissue"][changed] == WM)


def test_lesions_lie_in_white_matter(head):
    t = head["tissue"]
    les = t == LESION
    # Inside the white-matter region: the healthy twin has white matter there (also checked above), and
    # no lesion voxel touches air, scalp or bone.
    healthy = make_head(1, SHAPE, SPACING, lesions=0)["tissue"]
    assert np.all(healthy[les] == WM)
    assert not np.any(ndimage.binary_dilation(les) & np.isin(t, [BACKGROUND, SCALP, SKULL]))
    n_blobs = ndimage.label(les, structure=np.ones((3, 3, 3)))[1]
    assert 1 <= n_blobs <= 4


def test_skull_encloses_brain_and_scalp_encloses_skull(head):
    t = head["tissue"]
    # Voxels not in the skull, 6-connected: the brain's component must not reach the air.
    comp, _ = ndimage.label(t != SKULL)
    brain_comps = set(np.unique(comp[head["brain_mask"] > 0]))
    air_comps = set(np.unique(comp[t == BACKGROUND]))
    assert brain_comps and not (brain_comps & air_comps)
    # Skull never touches air directly on the cranium: scalp lies between them.
    assert not np.any(ndimage.binary_dilation(t == SKULL) & (t == BACKGROUND))


# ---------------------------------------------------------------- head: intensities


def test_mr_contrast_ordering(head):
    t = head["tissue"]
    t1, t2, pd, fl = (head[k] for k in ("t1", "t2", "pd", "flair"))
    assert med(t1, t, WM) > med(t1, t, GM) > med(t1, t, CSF)
    assert med(t1, t, LESION) < med(t1, t, WM)
    assert med(t2, t, CSF) > med(t2, t, GM) > med(t2, t, WM)
    assert med(t2, t, LESION) > med(t2, t, WM)
    assert med(fl, t, LESION) > med(fl, t, GM) > med(fl, t, WM) > med(fl, t, CSF)
    assert med(pd, t, GM) > med(pd, t, WM) and med(pd, t, CSF) > med(pd, t, WM)
    for img in (t1, t2, pd, fl):
        assert img.min() >= 0
        assert med(img, t, BACKGROUND) < 0.05 * med(img, t, WM)  # dark air (Rician floor only)
        assert med(img, t, SKULL) < med(img, t, WM)


def test_ct_hounsfield_ranges(head):
    t, ct = head["tissue"], head["ct"]
    assert med(ct, t, BACKGROUND) == pytest.approx(-1000, abs=20)
    bone = med(ct, t, SKULL, erode=False)
    assert 600 < bone < 1600 and np.percentile(ct[t == SKULL], 95) > 1000
    for label in (GM, WM):
        assert 15 < med(ct, t, label, erode=True) < 60
    assert med(ct, t, GM, erode=True) > med(ct, t, WM, erode=True)
    assert -10 < med(ct, t, SCALP, erode=True) < 80
    assert ct.min() >= -1024


def test_pet_activity(head):
    t, pet = head["tissue"], head["pet"]
    gm, wm = med(pet, t, GM, erode=True), med(pet, t, WM, erode=True)
    assert gm / wm > 2.0  # FDG: about 3.3 before the PET resolution blur
    assert med(pet, t, NUCLEI) > wm and med(pet, t, CSF) < med(pet, t, GM)
    assert pet.min() >= 0 and np.median(pet[t == BACKGROUND]) < 0.05 * wm
    assert 1000 < wm < 10000  # Bq/mL, FDG-like scale


def test_domains_share_anatomy_but_not_contrast(head, head_b):
    for k in ("tissue", "lesion", "brain_mask", "ct", "pet"):
        np.testing.assert_array_equal(head[k], head_b[k], err_msg=k)
    t = head["tissue"]

    def gm_wm_contrast(h):
        w, g = med(h["t1"], t, WM, erode=True), med(h["t1"], t, GM)
        return (w - g) / (w + g)

    assert gm_wm_contrast(head_b) < 0.8 * gm_wm_contrast(head)
    # Noise: the Rayleigh floor in air scales with the noise sigma.
    air = ndimage.binary_erosion(t == BACKGROUND, iterations=2)
    assert np.mean(head_b["t1"][air]) > 1.5 * np.mean(head["t1"][air])
    # Thick slices in B: tissue edges along k are blurred more than along i (edge step minus noise floor).
    def sharpness(img, axis):
        d = np.abs(np.diff(img, axis=axis))
        edge = np.diff(t.astype(int), axis=axis) != 0
        return d[edge].mean() - d[~edge].mean()

    ratio_a = sharpness(head["t1"], 2) / sharpness(head["t1"], 0)
    ratio_b = sharpness(head_b["t1"], 2) / sharpness(head_b["t1"], 0)
    assert ratio_b < 0.7 * ratio_a


def test_bad_head_arguments():
    with pytest.raises(MedgenError, match="domain"):
        make_head(0, (16, 16, 16), domain="C")
    with pytest.raises(MedgenError, match="seed"):
        make_head(-1, (16, 16, 16))


# ---------------------------------------------------------------- OCT


def test_oct_normal_scan():
    a = make_oct_bscan(3, (128, 160))
    b = make_oct_bscan(3, (128, 160))
    np.testing.assert_array_equal(a["image"], b["image"])
    img, retina = a["image"], a["retina_mask"].astype(bool)
    assert img.shape == (128, 160) and img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
    assert a["mask"].sum() == 0
    assert 0.05 < retina.mean() < 0.5
    # Dark vitreous above the retina, brighter retina.
    first_row = retina.argmax(axis=0).min()
    assert img[: max(first_row - 2, 1)].mean() < 0.5 * img[retina].mean()
    assert not np.array_equal(img, make_oct_bscan(4, (128, 160))["image"])


@pytest.mark.parametrize("kind,darker", [("fluid", True), ("foci", False), ("drusen", None)])
def test_oct_anomalies_change_the_image_where_the_mask_is(kind, darker):
    normal = make_oct_bscan(7, (128, 128))
    abn = make_oct_bscan(7, (128, 128), anomalies=[kind])
    mask = abn["mask"].astype(bool)
    assert mask.sum() > 5
    diff = np.abs(abn["image"] - normal["image"])
    assert diff[mask].mean() > 4 * diff[~mask].mean()
    if darker is True:
        assert abn["image"][mask].mean() < normal["image"][mask].mean() - 0.05
    elif darker is False:
        assert abn["image"][mask].mean() > normal["image"][mask].mean() + 0.2
    else:  # drusen sit just above Bruch's membrane, i.e. at the bottom of the retina
        rows = np.nonzero(mask)[0]
        assert np.all(abn["retina_mask"][mask] == 1)
        bottom = abn["retina_mask"].shape[0] - 1 - np.argmax(abn["retina_mask"][::-1], axis=0)
        assert np.all(rows <= bottom.max())


def test_oct_unknown_anomaly():
    with pytest.raises(MedgenError, match="unknown OCT anomalies"):
        make_oct_bscan(0, anomalies=["holes"])


# ---------------------------------------------------------------- expression


def test_expression_programmes_drive_their_genes():
    e = make_expression(2, n_samples=200, n_genes=300, n_programs=4)
    x, lab, prog, load = e["matrix"], e["labels"], e["programs"], e["loadings"]
    assert x.shape == (200, 300) and prog.shape == (200, 4) and load.shape == (4, 300)
    assert x.index[0] == "SAMPLE0000" and x.columns[-1] == "GENE0299"
    assert (x.values >= 0).all() and list(lab.columns) == ["group", "sex"]
    for p in range(4):
        genes = load.columns[np.abs(load.values[p]) > 0]
        others = load.columns[(np.abs(load.values) == 0).all(axis=0)]
        r = [abs(np.corrcoef(prog.iloc[:, p], x[g])[0, 1]) for g in genes]
        r0 = [abs(np.corrcoef(prog.iloc[:, p], x[g])[0, 1]) for g in others[:50]]
        assert np.median(r) > 0.6 and np.median(r0) < 0.2, (p, np.median(r), np.median(r0))
    # Labels follow the programmes: sex from programme 2, group from programmes 0-1.
    male = (lab["sex"] == "male").values
    assert prog["program2"][male].min() > prog["program2"][~male].max() - 2.0
    assert prog["program2"][male].mean() - prog["program2"][~male].mean() > 3.0
    means = prog.groupby(lab["group"], observed=True)[["program0", "program1"]].mean().values
    assert np.min(np.linalg.norm(means[:, None] - means[None], axis=-1)[~np.eye(3, dtype=bool)]) > 2.0
    np.testing.assert_array_equal(x.values, make_expression(2, 200, 300, 4)["matrix"].values)


def test_expression_labels_recoverable_from_a_linear_latent_space():
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    e = make_expression(0, n_samples=300, n_genes=400)
    z = PCA(10, random_state=0).fit_transform(e["matrix"].values)
    for label in ("group", "sex"):
        acc = cross_val_score(LogisticRegression(max_iter=500), z, e["labels"][label].cat.codes, cv=3).mean()
        assert acc > 0.9, (label, acc)


# ---------------------------------------------------------------- dataset writer


def _load(path: Path) -> dict:
    meta = json.loads(path.read_text())
    assert meta["generator"] == "medgen.data.phantoms"
    for split in ("training", "validation", "test"):
        for case in meta[split]:
            assert "id" in case
            for key in meta["keys"]:
                assert (path.parent / case[key]).is_file(), (split, key)
    return meta


def test_write_head_dataset(tmp_path):
    p = write_phantom_dataset("head", tmp_path / "head", n_cases=3, seed=1, shape=(24, 24, 24),
                              spacing=(8.0, 8.0, 8.0))
    meta = _load(p)
    assert [len(meta[s]) for s in ("training", "validation", "test")] == [1, 1, 1]
    assert meta["keys"]["low_dose"] == "image" and meta["keys"]["tissue"] == "label"
    assert meta["simulated"]["low_dose"]["simulated"] and meta["simulated"]["low_dose"]["fraction"] == 0.25
    case = meta["training"][0]
    img = nib.load(p.parent / case["ct"])
    np.testing.assert_allclose(img.affine[:3, :3], np.diag([8.0, 8.0, 8.0]))
    assert img.shape == (24, 24, 24)
    full = nib.load(p.parent / case["full_dose"]).get_fdata()
    low = nib.load(p.parent / case["low_dose"]).get_fdata()
    brain = nib.load(p.parent / case["brain_mask"]).get_fdata() > 0
    assert abs(low[brain].mean() / full[brain].mean() - 1) < 0.05  # thinning keeps the mean
    assert np.std(low - full) > 0.5 * np.std(full - nib.load(p.parent / case["activity"]).get_fdata())
    assert np.asanyarray(nib.load(p.parent / case["lesion"]).dataobj).dtype == np.uint8
    # Same seed -> same dataset content.
    q = write_phantom_dataset("head", tmp_path / "head2", n_cases=3, seed=1, shape=(24, 24, 24),
                              spacing=(8.0, 8.0, 8.0))
    np.testing.assert_array_equal(low, nib.load(q.parent / case["low_dose"]).get_fdata())


def test_write_lesion_domains_dataset(tmp_path):
    p = write_phantom_dataset("lesion_domains", tmp_path / "uda", n_cases=3, shape=(24, 24, 24),
                              spacing=(8.0, 8.0, 8.0))
    meta = _load(p)
    for split in ("training", "validation", "test"):
        assert sorted(c["domain"] for c in meta[split]) == ["A", "B"]
    assert set(meta["keys"]) == {"t1", "t2", "flair", "lesion", "brain_mask"}


def test_write_oct_dataset(tmp_path):
    from PIL import Image

    p = write_phantom_dataset("oct", tmp_path / "oct", n_cases=8, shape=(64, 64))
    meta = _load(p)
    assert all(c["label"] == 0 for c in meta["training"] + meta["validation"])
    test_labels = [c["label"] for c in meta["test"]]
    assert 0 in test_labels and 1 in test_labels
    for c in meta["test"]:
        mask = np.asarray(Image.open(p.parent / c["mask"]))
        assert mask.shape == (64, 64) and (mask.max() > 0) == bool(c["label"])
    img = np.asarray(Image.open(p.parent / meta["training"][0]["image"]))
    assert img.dtype == np.uint8 and img.max() > 100
    q = write_phantom_dataset("oct", tmp_path / "oct_nii", n_cases=4, shape=(64, 64), format="nifti")
    case = json.loads(q.read_text())["training"][0]
    assert nib.load(q.parent / case["image"]).shape == (64, 64)


def test_write_expression_dataset(tmp_path):
    import pandas as pd

    p = write_phantom_dataset("expression", tmp_path / "expr", n_cases=40, n_genes=60)
    meta = _load(p)
    x = pd.read_csv(p.parent / meta["tables"]["expression"], sep="\t", index_col=0)
    assert x.shape == (40, 60)
    ids = [c["id"] for s in ("training", "validation", "test") for c in meta[s]]
    assert sorted(ids) == sorted(x.index) and len(meta["test"]) == 4
    labels = pd.read_csv(p.parent / meta["tables"]["labels"], sep="\t", index_col=0)
    assert list(labels.columns) == ["group", "sex"]


def test_overwrite_rules(tmp_path):
    out = tmp_path / "ds"
    write_phantom_dataset("expression", out, n_cases=10, n_genes=20)
    with pytest.raises(MedgenError, match=str(out)):
        write_phantom_dataset("expression", out, n_cases=10, n_genes=20)
    write_phantom_dataset("expression", out, n_cases=12, n_genes=20, overwrite=True)
    assert len(pd_rows(out / "expression.tsv")) == 12
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(MedgenError, match="not a medgen phantom dataset"):
        write_phantom_dataset("expression", foreign, n_cases=10, overwrite=True)
    assert (foreign / "notes.txt").exists()


def pd_rows(path: Path) -> list[str]:
    return path.read_text().splitlines()[1:]


def test_kinds_and_bad_options(tmp_path):
    assert set(PHANTOM_KINDS) == {"head", "lesion_domains", "oct", "expression"}
    assert all(isinstance(v, str) and v for v in PHANTOM_KINDS.values())
    with pytest.raises(MedgenError, match="unknown phantom kind"):
        write_phantom_dataset("knee", tmp_path / "x")
    with pytest.raises(MedgenError, match="unknown options"):
        write_phantom_dataset("head", tmp_path / "y", n_cases=1, dose=0.5)
