"""mr_synthesis (Ea-GANs): end to end on tiny head phantoms, against its simplest baseline, bad input, and the
method's own checks (edge-aware discriminator input, adversarial gradient reaching the generator in dEa-GAN,
label smoothing drawn per call, lambda_edge ramp, learning-rate schedule)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medgen.data.phantoms import write_phantom_dataset
from medgen.engine.commands import build_config, evaluate, infer, train_config
from medgen.engine.trainer import Trainer
from medgen.errors import ConfigError, DataError
from medgen.losses import sobel_edges
from medgen.data.patches import patches_covering
from medgen.pipelines.mr_synthesis import MRSynthesis
from medgen.baselines.intensity import HistogramMatching, PolynomialRegression
from medgen.metrics.edges import edge_scores

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "mr_synthesis_smoke.yaml"


@pytest.fixture(scope="module")
def head(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mrs")
    return write_phantom_dataset("head", root / "head", n_cases=5, seed=3, shape=(24, 24, 24))


def _config(head: Path, tmp_path: Path, *overrides: str):
    return build_config("mr_synthesis", SMOKE, [f"data.dataset={head.parent}", f"output.root={tmp_path}",
                                               "output.name=r", *overrides])


def _pipeline(head: Path, tmp_path: Path, *overrides: str) -> MRSynthesis:
    cls, cfg = _config(head, tmp_path, *overrides)
    pipe = cls(cfg, "cpu")
    pipe.networks = pipe.build_networks()
    return pipe


def _batch(pipe: MRSynthesis, n: int = 2) -> dict:
    from torch.utils.data import default_collate

    dataset = pipe.train_dataset()
    return default_collate([dataset[i] for i in range(n)])


# ----- (a) train -> checkpoint -> resume -> infer -> evaluate -------------------------------------------------
def test_train_resume_infer_evaluate(head, tmp_path):
    cls, cfg = _config(head, tmp_path, "train.iterations=6")
    train_config(cls, cfg)
    cls, cfg = _config(head, tmp_path, "train.iterations=10")
    summary = train_config(cls, cfg, resume=True)
    run = tmp_path / "mr_synthesis" / "r"
    assert summary["steps"] == 10 and summary["best_metric"] is not None
    assert "val_edge_corr" in (run / "metrics.csv").read_text()
    result = infer(run)
    assert result["written"] >= 1 and result["failed"] == 0
    manifest = json.loads((run / "predictions" / "manifest.json").read_text())
    datalist = json.loads(head.read_text())
    for case in datalist["test"]:
        out = nib.load(manifest["cases"][case["id"]]["files"][0]["path"])
        src = nib.load(head.parent / case["t1"])
        assert out.shape == src.shape
        np.testing.assert_allclose(out.affine, src.affine, atol=1e-6)
        assert np.isfinite(np.asarray(out.dataobj)).all()
    ev = evaluate(run / "predictions", head.parent)
    assert ev["summary"]["metrics"]["psnr"]["n"] == len(datalist["test"])


def test_resume_is_exact(head, tmp_path):
    """4 steps then 4 more from the checkpoint give the weights of 8 uninterrupted steps (seeded labels too)."""
    common = ["train.deterministic=true", "train.val_every=100", "train.checkpoint_every=4"]
    cls, cfg = _config(head, tmp_path / "a", "train.iterations=8", *common)
    train_config(cls, cfg)
    cls, cfg = _config(head, tmp_path / "b", "train.iterations=4", *common)
    train_config(cls, cfg)
    cls, cfg = _config(head, tmp_path / "b", "train.iterations=8", *common)
    train_config(cls, cfg, resume=True)
    a = torch.load(tmp_path / "a/mr_synthesis/r/checkpoints/last.pt", weights_only=True)["networks"]["G"]
    b = torch.load(tmp_path / "b/mr_synthesis/r/checkpoints/last.pt", weights_only=True)["networks"]["G"]
    for k in a:
        torch.testing.assert_close(a[k], b[k])


# ----- (b) beats the simplest baseline on held-out phantoms ----------------------------------------------------
def test_beats_histogram_matching_on_held_out_phantoms(tmp_path_factory, tmp_path):
    """T1 -> T2 (inverted contrast), 24^3 phantoms, fixed seed, dEa-GAN (the default variant). The simplest
    baseline is histogram matching (it needs no paired voxels). The margin, fixed before running: the trained
    model's mean PSNR on the held-out cases is at least 2 dB above histogram matching fitted on the same
    training cases. (The voxel-wise regression baselines are compared in benchmarks/mr_synthesis.py.)"""
    root = tmp_path_factory.mktemp("mrs_b")
    dataset = write_phantom_dataset("head", root / "head", n_cases=10, seed=11, shape=(24, 24, 24))
    cls, cfg = build_config("mr_synthesis", SMOKE, [
        f"data.dataset={dataset.parent}", f"output.root={tmp_path}", "output.name=b", "model.variant=dea",
        "model.target_key=t2", "train.iterations=120", "train.val_every=1000", "train.batch_size=4",
        "model.lr=2e-3", "model.epochs_constant=1000"])
    summary = train_config(cls, cfg)
    from medgen.engine.commands import load_trained

    _, _, stages, _ = load_trained(summary["run_dir"], device="cpu")
    pipe = stages[-1]
    test_cases = pipe.data.load("test")
    assert len(test_cases) >= 2
    baseline = HistogramMatching(["t1"], "t2", "brain_mask").fit(pipe.data.load("training"))
    with torch.no_grad():
        model = np.mean([pipe.evaluate_case(pipe.output_values(c, pipe.predict_case(c)), c)["psnr"] for c in test_cases])
    base = np.mean([pipe.evaluate_case(pipe.output_values(c, baseline.predict_case(c)), c)["psnr"]
                    for c in test_cases])
    print(f"dea {model:.2f} dB vs histogram matching {base:.2f} dB")
    assert model >= base + 2.0, (model, base)


# ----- scoring MR, which has no physical unit --------------------------------------------------------------------
def test_scores_do_not_depend_on_a_sites_intensity_scale(head, tmp_path):
    """MR from several sites: half the training targets stored at 40 times the others' scale (another scanner's
    gain). A test case is scored in its own standardisation with the range 2, so its scores are those it gets
    in the single-site dataset, and a prediction scaled with its reference scores the same as the original."""
    folder, data = _copy_dataset(head, tmp_path)
    for case in data["training"][::2] + data["test"][:1]:
        img = nib.load(folder / case["t2"])
        scaled = np.asarray(img.dataobj, np.float32) * 40.0
        nib.save(nib.Nifti1Image(scaled, img.affine), folder / case["t2"])
    scores = []
    for dataset in (head.parent, folder):
        cls, cfg = build_config("mr_synthesis", SMOKE, [f"data.dataset={dataset}", f"output.root={tmp_path}"])
        pipe = cls(cfg, "cpu")
        assert pipe.data_range() == 2.0 and "own mr standardisation" in pipe.describe_evaluation()["scored_in"]
        case = pipe.data.load("test")[0]
        ref = pipe.reference(case)
        mask = pipe.metric_mask(case)
        noise = np.random.default_rng(0).normal(0.0, 0.05, ref.shape).astype(np.float32) * float(ref[mask].std())
        pred = np.where(mask, ref + noise, ref)[None]  # the same error, in this dataset's scale
        scores.append(pipe.evaluate_case({pipe.output_name: pred}, case))
    plain, mixed = scores
    for metric in ("psnr", "ssim", "mae", "nmse"):
        assert mixed[metric] == pytest.approx(plain[metric], rel=1e-4), metric
    assert 20 < plain["psnr"] < 40  # a 5 % error is neither perfect nor hopeless in [-1, 1] with range 2


# ----- (c) bad input ------------------------------------------------------------------------------------------
def _copy_dataset(head: Path, tmp_path: Path) -> tuple[Path, dict]:
    folder = tmp_path / "bad"
    shutil.copytree(head.parent, folder)
    return folder, json.loads((folder / "dataset.json").read_text())


def _write(folder: Path, data: dict) -> None:
    (folder / "dataset.json").write_text(json.dumps(data))


def _train_cases(folder: Path, tmp_path: Path, *overrides: str):
    cls, cfg = build_config("mr_synthesis", SMOKE, [f"data.dataset={folder}", f"output.root={tmp_path}", *overrides])
    return cls(cfg).data.load("training")


def test_unknown_source_key_names_it(head, tmp_path):
    with pytest.raises(DataError, match=r"dataset.json.*t3"):
        _train_cases(head.parent, tmp_path, "model.source_keys=[t3]")


def test_bad_config_is_a_config_error(head, tmp_path):
    with pytest.raises(ConfigError, match="target_key"):
        _config(head, tmp_path, "model.source_keys=[t1,t2]", "model.target_key=t2")
    with pytest.raises(ConfigError, match="variant"):
        _config(head, tmp_path, "model.variant=pix2pix")
    with pytest.raises(ConfigError, match="too small"):  # a 3-layer PatchGAN needs more than 16^3
        _pipeline(head, tmp_path, "model.n_layers_d=3")


@pytest.mark.parametrize("problem", ["nan", "shape", "channels", "affine", "empty_mask"])
def test_bad_files_name_the_file(head, tmp_path, problem):
    folder, data = _copy_dataset(head, tmp_path)
    case = data["training"][0]
    key = {"nan": "t1", "shape": "t2", "channels": "t1", "affine": "t2", "empty_mask": "brain_mask"}[problem]
    path = folder / case[key]
    img = nib.load(path)
    arr, affine = np.asarray(img.dataobj, dtype=np.float32), img.affine.copy()
    if problem == "nan":
        arr[3, 3, 3] = np.nan
    elif problem == "shape":
        arr = arr[:-2]
    elif problem == "channels":
        arr = np.stack([arr, arr], axis=-1)
    elif problem == "affine":
        affine[0, 3] += 5.0
    else:
        arr = np.zeros_like(arr)
    bad = path.with_name("bad_" + path.name)
    nib.save(nib.Nifti1Image(arr, affine), bad)
    case[key] = str(bad.relative_to(folder))
    _write(folder, data)
    with pytest.raises(DataError) as info:
        _train_cases(folder, tmp_path)
    assert bad.name in str(info.value) or str(folder / case["t1"]) in str(info.value)
    if problem != "empty_mask":
        assert bad.name in str(info.value)


def test_missing_mask_is_derived_from_the_sources(head, tmp_path):
    folder, data = _copy_dataset(head, tmp_path)
    for split in ("training", "validation", "test"):
        for case in data[split]:
            case.pop("brain_mask")
    _write(folder, data)
    case = _train_cases(folder, tmp_path)[0]
    np.testing.assert_array_equal(case["brain_mask"][0].numpy() > 0, case["t1"][0].numpy() > -1)


# ----- (d) the method -----------------------------------------------------------------------------------------
def test_variants_build_the_right_discriminator(head, tmp_path):
    for variant, channels in (("cgan", 2), ("gea", 2), ("dea", 3)):
        pipe = _pipeline(head, tmp_path, f"model.variant={variant}")
        assert pipe.networks["D"].blocks[0][0].in_channels == channels
    multi = _pipeline(head, tmp_path, "model.source_keys=[t1,t2]", "model.target_key=flair")
    assert multi.networks["G"].down[0][0].in_channels == 2
    assert multi.networks["D"].blocks[0][0].in_channels == 4  # t1, t2, image, edge(image)
    batch = _batch(multi)
    assert multi.network_input(batch).shape[1] == 2


def test_dea_discriminator_sees_the_edge_map(head, tmp_path):
    pipe = _pipeline(head, tmp_path, "model.variant=dea")
    src, image = torch.rand(1, 1, 16, 16, 16) * 2 - 1, torch.rand(1, 1, 16, 16, 16) * 2 - 1
    x = pipe.discriminator_input(src, image)
    torch.testing.assert_close(x[:, 0:1], src)
    torch.testing.assert_close(x[:, 1:2], image)
    torch.testing.assert_close(x[:, 2:3], sobel_edges(image))


def test_adversarial_gradient_reaches_the_generator_in_dea(head, tmp_path):
    """No image pool: the adversarial term alone has a gradient on every generator layer, also when D's weights
    on the image channel are zeroed (then it flows only through the Sobel edge channel)."""
    pipe = _pipeline(head, tmp_path, "model.variant=dea")
    batch = _batch(pipe)
    G, D = pipe.networks["G"], pipe.networks["D"]
    source, real = pipe.network_input(batch), batch["t2"]
    for zero_image_channel in (False, True):
        if zero_image_channel:
            with torch.no_grad():
                D.blocks[0][0].weight[:, 1] = 0.0
        fake = G(source)
        adv = pipe.generator_losses(source, real, fake)["loss_g_adv"]
        grads = torch.autograd.grad(adv, [G.down[0][0].weight, G.up[0][1].weight])
        assert all(float(g.abs().sum()) > 0 for g in grads)
        assert all(p.grad is None for p in D.parameters())  # D is frozen during the generator's step


def test_label_smoothing_is_drawn_every_call(head, tmp_path):
    cls, cfg = _config(head, tmp_path, "train.iterations=3", "train.val_every=100")
    pipe = cls(cfg, "cpu")
    seen = {"d_real": [], "d_fake": [], "g": []}
    original = pipe.gan_loss.draw_target

    def recording(logits, target_is_real, for_discriminator=True):
        target = original(logits, target_is_real, for_discriminator)
        name = "g" if not for_discriminator else ("d_real" if target_is_real else "d_fake")
        seen[name].append(float(target.flatten()[0]))
        return target

    pipe.gan_loss.draw_target = recording
    (tmp_path / "run").mkdir()
    Trainer(pipe, tmp_path / "run").fit()
    assert all(len(v) == 3 for v in seen.values())
    assert len(set(seen["d_real"])) == 3 and len(set(seen["d_fake"])) == 3 and len(set(seen["g"])) == 3
    assert all(0.7 <= v <= 1.2 for v in seen["d_real"] + seen["g"]) and all(0.0 <= v <= 0.3 for v in seen["d_fake"])


def test_generator_loss_terms_and_lambda_edge_ramp(head, tmp_path):
    pipe = _pipeline(head, tmp_path, "model.variant=gea", "model.edge_ramp_epochs=20")
    pipe.steps_per_epoch = 10
    for step, expected in ((0, 0.0), (100, 50.0), (200, 100.0), (500, 100.0)):
        pipe.step = step
        assert pipe.lambda_edge() == pytest.approx(expected)
    pipe.step = 100
    batch = _batch(pipe)
    source, real = pipe.network_input(batch), batch["t2"]
    with torch.no_grad():
        fake = pipe.networks["G"](source)
        terms = pipe.generator_losses(source, real, fake)
    expected = terms["loss_g_adv"] + 300.0 * (fake - real).abs().mean() + 50.0 * (sobel_edges(fake) - sobel_edges(real)).abs().mean()
    torch.testing.assert_close(terms["total"], expected, rtol=1e-5, atol=1e-4)
    cgan = _pipeline(head, tmp_path, "model.variant=cgan")
    with torch.no_grad():
        assert "loss_edge" not in cgan.generator_losses(source, real, cgan.networks["G"](source))
    assert cgan.lambda_edge() == 0.0


def test_learning_rate_constant_then_linear_decay_per_step(head, tmp_path):
    pipe = _pipeline(head, tmp_path, "model.epochs_constant=2", "model.epochs_decay=2")
    pipe.steps_per_epoch = 5
    opts = pipe.build_optimizers(pipe.networks)
    scheds = pipe.build_schedulers(opts, total_steps=20)
    lrs = []
    for _ in range(20):
        lrs.append(opts["G"].param_groups[0]["lr"])
        for opt in opts.values():
            opt.step()  # no gradients: a no-op, but the scheduler expects the step first
        for s in scheds.values():
            s.step()
    assert lrs[:10] == [pytest.approx(2e-4)] * 10
    np.testing.assert_allclose(lrs[10:], 2e-4 * (1 - np.arange(10) / 10), rtol=1e-6)
    assert opts["D"].param_groups[0]["lr"] == pytest.approx(0.0)


def test_samples_per_epoch_covers_the_training_volumes(head, tmp_path):
    cls, cfg = _config(head, tmp_path, "train.samples_per_epoch=0")
    pipe = cls(cfg)
    dataset = pipe.train_dataset()
    assert cfg.train.samples_per_epoch == len(dataset.cases) * 4  # ceil(24^3 / 16^3) = 4 patches per case
    assert patches_covering(dataset.cases, "t1", [24, 24, 24]) == len(dataset.cases)


# ----- baselines and the edge score --------------------------------------------------------------------------
def _fake_cases(rng, n, fn):
    cases = []
    for i in range(n):
        t1 = torch.from_numpy(rng.uniform(-0.9, 1.0, (1, 12, 12, 12)).astype(np.float32))
        mask = torch.ones_like(t1)
        mask[:, :2] = 0
        t1 = torch.where(mask > 0, t1, torch.full_like(t1, -1.0))
        cases.append({"id": f"c{i}", "t1": t1, "t2": torch.where(mask > 0, fn(t1), -1.0), "brain_mask": mask})
    return cases


def test_regression_recovers_a_polynomial_and_keeps_background():
    rng = np.random.default_rng(0)
    cases = _fake_cases(rng, 3, lambda x: 0.5 * x**2 - 0.3 * x + 0.1)
    model = PolynomialRegression(["t1"], "t2", "brain_mask", degree=2).fit(cases[:2])
    np.testing.assert_allclose(model.coef, [0.1, -0.3, 0.5], atol=1e-5)
    out = model.predict_case(cases[2])["output"]
    torch.testing.assert_close(out, cases[2]["t2"], atol=1e-5, rtol=0)
    assert float(out[:, :2].max()) == -1.0


def test_histogram_matching_maps_to_the_training_distribution():
    rng = np.random.default_rng(1)
    cases = _fake_cases(rng, 3, lambda x: -x)  # inverted contrast: a monotonic increasing map cannot fit it
    model = HistogramMatching(["t1"], "t2", "brain_mask").fit(cases[:2])
    out = model.predict_case(cases[2])["output"][0].numpy()
    fg = cases[2]["brain_mask"][0].numpy() > 0
    ref = np.concatenate([c["t2"][0].numpy()[c["brain_mask"][0].numpy() > 0] for c in cases[:2]])
    np.testing.assert_allclose(np.percentile(out[fg], [10, 50, 90]), np.percentile(ref, [10, 50, 90]), atol=0.02)
    assert np.corrcoef(out[fg], cases[2]["t1"][0].numpy()[fg])[0, 1] > 0.99  # rank-preserving


def test_edge_scores():
    rng = np.random.default_rng(2)
    a = torch.from_numpy(rng.uniform(-1, 1, (1, 12, 12, 12)).astype(np.float32))
    same = edge_scores(a, a)
    assert same["edge_l1"] == 0.0 and same["edge_corr"] == pytest.approx(1.0)
    flat = edge_scores(torch.full_like(a, -1.0), a)
    assert flat["edge_l1"] > 0.1


# ----- brain mask in training, and the inverse of the mr preset ---------------------------------------------
def test_training_sees_the_masked_estimate(head, tmp_path):
    """mask_output applies in training too: the losses and D get -1 outside the brain, with no gradient there,
    i.e. the same image inference returns (the target is -1 there after normalisation)."""
    pipe = _pipeline(head, tmp_path, "model.variant=dea")
    batch = _batch(pipe)
    outside = batch["brain_mask"] <= 0
    assert bool(outside.any()) and bool((~outside).any())
    assert bool((batch["t2"][outside] == -1.0).all())
    seen = {}
    original = pipe.generator_losses

    def recording(source, real, fake):
        seen["fake"] = fake
        return original(source, real, fake)

    def keep_raw(module, inputs, output):
        output.retain_grad()
        seen["raw"] = output

    pipe.generator_losses = recording
    pipe.networks["G"].register_forward_hook(keep_raw)
    pipe.update = lambda name, loss: loss.backward() if name == "G" else None
    pipe.train_step(batch)
    fake, raw = seen["fake"], seen["raw"]
    assert bool((fake[outside] == -1.0).all()) and bool((fake[~outside] > -1.0).any())
    assert bool((raw[outside] != -1.0).any())  # the network itself is not forced to -1
    # the generator's raw output gets no gradient outside the brain, and some inside
    assert float(raw.grad[outside].abs().max()) == 0.0 and float(raw.grad[~outside].abs().max()) > 0
    off = _pipeline(head, tmp_path, "model.mask_output=false")
    image = torch.rand(2, 1, 16, 16, 16) * 2 - 1
    torch.testing.assert_close(off.compose(image, batch), image)


def test_brain_voxels_at_minus_one_invert_to_low_not_background(head, tmp_path):
    """The mr preset clips the darkest 0.5 % of the brain to -1 and its own inverse sends every -1 to the
    background value; inside the brain mask the pipeline inverts linearly (-1 -> the preset's `low`)."""
    pipe = _pipeline(head, tmp_path)
    mask = torch.zeros(1, 4, 4, 4)
    mask[:, 1:3, 1:3, 1:3] = 1
    case = {"brain_mask": mask, "t1": torch.where(mask > 0, 0.0, -1.0)}
    params = {"preset": "mr", "low": 100.0, "high": 900.0, "background": 3.0}
    x = torch.full((1, 4, 4, 4), -1.0)
    x[0, 1, 1, 2] = 0.5   # inside: (0.5 + 1) * 400 + 100 = 700
    x[0, 0, 0, 0] = 0.0   # outside but not background (mask_output off): linear, as the preset's inverse
    out = pipe.to_source_units(case, x, params)
    assert out[0, 1, 1, 1] == pytest.approx(100.0)  # a brain voxel at -1: the preset's low, not 3.0
    assert out[0, 1, 1, 2] == pytest.approx(700.0)
    assert out[0, 0, 0, 0] == pytest.approx(500.0)
    assert out[0, 3, 3, 3] == pytest.approx(3.0)  # background
    from medgen.data.presets import invert_intensity

    ref = np.asarray(invert_intensity(x, params))
    assert ref[0, 1, 1, 1] == pytest.approx(3.0)  # what the preset alone would give (the bug)
    np.testing.assert_allclose(out[mask.numpy() == 0], ref[mask.numpy() == 0])
    # Other presets / no params: unchanged.
    np.testing.assert_allclose(pipe.to_source_units(case, x, None), x.numpy())
