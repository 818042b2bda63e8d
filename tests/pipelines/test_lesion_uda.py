"""lesion_uda (Kamnitsas et al. 2017): end to end on tiny lesion_domains phantoms, a baseline comparison,
bad input, and the method's own properties (no target labels in UDA training, equal domain mixing, the
alpha schedule, multi-layer vs last-layer taps, the U-Net feature hooks, the constructed protocol shift)."""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medgen.data.phantoms import write_phantom_dataset
from medgen.data.protocol_shift import protocol_shift
from medgen.engine.commands import build_config, evaluate, infer, load_trained, train_config
from medgen.errors import ConfigError, DataError, MedgenError
from medgen.metrics.domain_adaptation import gap_closed
from medgen.networks.batchnorm import bn_running_stats
from medgen.networks.unet_segmenter import UNetSegmenter

REPO = Path(__file__).resolve().parents[2]
SMOKE = "configs/lesion_uda_smoke.yaml"


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("lesion_uda")
    return write_phantom_dataset("lesion_domains", root / "ld", n_cases=4, seed=5, shape=(32, 32, 32),
                                 spacing=(4.5, 4.5, 4.5), lesions=4).parent


def _cfg(dataset, tmp_path, *extra):
    return build_config("lesion_uda", SMOKE, [f"data.dataset={dataset}", f"output.root={tmp_path}", "output.name=r",
                                              *extra])


def _evaluate_run(run, domain=None, split="test"):
    """Per-case lesion metrics of a trained run on one split's labelled cases (optionally of one domain), the
    way benchmarks/lesion_uda.py scores its runs."""
    _, _, stages, _ = load_trained(run, device="cpu")
    p = stages[-1]
    for net in p.networks.values():
        net.eval()
    with torch.no_grad():
        return [{"id": c.id, "domain": c["domain"], **p.evaluate_case(p.output_values(c, p.predict_case(c)), c)}
                for c in p.data.load(split) if (domain is None or c["domain"] == domain) and "lesion" in c]


def test_train_resume_infer_evaluate(phantoms, tmp_path):
    cls, cfg = _cfg(phantoms, tmp_path, "train.iterations=6", "train.val_every=3")
    train_config(cls, cfg)
    cls, cfg = _cfg(phantoms, tmp_path, "train.iterations=12", "train.val_every=3")
    summary = train_config(cls, cfg, resume=True)
    run = tmp_path / "lesion_uda" / "r"
    assert summary["steps"] == 12 and (run / "checkpoints" / "last.pt").exists()
    assert not (run / "checkpoints" / "best.pt").exists()  # selection "last": no target labels pick a model
    result = infer(run)
    assert result["failed"] == 0 and result["written"] >= 2
    manifest = json.loads((run / "predictions" / "manifest.json").read_text())
    datalist = json.loads((phantoms / "dataset.json").read_text())
    for case in datalist["test"]:
        files = manifest["cases"][case["id"]]["files"]
        assert [f["output"] for f in files] == ["lesion", "lesion_prob"]
        assert files[0]["kind"] == "label" and manifest["cases"][case["id"]]["fields"]["domain"] == case["domain"]
        src = nib.load(phantoms / case["t1"])
        mask = nib.load(files[0]["path"])
        assert mask.shape == src.shape and mask.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(mask.affine, src.affine)
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
        prob = np.asarray(nib.load(files[1]["path"]).dataobj)
        assert prob.min() >= 0 and prob.max() <= 1
    ev = evaluate(run / "predictions", phantoms)
    assert ev["summary"]["metrics"]["dice"]["n"] == len(datalist["test"])
    assert "hd95" in ev["summary"]["metrics"] and "lesion_f1" in ev["summary"]["metrics"]


def _threshold_baseline(case, lesion_key="lesion"):
    """The simplest lesion segmenter: FLAIR above its 97th percentile inside the brain."""
    flair, brain = case["flair"][0].numpy(), case["brain_mask"][0].numpy() > 0
    return (flair > np.percentile(flair[brain], 97)) & brain


def test_beats_threshold_baseline_on_held_out_source_cases(tmp_path):
    # Margin fixed before looking: the trained segmenter's mean Dice on held-out source-domain cases is at
    # least 0.05 above a FLAIR 97th-percentile threshold inside the brain (seed 0).
    data = write_phantom_dataset("lesion_domains", tmp_path / "ld", n_cases=6, seed=1, shape=(40, 40, 40),
                                 spacing=(3.5, 3.5, 3.5), lesions=5).parent
    cls, cfg = _cfg(data, tmp_path, "model.mode=source_only", "train.iterations=300", "train.batch_size=4",
                    "train.val_every=1000", "train.seed=0")
    run = train_config(cls, cfg)["run_dir"]
    rows = _evaluate_run(run, domain="A", split="test") + _evaluate_run(run, domain="A", split="validation")
    assert rows
    from medgen.metrics import dice

    _, _, stages, _ = load_trained(run, device="cpu")
    cases = {c.id: c for s in ("test", "validation") for c in stages[0].data.load(s)}
    base = [dice(_threshold_baseline(cases[r["id"]]), cases[r["id"]]["lesion"][0].numpy() > 0.5) for r in rows]
    model = [r["dice"] for r in rows]
    assert np.mean(model) >= np.mean(base) + 0.05, (model, base)


def _copy(phantoms, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(phantoms, dst)
    return dst, json.loads((dst / "dataset.json").read_text())


def test_bad_input(phantoms, tmp_path):
    # channels the target lacks
    with pytest.raises(ConfigError, match="data.channels"):
        _cfg(phantoms, tmp_path, "data.target_channels=[t1,flair]", "data.channels=[t2]")
    with pytest.raises(ConfigError, match="in common"):
        _cfg(phantoms, tmp_path, "data.source_channels=[t2]", "data.target_channels=[t1]")
    # a case without its domain field
    dst, meta = _copy(phantoms, tmp_path)
    del meta["training"][0]["domain"]
    (dst / "dataset.json").write_text(json.dumps(meta))
    cls, cfg = _cfg(dst, tmp_path)
    with pytest.raises(DataError, match="dataset.json.*'domain'"):
        cls(cfg).data.load("training")
    # NaN in an image names the file
    dst2 = tmp_path / "nan"
    shutil.copytree(phantoms, dst2)
    meta2 = json.loads((dst2 / "dataset.json").read_text())
    path = dst2 / meta2["training"][0]["flair"]
    img = nib.load(path)
    arr = np.asarray(img.dataobj, dtype=np.float32)
    arr[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(arr, img.affine), path)
    cls, cfg = _cfg(dst2, tmp_path)
    with pytest.raises(DataError, match="flair.nii.gz.*NaN"):
        cls(cfg).data.load("training")
    # wrong shape, missing key (with an empty brain mask in the case left: test_empty_mask_error_names_the_mask_file)
    dst3, meta3 = _copy(phantoms, tmp_path / "x")
    case = meta3["training"][1]
    bm = nib.load(dst3 / case["brain_mask"])
    nib.save(nib.Nifti1Image(np.zeros(bm.shape, np.uint8), bm.affine), dst3 / case["brain_mask"])
    t1 = nib.load(dst3 / meta3["training"][0]["t1"])
    nib.save(nib.Nifti1Image(np.ones((20, 20, 20), np.float32), t1.affine), dst3 / meta3["training"][0]["t1"])
    cls, cfg = _cfg(dst3, tmp_path)
    with pytest.raises(MedgenError, match="t1.nii.gz|shape"):
        cls(cfg).data.load("training")
    meta3["training"] = meta3["training"][1:]
    (dst3 / "dataset.json").write_text(json.dumps(meta3))
    del meta3["training"][0]["t2"]
    (dst3 / "dataset.json").write_text(json.dumps(meta3))
    cls, cfg = _cfg(dst3, tmp_path)
    with pytest.raises(DataError, match=r"no key\(s\) \['t2'\]"):
        cls(cfg).data.load("training")


def test_empty_mask_error_names_the_mask_file(phantoms, tmp_path):
    dst, meta = _copy(phantoms, tmp_path)
    case = meta["training"][1]
    bm = nib.load(dst / case["brain_mask"])
    nib.save(nib.Nifti1Image(np.zeros(bm.shape, np.uint8), bm.affine), dst / case["brain_mask"])
    cls, cfg = _cfg(dst, tmp_path)
    with pytest.raises(MedgenError, match="brain_mask"):
        cls(cfg).data.load("training")


def test_no_target_labels_and_equal_mixing(phantoms, tmp_path):
    cls, cfg = _cfg(phantoms, tmp_path, "train.batch_size=3")
    p = cls(cfg)
    cases = p.data.load("training")
    target = [c for c in cases if c["domain"] == "B"]
    assert target and all("lesion" not in c for c in target)  # UDA never loads target training labels
    assert all("lesion" in c for c in cases if c["domain"] == "A")
    assert all(c["domain"] == "A" for c in p.validation_cases())
    ds = p.train_dataset()
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    batch = next(iter(loader))
    assert batch["source"]["flair"].shape[0] == batch["target"]["flair"].shape[0] == 3
    assert "lesion" not in batch["target"] and batch["source"]["lesion"].shape[2:] == (9, 9, 9)
    assert batch["source"]["flair"].shape[2:] == (33, 33, 33)
    # target_supervised trains on target labels only, source_only needs no target patches
    cls, cfg = _cfg(phantoms, tmp_path, "model.mode=target_supervised")
    p = cls(cfg)
    assert all("lesion" in c for c in p.data.load("training") if c["domain"] == "B")
    assert p.train_dataset().target is None and set(c["domain"] for c in p.validation_cases()) == {"B"}


def test_alpha_schedule_and_taps(phantoms, tmp_path):
    cls, cfg = _cfg(phantoms, tmp_path, "model.alpha_max=0.5", "model.warmup_fraction=0.25", "model.ramp_fraction=0.5")
    p = cls(cfg)
    p.total_steps = 100
    alphas = []
    for s in (0, 24, 25, 50, 75, 99):
        p.step = s
        alphas.append(p.alpha())
    assert alphas == pytest.approx([0, 0, 0, 0.25, 0.5, 0.5])
    nets = p.build_networks()
    multi = nets["D"].stem.in_channels
    assert multi == sum(nets["S"].feature_channels) and len(nets["S"].feature_channels) == 2 * 2 + 2
    cls, cfg = _cfg(phantoms, tmp_path, "model.mode=uda_last_layer")
    nets_last = cls(cfg).build_networks()
    assert nets_last["D"].stem.in_channels == nets_last["S"].feature_channels[-1] < multi
    cls, cfg = _cfg(phantoms, tmp_path, "model.mode=source_only")
    assert set(cls(cfg).build_networks()) == {"S"}


def test_gradient_reversal_step_pushes_segmenter_against_discriminator(phantoms, tmp_path):
    """One uda step after the warm-up: the segmenter's gradient from the D loss is -alpha times the plain one."""
    from medgen.networks.domain import grad_reverse

    cls, cfg = _cfg(phantoms, tmp_path, "model.dropout=0.0")
    p = cls(cfg)
    nets = p.build_networks()
    p.networks = nets
    x = torch.randn(4, 3, 33, 33, 33)
    dom = torch.tensor([[0.0], [0.0], [1.0], [1.0]])
    w = nets["S"].normal.layers[0].weight
    grads = []
    for alpha in (None, 0.3):
        nets["S"].zero_grad()
        _, feats = nets["S"](x, return_features=True, output_size=[9, 9, 9])
        f = feats if alpha is None else [grad_reverse(t, alpha) for t in feats]
        torch.nn.functional.binary_cross_entropy_with_logits(nets["D"](f), dom).backward()
        grads.append(w.grad.clone())
    torch.testing.assert_close(grads[1], -0.3 * grads[0], rtol=1e-4, atol=1e-7)


def test_unet_segmenter_features_and_step(phantoms, tmp_path):
    net = UNetSegmenter(3, 2, 2, features=(4, 4, 8, 8, 8, 4), feature_layers=("down_1", "down_3", "upcat_1"))
    logits, feats = net(torch.randn(2, 2, 32, 32, 32), return_features=True)
    assert logits.shape == (2, 2, 32, 32, 32)
    assert [f.shape[1] for f in feats] == list(net.feature_channels) == [4, 8, 4]
    assert [f.shape[2] for f in feats] == [16, 4, 32]
    with pytest.raises(ConfigError, match="unet_feature_layers"):
        UNetSegmenter(3, 2, 2, features=(4, 4, 8, 8, 8, 4), feature_layers=("nope",))
    cls, cfg = _cfg(phantoms, tmp_path, "model.segmenter=unet", "model.unet_features=[4,4,8,8,8,4]",
                    "data.patch_size=[32,32,32]", "train.iterations=3", "train.val_every=3", "output.name=u")
    run = train_config(cls, cfg)["run_dir"]
    rows = _evaluate_run(run, split="test")
    assert rows and all(0 <= r["dice"] <= 1 for r in rows)
    with pytest.raises(ConfigError, match="multiples of 16"):
        cls, cfg = _cfg(phantoms, tmp_path, "model.segmenter=unet", "data.patch_size=[24,24,24]")
        cls(cfg).build_networks()


def test_gap_closed_and_protocol_shift():
    assert gap_closed(0.2, 0.5, 0.6) == pytest.approx(0.75)
    assert np.isnan(gap_closed(0.5, 0.6, 0.5))
    assert np.isnan(gap_closed(0.03, 0.01, 0.0))  # no gap when target-supervised is not above source-only
    rng = np.random.default_rng(0)
    brain = np.zeros((12, 12, 12), bool)
    brain[2:10, 2:10, 2:10] = True
    imgs = {"flair": (rng.random((12, 12, 12)) * 100 * brain).astype(np.float32)}
    a, info = protocol_shift(imgs, brain, (2.0, 2.0, 2.0), seed=3)
    b, _ = protocol_shift(imgs, brain, (2.0, 2.0, 2.0), seed=3)
    np.testing.assert_array_equal(a["flair"], b["flair"])
    assert a["flair"].shape == (12, 12, 12) and (a["flair"][~brain] == 0).all()
    assert not np.allclose(a["flair"], imgs["flair"]) and info["seed"] == 3
    # thick slices: blocks of 3 along the last axis are constant before noise
    quiet, _ = protocol_shift(imgs, brain, (2.0, 2.0, 2.0), seed=3, params={"noise": 0.0, "bias_std": 0.0})
    np.testing.assert_allclose(quiet["flair"][4, 4, 3], quiet["flair"][4, 4, 4], rtol=1e-5)


# ----- regressions of the follow-up investigation -------------------------------------------------------
def test_zscore_normalisation_keeps_the_lesion_tail(phantoms, tmp_path):
    """DeepMedic's z-score inside the brain mask: mean 0 / std 1 there, and hyperintense lesions keep their
    spread (the clipped percentile preset saturated most source lesion voxels at exactly 1.0)."""
    from medgen.data.presets import ZScorePreset

    rng = np.random.default_rng(0)
    img = rng.normal(500, 50, (1, 16, 16, 16)).astype(np.float32)
    mask = np.zeros_like(img)
    mask[:, 2:14, 2:14, 2:14] = 1
    img[:, 5:7, 5:7, 5:7] = np.linspace(900, 1100, 8).reshape(1, 2, 2, 2)  # bright "lesion" tail
    y, params = ZScorePreset().forward(img, None, mask)
    y = np.asarray(y)
    inside = y[mask > 0]
    assert inside.mean() == pytest.approx(0, abs=1e-4) and inside.std() == pytest.approx(1, abs=1e-4)
    lesion = y[:, 5:7, 5:7, 5:7]
    assert len(np.unique(np.round(lesion, 4))) == 8  # no clipping: every lesion value stays distinct
    np.testing.assert_allclose(np.asarray(ZScorePreset().inverse(y, params)), img, rtol=1e-4, atol=1e-2)
    cls, cfg = _cfg(phantoms, tmp_path)
    case = cls(cfg).data.load("training")[0]
    brain = case["brain_mask"][0] > 0
    assert float(case["flair"][0][brain].mean()) == pytest.approx(0, abs=1e-3)
    assert float(case["flair"][0][brain].std()) == pytest.approx(1, abs=1e-3)
    cls, cfg = _cfg(phantoms, tmp_path, "data.intensity=robust")
    assert float(cls(cfg).data.load("training")[0]["flair"].max()) == pytest.approx(1.0)  # the old preset


def test_discriminator_source_segments_are_sampled_like_target(phantoms, tmp_path):
    """The labelled source batch is lesion-balanced; D's source segments are drawn like the target ones (brain
    mask, no labels), so D cannot tell the domains apart by lesion content."""
    cls, cfg = _cfg(phantoms, tmp_path, "train.batch_size=8")
    p = cls(cfg)
    ds = p.train_dataset()
    assert ds.source.sampler.mode == "lesion_balanced"
    assert ds.source_adv.sampler.mode == ds.target.sampler.mode == "foreground"
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert "lesion" not in batch["source_adv"] and batch["source_adv"]["flair"].shape == batch["target"]["flair"].shape
    cls, cfg = _cfg(phantoms, tmp_path, "model.disc_source=labelled")
    assert cls(cfg).train_dataset().source_adv is None


def test_per_domain_batchnorm_statistics(phantoms, tmp_path):
    """bn_stats=target: each domain is normalised by its own batch statistics in training and only the target
    batches move the running statistics that inference uses (one forward of the mixed batch over-segmented the
    target at test time even with alpha = 0)."""
    cls, cfg = _cfg(phantoms, tmp_path, "model.dropout=0.0")
    p = cls(cfg)
    S = p.build_networks()["S"]
    bn = S.normal.layers[1][0]
    x_src, x_tgt = torch.randn(2, 3, 33, 33, 33) * 3 + 5, torch.randn(2, 3, 33, 33, 33)
    S.train()
    before = bn.running_mean.clone()
    with bn_running_stats(S, False):
        S(x_src, output_size=[9, 9, 9])
    torch.testing.assert_close(bn.running_mean, before)  # the source pass leaves the running stats alone
    with bn_running_stats(S, True):
        S(x_tgt, output_size=[9, 9, 9])
    assert not torch.allclose(bn.running_mean, before)
    # the batch statistics normalise each domain separately: the per-domain outputs equal separate forwards
    with torch.no_grad(), bn_running_stats(S, False):
        sep = S(x_tgt, output_size=[9, 9, 9])
        mixed = S(torch.cat([x_src, x_tgt]), output_size=[9, 9, 9])[2:]
    assert not torch.allclose(sep, mixed, atol=1e-3)
    cls, cfg = _cfg(phantoms, tmp_path, "train.iterations=2", "train.val_every=100", "output.name=bn")
    assert cfg.model.bn_stats == "target" and cfg.model.disc_source == "matched" and cfg.data.intensity == "zscore"
    train_config(cls, cfg)


def test_demo_settings_repeat_the_small_deepmedic():
    """The quick demo (demo.yaml) trains the small DeepMedic the benchmark uses: its overrides repeat
    SMALL_DEEPMEDIC, and every override names a real config field."""
    import yaml

    from medgen.pipelines.lesion_uda import SMALL_DEEPMEDIC

    demo = yaml.safe_load((REPO / "medgen" / "pipelines" / "lesion_uda" / "demo.yaml").read_text())
    assert set(SMALL_DEEPMEDIC) <= set(demo["common"])
    assert [r["name"] for r in demo["runs"]] == ["source_only", "uda", "target_supervised"]
    for run in demo["runs"]:
        _, cfg = build_config("lesion_uda", None, [*demo["common"], *run["overrides"]])
        assert cfg.model.mode == run["name"] and cfg.model.dm_channels == [8, 8, 12, 12]
    assert gap_closed(0.1, 0.3, 0.5) == pytest.approx(0.5)
    assert demo["gap_closed"] == {"metric": "dice", "low": "source_only", "run": "uda", "high": "target_supervised"}
