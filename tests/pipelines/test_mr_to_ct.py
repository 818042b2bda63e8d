"""mr_to_ct (Nie et al. 2017) on tiny head phantoms: train -> checkpoint -> resume -> infer -> evaluate,
the model against its simplest baseline, bad input, and the method's own checks (valid-conv patch sizes,
linear-logit CT discriminator, GDL, auto-context stages, outputs in HU)."""
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medgen.engine.outputs import OutputFolder, write_case_outputs
from medgen.data.phantoms import write_phantom_dataset
from medgen.engine.commands import build_config, evaluate, infer, load_trained, train_config
from medgen.engine.cascade import cascade_predict
from medgen.errors import ConfigError, DataError
from medgen.losses import real_fake_logits
from medgen.pipelines.mr_to_ct import MrToCt
from medgen.pipelines.mr_to_ct.config import patch_sizes
from medgen.baselines.ct import BulkDensity, IntensityRegression
from medgen.data.ct import check_ct_units, cormack_to_hu
from medgen.metrics.ct import ct_metrics
from tests.datalists import absolute_datalist

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "mr_to_ct_smoke.yaml"
# Margin fixed before the first run: the trained 2-stage model's mean MAE (HU, head mask, held-out phantom
# test cases) must be at most 85 % of the bulk-density baseline's.
MARGIN = 0.85


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    root = tmp_path_factory.mktemp("mrct")
    return write_phantom_dataset("head", root / "head", n_cases=8, seed=5, shape=(24, 24, 24)).parent


@pytest.fixture(scope="module")
def trained(head, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    common = [f"data.dataset={head}", f"output.root={out}", "output.name=r", "train.val_every=50"]
    cls, cfg = build_config("mr_to_ct", SMOKE, ["train.iterations=50", *common])
    train_config(cls, cfg)
    cls, cfg = build_config("mr_to_ct", SMOKE, ["train.iterations=100", *common])
    summary = train_config(cls, cfg, resume=True)
    return out / "mr_to_ct" / "r", summary


def _cfg(*overrides):
    return build_config("mr_to_ct", SMOKE, list(overrides))[1]


def test_train_resume_infer_evaluate(trained, head):
    run, summary = trained
    assert summary["stage"] == 2 and summary["steps"] == 100
    for k in (1, 2):  # each auto-context stage trained in sequence and resumed to step 100
        ckpt = torch.load(run / f"stage{k}" / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
        assert ckpt["step"] == 100
    result = infer(run)
    assert result["written"] >= 1 and result["failed"] == 0
    manifest = json.loads((run / "predictions" / "manifest.json").read_text())
    datalist = json.loads((head / "dataset.json").read_text())
    for case in datalist["test"]:
        files = manifest["cases"][case["id"]]["files"]
        assert [f["output"] for f in files] == ["output_stage1", "output_stage2"]  # every stage written
        src = nib.load(head / case["mr"])
        for f in files:
            out = nib.load(f["path"])
            assert out.shape == src.shape
            np.testing.assert_allclose(out.affine, src.affine)
            hu = out.get_fdata()
            assert hu.min() < -500 and hu.max() > 200  # written in HU, not in [-1, 1]
        assert files[-1]["units"] == "HU"
    ev = evaluate(run / "predictions", head)
    assert ev["summary"]["evaluation"]["data_range"] == 3000.0  # PSNR / SSIM over the HU window
    assert ev["summary"]["metrics"]["mae"]["n"] == len(datalist["test"])
    assert set(ev["summaries"]) == {"output_stage1", "output_stage2"}  # each auto-context stage is scored


def test_beats_bulk_density_baseline(trained):
    """Stage 1 (FCN + GAN + GDL) against bulk density. In this 100-step test budget stage 2 (auto-context) is
    not reliably better than stage 1 (its training inputs carry stage 1's better estimates of the training
    cases); the stage comparison is the benchmark's job, see docs/pipelines/mr_to_ct.md."""
    run, _ = trained
    _, cfg, stages, _ = load_trained(run, device="cpu")
    bulk = BulkDensity(cfg.data.hu_window).fit(stages[0].data.load("training"))
    model_mae, base_mae = [], []
    for case in stages[0].data.load("test"):
        pred = cascade_predict(stages[:1], case)[-1]
        model_mae.append(stages[0].evaluate_case(stages[0].output_values(case, pred), case)["mae"])
        base_mae.append(stages[0].evaluate_case(
            stages[0].output_values(case, {"output": bulk.predict_normalised(case)}), case)["mae"])
    assert np.mean(model_mae) <= MARGIN * np.mean(base_mae), (model_mae, base_mae)


def test_int16_outputs_in_hu(trained, tmp_path):
    run, _ = trained
    _, cfg, stages, _ = load_trained(run, device="cpu")
    stages[-1].config.infer.output_dtype = "int16"
    case = stages[-1].data.load("test")[0]
    pred = cascade_predict(stages, case)[-1]
    entry = write_case_outputs(case, stages[-1].outputs(case, pred), OutputFolder(tmp_path))[0]
    img = nib.load(entry["path"])
    assert img.get_data_dtype() == np.int16
    expected = stages[-1].to_source_units(case, pred["output"], stages[-1].ct_params())[0]
    np.testing.assert_allclose(np.asarray(img.dataobj), np.round(expected), atol=1)


def test_patch_sizes_fit_the_network():
    cfg = build_config("mr_to_ct", None, [])[1]  # paper layers: margin 8
    assert patch_sizes(cfg, [32, 32, 32]) == [16, 16, 16]
    assert patch_sizes(cfg, [64, 48, 40]) == [48, 32, 24]
    with pytest.raises(ConfigError, match=r"data.patch_size.*Nearest valid sizes: 27 \(-> 11\).*32 \(-> 16"):
        build_config("mr_to_ct", None, ["data.patch_size=[20,20,20]"])
    cfg = build_config("mr_to_ct", None, ["model.adversarial=false"])[1]  # no D: GDL needs >= 2
    assert patch_sizes(cfg, [18, 18, 18]) == [2, 2, 2]


def test_networks_and_losses(head):
    cfg = _cfg(f"data.dataset={head}")
    p1, p2 = MrToCt(cfg, stage=1), MrToCt(cfg, stage=2)
    g1, g2 = p1.build_networks(), p2.build_networks()
    assert g1["G"].layers[0].conv.in_channels == 1 and g2["G"].layers[0].conv.in_channels == 2  # [mr, previous]
    assert p2.network_keys() == ["mr", "previous"]
    x = torch.randn(3, 1, 24, 24, 24)
    assert g1["G"](x).shape == (3, 1, 16, 16, 16)
    d = g1["D"].eval()
    x16 = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        for bias in (-50.0, 50.0):  # a linear logit follows its bias both ways (a ReLU would clamp at 0)
            d.fc2.bias.fill_(bias)
            assert d(x16).shape == (2, 1) and bool(((d(x16) > 0) == (bias > 0)).all())
    # GDL is used (alpha 2) only when its weight is > 0
    ds = p1.train_dataset()
    batch = torch.utils.data.default_collate([ds[i] for i in range(2)])

    class _Engine:
        ema = None

        def update(self, name, loss, loss_name):
            return True

    for lam, has in ((0.05, True), (0.0, False)):
        p = MrToCt(_cfg(f"data.dataset={head}", f"model.lambda_gdl={lam}"))
        p.networks, p._engine = p.build_networks(), _Engine()
        logs = p.train_step(batch)
        assert ("loss_gdl" in logs) == has and {"loss_l2", "loss_d", "loss_adv"} <= set(logs)


def test_ct_metrics_by_hand():
    ref = np.full((12, 12, 12), 40.0)
    ref[:, :, :4] = 1000.0  # bone
    mask = np.zeros_like(ref, bool)
    mask[2:10, 2:10, 2:10] = True
    pred = ref.copy()
    pred[mask & (ref > 250)] -= 100.0  # bone 100 HU too low
    m = ct_metrics(pred, ref, mask, region_margin=0)
    frac = (mask & (ref > 250)).sum() / mask.sum()
    assert m["mae"] == pytest.approx(100 * frac)
    assert m["mae_bone"] == pytest.approx(100.0) and m["mae_soft"] == 0.0 and np.isnan(m["mae_air"])
    assert m["bone_dice"] == 1.0
    assert m["psnr"] == pytest.approx(10 * np.log10(3000**2 / (100**2 * frac)))


def test_intensity_regression_baseline():
    mr = np.linspace(-0.9, 1.0, 1000).astype(np.float32)[None]
    ct_hu = np.where(mr > 0, 40.0, 700.0)
    case = {"mr": mr, "ct": (ct_hu + 1000.0) * 2 / 3000 - 1}
    b = IntensityRegression(bins=8).fit([case])
    pred = b.predict_hu(np.array([-0.8, 0.8, -1.0]))
    np.testing.assert_allclose(pred, [700.0, 40.0, b.background_hu], atol=1e-3)


def test_ct_units_and_cormack():
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1024, 1500, (10, 10, 10)).astype(np.float32)
    check_ct_units(hu)
    with pytest.raises(DataError, match="Cormack"):
        check_ct_units(np.clip(hu, -1024, None) + 1024 + 2000, "ct.nii")
    with pytest.raises(DataError, match="display-scaled"):
        check_ct_units(np.linspace(0, 255, 1000), "ct8.nii")
    # known points of the Clinical toolbox's scale: air 0 -> -1024, c 900 -> -124, 3100 -> 76, 4000 -> 976 HU
    np.testing.assert_allclose(cormack_to_hu(np.array([0.0, 900.0, 2000.0, 3100.0, 4000.0])),
                               [-1024.0, -124.0, -24.0, 76.0, 976.0], atol=1e-3)


def _copy_dataset(head, tmp_path, edit):
    data = absolute_datalist(head)
    edit(data, tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    return tmp_path


def _save(path, arr, affine):
    nib.save(nib.Nifti1Image(np.asarray(arr, np.float32), affine), str(path))
    return str(path)


@pytest.mark.parametrize("problem, match", [
    ("nan", "NaN"), ("empty_mask", "empty mask"), ("shape", "shape"), ("channels", "channels"),
    ("not_hu", "Hounsfield"), ("missing_key", "no key"), ("affine", "affine"),
])
def test_bad_input_names_the_file(head, tmp_path, problem, match):
    def edit(data, folder):
        case = data["training"][0]
        img = nib.load(case["ct"])
        ct = img.get_fdata()
        if problem == "nan":
            ct[3, 3, 3] = np.nan
            case["ct"] = _save(folder / "bad_ct.nii.gz", ct, img.affine)
        elif problem == "empty_mask":
            case["mask"] = _save(folder / "bad_mask.nii.gz", np.zeros_like(ct), img.affine)
        elif problem == "shape":
            case["ct"] = _save(folder / "bad_ct.nii.gz", ct[:20], img.affine)
        elif problem == "channels":
            mr = nib.load(case["mr"]).get_fdata()
            case["mr"] = _save(folder / "bad_mr.nii.gz", np.stack([mr, mr], -1), img.affine)
        elif problem == "not_hu":
            case["ct"] = _save(folder / "bad_ct.nii.gz", ct + 1024.0, img.affine)
        elif problem == "missing_key":
            del case["ct"]
        elif problem == "affine":
            aff = img.affine.copy()
            aff[0, 3] += 10.0
            case["ct"] = _save(folder / "bad_ct.nii.gz", ct, aff)

    folder = _copy_dataset(head, tmp_path, edit)
    pipe = MrToCt(_cfg(f"data.dataset={folder}"))
    with pytest.raises(DataError, match=match) as err:
        pipe.data.load("training")
    if problem != "missing_key":
        assert "bad_" in str(err.value) or "dataset.json" in str(err.value)
    else:
        assert "dataset.json" in str(err.value)


def test_config_errors():
    with pytest.raises(ConfigError, match="voxel_loss"):
        build_config("mr_to_ct", None, ["model.voxel_loss=l3"])
    with pytest.raises(ConfigError, match="hu_window"):
        build_config("mr_to_ct", None, ["data.hu_window=[100,-100]"])
    with pytest.raises(ConfigError, match="infer.window"):
        build_config("mr_to_ct", None, ["infer.window=[16,16,16]"])


def test_template_pair_units(shared_data):
    """The shared CT templates are Cormack-stretched, not HU: the check refuses them, the conversion fixes them."""
    folder = shared_data / "mr_to_ct" / "template_pair_mni2mm"
    ct = nib.load(str(folder / "CT_template_scct.nii")).get_fdata()
    assert ct.min() >= 0 and ct.max() > 3000
    with pytest.raises(DataError, match="Cormack"):
        check_ct_units(ct, folder / "CT_template_scct.nii")
    hu = cormack_to_hu(ct)
    check_ct_units(hu)
    assert -1030 < hu.min() < -1000 and 300 < hu.max() < 1500


def test_adversarial_weight_is_scaled_to_the_normalised_voxel_loss(head):
    """Regression: V1's lambda_adv 0.05 weighs BCE against a voxel loss on raw intensities; on medgen's [-1, 1]
    CT it made the adversarial gradient on G's output about as large as the voxel gradient at initialisation
    (and 5-10x larger after 25+ steps in the benchmark's runs), so the GAN variants learned texture, not HU.
    With the default weight the adversarial gradient must stay a small fraction of the voxel gradient."""
    torch.manual_seed(0)
    cfg = _cfg(f"data.dataset={head}")
    p = MrToCt(cfg)
    nets = p.build_networks()
    ds = p.train_dataset()
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    fake = nets["G"](p.network_input(batch))
    voxel = torch.nn.functional.mse_loss(fake, batch["ct"])
    g_vox = torch.autograd.grad(voxel, fake, retain_graph=True)[0].norm()
    def d_fake():  # D as the pipeline calls it: real and generated patches in one batch
        return real_fake_logits(nets["D"], batch["ct"], fake, cfg.model.d_shared_batch)[1]

    adv = p._adv()(d_fake(), True, for_discriminator=False)
    g_adv = torch.autograd.grad(cfg.model.lambda_adv * adv, fake, retain_graph=True)[0].norm()
    assert cfg.model.lambda_adv == MrToCt.config_class().model.lambda_adv  # the smoke config keeps the default
    assert g_adv < 0.1 * g_vox, (float(g_adv), float(g_vox))
    g_old = torch.autograd.grad(0.05 * p._adv()(d_fake(), True, for_discriminator=False), fake)[0].norm()
    assert g_old > 0.1 * g_vox  # the old weight fails the same check (the test can fail)


def test_discriminator_sees_real_and_generated_patches_in_one_batch(head):
    """With separate D calls (the reference's), D's batch norm normalises away any level shift shared by the
    generated batch, so the adversarial term cannot hold G's HU level. Every D forward in a training step must
    carry real and generated patches together (2x the batch)."""
    cfg = _cfg(f"data.dataset={head}", "train.batch_size=2")
    assert cfg.model.d_shared_batch
    p = MrToCt(cfg)
    p.networks = p.build_networks()
    sizes = []
    p.networks["D"].register_forward_hook(lambda mod, inp, out: sizes.append(inp[0].shape[0]))

    class Engine:  # the minimum of the engine that train_step uses
        ema = None

        def update(self, name, loss, loss_name):
            loss.backward()
            return True

    p._engine = Engine()
    ds = p.train_dataset()
    p.train_step(torch.utils.data.default_collate([ds[i] for i in range(2)]))
    assert sizes == [4, 4]  # D's update and G's adversarial term
