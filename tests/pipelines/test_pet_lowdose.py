"""pet_lowdose: end to end on tiny head phantoms, the baseline margin, bad input, and the method's own checks
(one scale for input and target, Bq/mL outputs, the two-stage cascade, dose simulation, baselines)."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from medgen.data.phantoms import write_phantom_dataset
from medgen.engine.commands import build_config, evaluate, infer, load_trained, train_config
from medgen.engine.cascade import cascade_predict
from medgen.errors import ConfigError, DataError, MedgenError
from tests.datalists import absolute_datalist

TINY = ["data.patch_size=[16,16,16]", "model.ngf=8", "model.ndf=8", "model.d_layers=2", "model.lr=1e-3",
        "train.batch_size=2", "train.progress=off", "infer.overlap=0.25"]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    return write_phantom_dataset("head", tmp_path_factory.mktemp("pl") / "head", n_cases=5, seed=3, shape=(32, 32, 32)).parent


@pytest.fixture(scope="module")
def run(head, tmp_path_factory):
    """A two-stage cGAN trained 10 steps per stage, then resumed to 20."""
    root = tmp_path_factory.mktemp("runs")
    common = [f"data.dataset={head}", *TINY, "train.val_every=10", f"output.root={root}", "output.name=r"]
    cls, cfg = build_config("pet_lowdose", "configs/pet_lowdose_smoke.yaml", ["train.iterations=10", *common])
    train_config(cls, cfg)
    cls, cfg = build_config("pet_lowdose", "configs/pet_lowdose_smoke.yaml", ["train.iterations=20", *common])
    summary = train_config(cls, cfg, resume=True)
    return root / "pet_lowdose" / "r", summary


def _copy_dataset(head, tmp_path, edit):
    """A copy of the phantom dataset.json (same image files) after `edit(meta)`; returns its folder."""
    meta = absolute_datalist(head)
    edit(meta)
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    return tmp_path


# ---------------------------------------------------------------- (a) end to end
def test_train_resume_infer_evaluate_geometry(run, head):
    run_dir, summary = run
    assert summary["stage"] == 2 and summary["steps"] == 20
    for k in (1, 2):
        assert (run_dir / f"stage{k}" / "checkpoints" / "best.pt").exists()
        log = (run_dir / f"stage{k}" / "metrics.csv").read_text().splitlines()
        assert any(line.startswith("20,") for line in log)  # resumed past step 10 to 20
    result = infer(run_dir, device="cpu")
    assert result["failed"] == 0 and result["written"] == 1
    manifest = json.loads((run_dir / "predictions" / "manifest.json").read_text())
    test_case = json.loads((head / "dataset.json").read_text())["test"][0]
    entry = manifest["cases"][test_case["id"]]
    assert sorted(f["output"] for f in entry["files"]) == ["output_stage1", "output_stage2"]
    src = nib.load(head / test_case["low_dose"])
    for f in entry["files"]:
        out = nib.load(f["path"])
        assert out.shape == src.shape
        np.testing.assert_allclose(out.affine, src.affine, atol=1e-5)
        assert f["units"] == "Bq/mL"  # the units dataset.json declares for the target
        # written in Bq/mL: grey-matter level (thousands), not the normalised [0, ~1] range
        assert float(np.percentile(out.get_fdata(), 99)) > 1000
    refs = {f["output"]: f["reference_key"] for f in entry["files"]}
    assert refs["output_stage2"] == "full_dose"  # medgen evaluate scores the final stage
    ev = evaluate(run_dir / "predictions", head)
    assert ev["summary"]["metrics"]["psnr"]["n"] == 1
    assert ev["summary"]["evaluation"]["low_dose_simulated"]  # the report says the low dose was simulated
    assert set(ev["summary"]["floors"]) == {"target_mean", "input"}  # the low dose itself is a floor
    assert set(ev["summaries"]) == {"output_stage1", "output_stage2"}  # both stages are scored


# ---------------------------------------------------------------- (b) beats the simplest baseline
def test_stage1_beats_low_dose_input_on_held_out_case(tmp_path):
    """Margin fixed before running: stage 1 PSNR >= low-dose PSNR + 1 dB on the held-out test case
    (5 % dose phantom, where the counting noise dominates; 150 L1 + GAN steps, seed 0)."""
    ds = write_phantom_dataset("head", tmp_path / "h", n_cases=5, seed=1, shape=(32, 32, 32), dose_fraction=0.05).parent
    cls, cfg = build_config("pet_lowdose", None, [f"data.dataset={ds}", *TINY, "model.stages=1", "train.iterations=150",
                                                  "train.batch_size=4", "train.val_every=50", "train.seed=0",
                                                  f"output.root={tmp_path}", "output.name=b"])
    summary = train_config(cls, cfg)
    _, _, stages, _ = load_trained(summary["run_dir"], device="cpu")
    for case in stages[0].data.load("test"):
        model = stages[0].evaluate_case(stages[0].output_values(case, cascade_predict(stages, case)[0]), case)
        low = stages[0].evaluate_case(stages[0].output_values(case, {"output": case["low_dose"]}), case)
        assert model["psnr"] >= low["psnr"] + 1.0, (model["psnr"], low["psnr"])


# ---------------------------------------------------------------- (c) bad input
def _pipeline(dataset, *extra):
    cls, cfg = build_config("pet_lowdose", None, [f"data.dataset={dataset}", *TINY, *extra])
    return cls(cfg)


def test_missing_target_key_names_dataset_json(head, tmp_path):
    def drop(meta):
        del meta["training"][0]["full_dose"]
    ds = _copy_dataset(head, tmp_path, drop)
    with pytest.raises(DataError, match=r"dataset\.json.*full_dose"):
        _pipeline(ds).data.load("training")


def test_wrong_target_key_in_config(head):
    with pytest.raises(DataError, match="pet"):
        _pipeline(head, "data.target_key=pet").data.load("training")
    with pytest.raises(ConfigError):
        build_config("pet_lowdose", None, ["data.target_key=low_dose"])


def test_shape_nan_channels_and_empty_mask(head, tmp_path):
    meta = json.loads((head / "dataset.json").read_text())
    case = meta["training"][0]
    img = nib.load(head / case["low_dose"])
    bad = {
        "shape": ("full_dose", np.zeros((30, 32, 32), np.float32) + 1, "shape"),
        "nan": ("low_dose", np.where(np.arange(32**3).reshape(32, 32, 32) == 5, np.nan, 1.0).astype(np.float32), "NaN"),
        "channels": ("low_dose", np.ones((32, 32, 32, 2), np.float32), "channels"),
        "mask": ("mask", np.zeros((32, 32, 32), np.uint8), "empty"),
    }
    for name, (key, arr, words) in bad.items():
        path = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(arr, img.affine), str(path))

        def edit(m, key=key, path=path):
            m["training"][0][key] = str(path)
        (tmp_path / name).mkdir()
        ds = _copy_dataset(head, tmp_path / name, edit)
        with pytest.raises(DataError, match=words) as err:
            _pipeline(ds).data.load("training")
        assert str(path) in str(err.value)


def test_patch_too_small_for_discriminator_is_a_config_error(head):
    p = _pipeline(head, "data.patch_size=[8,8,8]", "model.d_layers=3", "model.num_downs=2")
    with pytest.raises(ConfigError, match="too small"):
        p.build_networks()


# ---------------------------------------------------------------- (d) method-specific checks
def test_one_scale_for_input_and_target_and_units(head):
    p = _pipeline(head)
    case = p.data.load("validation")[0]
    assert case.norm["full_dose"] == case.norm["low_dose"]
    raw_full = nib.load(p.data.datalist.validation[0]["full_dose"]).get_fdata()
    np.testing.assert_allclose(p.target_in_source_units(case)[0], raw_full, rtol=1e-4, atol=1e-2)
    raw_low = nib.load(p.data.datalist.validation[0]["low_dose"]).get_fdata()
    out = p.to_source_units(case, case["low_dose"], p.output_params(case))[0]
    np.testing.assert_allclose(out, raw_low, rtol=1e-4, atol=1e-2)
    # the identity "model" scores exactly the low-dose input's metrics computed by hand in Bq/mL
    from medgen.metrics import psnr
    m = p.evaluate_case(p.output_values(case, {"output": case["low_dose"]}), case)
    mask = case["mask"].numpy()[0] > 0
    # the dataset's one data range: the 0.5-99.5th percentile span of the training references inside their masks
    train = [nib.load(c["full_dose"]).get_fdata()[nib.load(c["mask"]).get_fdata() > 0]
             for c in p.data.datalist.training]
    dr = float(np.subtract(*np.percentile(np.concatenate(train), [99.5, 0.5])))
    assert p.data_range() == pytest.approx(dr, rel=1e-5)
    assert m["psnr"] == pytest.approx(psnr(raw_low, raw_full, dr, mask), abs=1e-3)


def test_scale_does_not_follow_the_counting_noise(tmp_path):
    """Regression: the scale was the 99.5th percentile of the raw low dose, which is mostly noise - it grew
    with 1 / dose (same activity: +40 % from 25 % to 5 % dose here), so input and target were normalised
    differently at every dose. The smoothed percentile stays within 3 %, and the units still round-trip."""
    scales = {}
    for f in (0.25, 0.05):
        ds = write_phantom_dataset("head", tmp_path / str(f), n_cases=3, seed=3, shape=(32, 32, 32),
                                   dose_fraction=f).parent
        for smoothing in (0.0, 2.0):
            p = _pipeline(ds, f"data.scale_smoothing_vox={smoothing}")
            case = p.data.load("validation")[0]
            scales[f, smoothing] = case.norm["low_dose"]["scale"]
            raw_low = nib.load(p.data.datalist.validation[0]["low_dose"]).get_fdata()
            back = p.to_source_units(case, case["low_dose"], p.output_params(case))[0]
            np.testing.assert_allclose(back, raw_low, rtol=1e-4, atol=1e-2)
            assert case.norm["full_dose"] == case.norm["low_dose"]
    assert scales[0.05, 0.0] / scales[0.25, 0.0] > 1.1  # the raw percentile follows the noise
    assert scales[0.05, 2.0] / scales[0.25, 2.0] == pytest.approx(1.0, abs=0.03)
    with pytest.raises(ConfigError):
        build_config("pet_lowdose", None, ["data.scale_smoothing_vox=-1"])


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_lr_decays_linearly_to_zero_over_the_last_fraction(head):
    """pix2pix's schedule in steps (model.lr_decay_fraction): constant, then linear to 0 at the last step."""
    p = _pipeline(head, "model.lr_decay_fraction=0.5", "model.lr=1e-3")
    nets = p.build_networks()
    opts = p.build_optimizers(nets)
    scheds = p.build_schedulers(opts, 100)
    lrs = []
    for _ in range(100):
        lrs.append(opts["G"].param_groups[0]["lr"])
        for s in scheds.values():
            s.step()
    assert lrs[0] == lrs[50] == pytest.approx(1e-3)
    assert lrs[75] == pytest.approx(0.5e-3, rel=0.05) and lrs[99] < 0.03e-3
    assert opts["G"].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert _pipeline(head, "model.lr_decay_fraction=0").build_schedulers(opts, 100) == {}


def test_full_resolution_head_and_residual_wrap_the_unet(head):
    """model.full_res_channels adds 3^3 convs at the input's resolution on [input, U-Net estimate] (the
    pix2pix U-Net's finest level is at half resolution); model.residual adds the low dose. Zeroing the
    head's last conv and the U-Net's output layer must give back exactly the low dose."""
    from medgen.networks.residual import FullResolutionHead, ResidualOnInput

    G = _pipeline(head, "model.full_res_channels=4", "model.residual=true").build_networks()["G"]
    assert isinstance(G, ResidualOnInput) and isinstance(G.net, FullResolutionHead)
    assert G.net.head[0].in_channels == 2 and G.net.head[0].kernel_size == (3, 3, 3)
    x = torch.rand(2, 1, 16, 16, 16)
    with torch.no_grad():
        for conv in (G.net.head[-1], G.net.net.up[0][1]):
            conv.weight.zero_()
            conv.bias.zero_()
        torch.testing.assert_close(G(x), x)
    G.net.head[-1].weight.data.normal_(0, 0.1)
    G(x).sum().backward()
    assert all(p.grad is not None for p in G.net.head.parameters())


def _unet(G):
    """The U-Net inside the optional residual / full-resolution wrappers."""
    while hasattr(G, "net"):
        G = G.net
    return G


def test_cascade_networks_and_stage2_sees_stage1(run):
    run_dir, _ = run
    _, _, stages, _ = load_trained(run_dir, device="cpu")
    assert _unet(stages[0].networks["G"]).down[0][0].in_channels == 1
    assert _unet(stages[1].networks["G"]).down[0][0].in_channels == 2  # [low_dose, stage 1 estimate]
    assert stages[1].networks["D"].blocks[0][0].in_channels == 3  # [condition (2), full dose or estimate]
    case = stages[0].data.load("test")[0]
    preds = cascade_predict(stages, case)
    with torch.no_grad():
        _unet(stages[0].networks["G"]).up[0][1].bias += 0.5
    assert not torch.allclose(cascade_predict(stages, case)[1]["output"], preds[1]["output"])


def test_region_bias_and_gaussian_choice_by_hand():
    from medgen.baselines.denoise import choose_gaussian_sigma, gaussian_smooth
    from medgen.metrics.pet import region_bias

    target = np.full((12, 12, 12), 100.0)
    labels = np.zeros((12, 12, 12), int)
    labels[:6] = 4
    labels[6:] = 5
    pred = target.copy()
    pred[:6] *= 1.1
    pred[6:] *= 0.95
    b = region_bias(pred, target, labels, {"gm": 4, "wm": 5})
    assert b["bias_gm_pct"] == pytest.approx(10.0) and b["bias_wm_pct"] == pytest.approx(-5.0)
    rng = np.random.default_rng(0)
    clean = gaussian_smooth(rng.random((16, 16, 16)) * 100, 2.0) + 50
    val = [{"low_dose": clean + rng.normal(0, 5, clean.shape), "full_dose": clean, "mask": None}]
    sigma, scores = choose_gaussian_sigma(val, (0.25, 1.0, 2.0))
    assert sigma == max(scores, key=scores.get) and sigma > 0.25  # smoothing helps on smooth + white noise


def test_predict_pads_volumes_smaller_than_the_patch(run):
    run_dir, _ = run
    _, _, stages, _ = load_trained(run_dir, device="cpu")
    case = {"low_dose": torch.rand(1, 12, 20, 9)}
    out = stages[0].predict_case(case)["output"]
    assert tuple(out.shape) == (1, 12, 20, 9) and torch.isfinite(out).all()


def test_simulated_dataset_records_the_draw_and_splits_one_subject(tmp_path):
    from medgen.data.simulate_pet import LEFT_RIGHT_PARTS, simulate_paired_dataset

    rng = np.random.default_rng(0)
    act = np.zeros((32, 24, 20), np.float32)
    act[6:26, 4:20, 3:17] = 8000 + rng.normal(0, 300, (20, 16, 14))
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = [-30, -20, -10]
    src = tmp_path / "subj" / "pet.nii.gz"
    src.parent.mkdir()
    nib.save(nib.Nifti1Image(act, aff), str(src))
    (tmp_path / "subj" / "pet.json").write_text(json.dumps({"FrameDuration": 300, "Units": "BQML"}))
    js = simulate_paired_dataset([src], tmp_path / "sim", fraction=0.1, seed=7, parts=LEFT_RIGHT_PARTS)
    meta = json.loads(js.read_text())
    info = meta["simulated"]["low_dose"]["per_case"]["subj"]
    assert info["simulated"] and info["fraction"] == 0.1 and info["seed"] == [7, 0]
    assert info["frame_duration_s"] == 300 and info["parameter_sources"]["frame_duration_s"] == "sidecar"
    parts = {s: meta[s][0]["part"] for s in ("training", "validation", "test")}
    assert parts["training"]["stop"] <= parts["validation"]["start"] < parts["validation"]["stop"] <= parts["test"]["start"]
    test = meta["test"][0]
    img = nib.load(tmp_path / "sim" / test["low_dose"])
    full = nib.load(tmp_path / "sim" / test["full_dose"])
    start = parts["test"]["start"]
    np.testing.assert_array_equal(full.get_fdata(), act[start:])
    np.testing.assert_allclose(img.affine[:3, 3], aff[:3, 3] + [2.0 * start, 0, 0])
    low, ref = img.get_fdata(), full.get_fdata()
    brain = ref > 4000
    assert abs(low[brain].mean() / ref[brain].mean() - 1) < 0.03  # thinning keeps the mean
    assert (low[brain] - ref[brain]).std() > 0.1 * ref[brain].mean()  # ... and adds counting noise
    again = simulate_paired_dataset([src], tmp_path / "sim", fraction=0.1, seed=7, parts=LEFT_RIGHT_PARTS, overwrite=True)
    np.testing.assert_array_equal(nib.load(again.parent / test["low_dose"]).get_fdata(), low)  # same seed, same draw
    with pytest.raises(MedgenError, match="not empty"):
        simulate_paired_dataset([src], tmp_path / "sim", fraction=0.1)


def test_real_amyloid_sidecar_and_group_average_io(shared_data, run, tmp_path):
    from medgen.data.simulate_pet import simulate_paired_dataset

    pet = shared_data / "pet_lowdose" / "amyloid_pet" / "subj01" / "pet.nii.gz"
    maps = sorted((shared_data / "pet_lowdose" / "receptor_pet_group_averages").glob("*.nii"))
    if not pet.exists() or not maps:
        pytest.skip("pet_lowdose shared data incomplete")
    from medgen.data.dose import read_pet_sidecar
    side = read_pet_sidecar(pet.with_name("pet.json"))
    assert side["units_are_bqml"] and "frame_duration_s" in side["defaults_used"]
    ds = simulate_paired_dataset({"m": maps[0]}, tmp_path / "g", fraction=0.25, input_is="expected", sensitivity=0.5).parent
    run_dir, _ = run
    res = infer(run_dir, dataset=str(ds), out=tmp_path / "pred", device="cpu")
    assert res["written"] == 1 and res["failed"] == 0
    manifest = json.loads((tmp_path / "pred" / "manifest.json").read_text())
    src = nib.load(maps[0])
    for f in manifest["cases"]["m"]["files"]:
        out = nib.load(f["path"])
        assert out.shape == src.shape[:3] == (61, 73, 61)
        np.testing.assert_allclose(out.affine, src.affine, atol=1e-4)
