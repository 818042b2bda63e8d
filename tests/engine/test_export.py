"""Export out of medgen: TorchScript and ONNX files with metadata, checked against the eager model (ONNX at two
spatial sizes), MONAI bundles that give what `medgen infer` gives (`python -m monai.bundle run` in a child
process), every pipeline's exportables, and nothing left behind by a failed export."""
import importlib.util
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from medgen.data.phantoms import write_phantom_dataset
from medgen.engine.commands import build_config, export, infer, load_trained, train_config
from medgen.engine.export import export_onnx, export_torchscript, exportables, verify_export
from medgen.errors import MedgenError
from medgen.networks import MLPEncoder, NieFCN, UNetGenerator
from tests.child_env import REPO, child_env

HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="onnx/onnxruntime not installed (pip install medgen[export])")
HAS_FIRE = importlib.util.find_spec("fire") is not None
# What the bundle and medgen infer may differ by, relative to the largest value: nothing on the CPU (the same
# kernels run); TF32 convolutions on a GPU move the bundle's run (on the default device) by about 1e-3.
TOLERANCE = 1e-2 if torch.cuda.is_available() else 1e-4


def _roundtrip(model, x, tmp_path, name):
    model.train()  # export must switch to eval and restore the mode
    path = export_torchscript(model, x, tmp_path / name)
    assert path.is_file() and model.training
    loaded = torch.jit.load(str(path))
    return model.eval(), loaded


def test_torchscript_unet(tmp_path):
    model = UNetGenerator(3, 1, 1, ngf=4, patch_size=16)
    x = torch.randn(1, 1, 16, 16, 16)
    model, loaded = _roundtrip(model, x, tmp_path, "unet.ts")
    x2 = torch.randn(2, 1, 16, 16, 16)  # another batch: same numbers as eager
    assert torch.allclose(loaded(x2), model(x2), atol=1e-5)


def test_torchscript_fcn_carries_its_metadata(tmp_path):
    from monai.data import load_net_with_metadata

    model = NieFCN(3, 2, 1, channels=(4,) * 8)
    x = torch.randn(1, 2, 20, 20, 20)
    path = export_torchscript(model, x, tmp_path / "sub" / "fcn.ts", metadata={"pipeline": "p", "window": [20] * 3})
    loaded, meta, _ = load_net_with_metadata(str(path))
    assert loaded(x).shape == (1, 1, 4, 4, 4)
    assert meta["pipeline"] == "p" and meta["window"] == [20, 20, 20] and "MONAI" in meta  # + MONAI's versions


def test_torchscript_vae_encoder_tuple_output(tmp_path):
    model = MLPEncoder(30, 5, hidden_sizes=(10,))
    x = torch.rand(4, 30)
    model, loaded = _roundtrip(model, x, tmp_path, "enc.ts")
    mu, logvar = loaded(x)
    assert torch.allclose(mu, model(x)[0], atol=1e-6) and torch.allclose(logvar, model(x)[1], atol=1e-6)


def test_verify_export_raises_on_mismatch():
    model = torch.nn.Linear(3, 2)
    other = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    assert verify_export(model, model, x) == 0.0
    with pytest.raises(MedgenError, match="max abs difference"):
        verify_export(model, other, x)
    with pytest.raises(MedgenError, match="shape"):
        verify_export(model, lambda t: model(t)[:, :1], x)


@pytest.mark.skipif(HAS_ONNX, reason="onnx is installed: the missing-extra message cannot be shown")
def test_onnx_missing_extra_message(tmp_path):
    with pytest.raises(MedgenError, match=r"pip install medgen\[export\]"):
        export_onnx(torch.nn.Linear(3, 2), torch.randn(1, 3), tmp_path / "m.onnx")


@needs_onnx
def test_onnx_spatial_axes_fixed_unless_asked(tmp_path):
    """A graph exported without dynamic spatial axes refuses another size, with an error naming the file."""
    model = UNetGenerator(2, 1, 1, ngf=4, num_downs=3)
    x, bigger = torch.randn(1, 1, 16, 16), torch.randn(1, 1, 32, 16)
    with pytest.raises(MedgenError, match="fixed.onnx fails on an input of shape"):
        export_onnx(model, x, tmp_path / "fixed.onnx", other_examples=(bigger,))
    assert export_onnx(model, x, tmp_path / "dynamic.onnx", dynamic_spatial=True, other_examples=(bigger,)).is_file()


# ----- trained runs (tiny networks, 2 steps, tiny phantoms) -----------------------------------------------------------
def _train(pipeline, data, root, *overrides, smoke=True):
    config = REPO / "configs" / f"{pipeline}_smoke.yaml" if smoke else None
    length = [] if any(o.startswith("train.epochs=") for o in overrides) else ["train.iterations=2"]
    cls, cfg = build_config(pipeline, config, [f"data.dataset={data}", *length, "train.val_every=0",
                                               f"output.root={root}", "output.name=r", *overrides])
    train_config(cls, cfg)
    return root / pipeline / "r"


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """Head phantoms 40 x 24 x 16: longer than two 16^3 windows on the first axis (the check crops it)."""
    return write_phantom_dataset("head", tmp_path_factory.mktemp("head") / "data", n_cases=4, seed=3,
                                 shape=(40, 24, 16)).parent


@pytest.fixture(scope="module")
def pet(head, tmp_path_factory):
    """pet_lowdose, the two-stage cascade (progressive refinement) with its noise-robust PET scale."""
    torch.set_num_threads(1)
    return _train("pet_lowdose", head, tmp_path_factory.mktemp("pet"))


def _case_image(head, key: str, folder):
    """The first test case's `key` alone in a folder, as a user would hand images to a bundle."""
    entry = json.loads((head / "dataset.json").read_text())["test"][0]
    folder.mkdir()
    (folder / f"{entry['id']}.nii.gz").write_bytes((head / entry[key]).read_bytes())
    return folder, entry["id"]


@pytest.mark.skipif(not HAS_FIRE, reason="python -m monai.bundle needs fire (pip install medgen[export])")
def test_bundle_runs_with_monai_alone_and_gives_what_medgen_infer_gives(pet, head, tmp_path):
    """The round trip: `python -m monai.bundle run` on a NIfTI writes what `medgen infer` writes for it (the
    cascade's last stage, back in the input's PET units and geometry)."""
    from monai.data import load_net_with_metadata

    result = export(pet, fmt="bundle")
    bundle = result["written"][0]
    assert bundle == pet / "export" / "bundle"
    ver = result["verification"]["outputs"]["output"]
    assert ver["max_abs_difference"] <= 1e-4 * ver["max_abs_value"] and ver["max_abs_value"] > 0
    assert result["verification"]["shape"] == [32, 24, 16]  # cropped to two windows on the long axis

    images, cid = _case_image(head, "low_dose", tmp_path / "images")
    run = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                          str(bundle / "configs" / "inference.json"), "--bundle_root", str(bundle),
                          "--dataset_dir", str(images), "--output_dir", str(tmp_path / "bundle_out")],
                         env=child_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ours = nib.load(str(tmp_path / "bundle_out" / f"{cid}_output.nii.gz"))
    infer(pet, dataset=str(images), out=tmp_path / "medgen_out", device="cpu")
    theirs = nib.load(str(tmp_path / "medgen_out" / f"{cid}_output_stage2.nii.gz"))
    source = nib.load(str(images / f"{cid}.nii.gz"))
    assert ours.shape == theirs.shape == source.shape
    np.testing.assert_allclose(ours.affine, source.affine, atol=1e-5)
    a, b = np.asarray(ours.dataobj), np.asarray(theirs.dataobj)
    assert np.abs(b).max() > 10  # PET units (Bq/mL), not the network's normalised ones
    assert np.abs(a - b).max() <= TOLERANCE * np.abs(b).max()

    # the files: MONAI's layout, weights only, TorchScript with its metadata, the eager module rebuilt
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["num_channels"] == 2 and fmt["inputs"]["image"]["spatial_shape"] == [16, 16, 16]
    assert fmt["outputs"]["pred"]["num_channels"] == 1 and meta["required_packages_version"]["medgen"]
    assert "medgen.engine.bundle_transforms.InvertIntensityd" in meta["medgen"]["helpers"]
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    assert inference["inferer"]["_target_"] == "SlidingWindowInferer" and inference["inferer"]["overlap"] == 0.25
    weights = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert set(weights) == {"stage1", "stage2"}
    ts, ts_meta, extra = load_net_with_metadata(str(bundle / "models" / "model.ts"), more_extra_files=["inference.json"])
    assert ts_meta["network_data_format"] == fmt and json.loads(extra["inference.json"]) == inference
    from medgen.engine.bundle_transforms import build_network

    net = build_network(str(bundle / "configs" / "medgen_config.json"), "G", stage=2)
    net.load_state_dict(weights["stage2"])
    x = torch.rand(1, 2, 16, 16, 16)
    assert torch.allclose(net.eval()(x), ts(x), atol=1e-5)


@needs_onnx
def test_onnx_runs_at_two_sizes_and_torchscript_carries_metadata(pet, tmp_path):
    import onnxruntime as ort
    from monai.data import load_net_with_metadata

    out = tmp_path / "onnx"
    written = export(pet, fmt="onnx", out=out)["written"]
    assert sorted(p.name for p in written) == ["G_stage1.onnx", "G_stage2.onnx"]
    _, _, stages, _ = load_trained(pet, device="cpu")
    session = ort.InferenceSession(str(out / "G_stage2.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    meta = json.loads(session.get_modelmeta().custom_metadata_map["medgen"])
    assert meta["pipeline"] == "pet_lowdose" and meta["stage"] == 2
    for size in ((16, 16, 16), (32, 16, 48)):  # the U-Net takes any multiple of 16
        x = torch.rand(1, 2, *size) * 2 - 1
        got = session.run(None, {"image": x.numpy()})[0]
        with torch.no_grad():
            want = stages[1].networks["G"](x).numpy()
        assert got.shape == (1, 1, *size)
        np.testing.assert_allclose(got, want, atol=1e-4)
    ts = export(pet, fmt="torchscript")["written"]
    _, ts_meta, _ = load_net_with_metadata(str(ts[1]))
    assert ts_meta["network"] == "G" and ts_meta["inputs"]["image"]["shape"] == [1, 2, 16, 16, 16]
    assert ts_meta["checkpoint"]["sha256"] == stages[1].checkpoint["sha256"]


def test_an_export_is_never_overwritten_silently(pet, tmp_path):
    out = tmp_path / "ts"
    export(pet, fmt="torchscript", out=out)
    before = (out / "G_stage1.ts").stat().st_mtime_ns
    with pytest.raises(MedgenError, match="already exists; pass --overwrite"):
        export(pet, fmt="torchscript", out=out)
    assert (out / "G_stage1.ts").stat().st_mtime_ns == before
    export(pet, fmt="torchscript", out=out, overwrite=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(MedgenError, match="not a bundle medgen exported"):
        export(pet, fmt="bundle", out=mine, overwrite=True, verify=False)
    assert (mine / "notes.txt").read_text() == "mine"


def test_a_bundle_that_would_differ_from_medgen_is_refused_and_leaves_nothing(pet, monkeypatch):
    """The check is what makes a bundle trustworthy: one whose sliding window overlaps differently from medgen's
    fails it, and the failed export leaves no files and no empty folder."""
    import medgen.engine.bundle as bundle

    original = bundle._window_inferer

    def other_overlap(in_size, out_size, infer, overlap, blend):
        return original(in_size, out_size, infer, 0.75, blend)

    monkeypatch.setattr(bundle, "_window_inferer", other_overlap)
    out = pet / "elsewhere" / "b"
    with pytest.raises(MedgenError, match="differs from medgen infer"):
        export(pet, fmt="bundle", out=out)
    assert not (pet / "elsewhere").exists()


@pytest.fixture(scope="module")
def mr_to_ct(head, tmp_path_factory):
    return _train("mr_to_ct", head, tmp_path_factory.mktemp("ct"), "model.stages=1", "infer.window=[]",
                  "data.patch_size=[24,24,24]")


def test_bundle_mr_to_ct_valid_windows_and_hounsfield_units(mr_to_ct):
    result = export(mr_to_ct, fmt="bundle")
    inference = json.loads((result["written"][0] / "configs" / "inference.json").read_text())
    assert inference["inferer"]["_target_"] == "medgen.engine.bundle_transforms.ValidSlidingWindowInferer"
    assert inference["inferer"]["roi_size"] == [24, 24, 24] and inference["inferer"]["output_size"] == [16, 16, 16]
    inverse = [t for t in inference["postprocessing"]["transforms"] if t["_target_"] == "ScaleIntensityRanged"]
    assert inverse and (inverse[0]["b_min"], inverse[0]["b_max"]) == (-1000.0, 2000.0)  # MONAI's own, HU
    ver = result["verification"]["outputs"]["output"]
    assert ver["max_abs_difference"] <= 1e-4 * ver["max_abs_value"] and ver["max_abs_value"] > 100


def test_bundle_mr_synthesis_pads_a_short_volume_with_its_background(head, tmp_path):
    run = _train("mr_synthesis", head, tmp_path, "model.target_key=t2", "data.patch_size=[16,16,32]")
    result = export(run, fmt="bundle")
    ver = result["verification"]
    assert ver["shape"][2] == 16 < 32  # shorter than the window: padded with -1 and cropped back, as medgen does
    out = ver["outputs"]["output"]
    assert out["max_abs_difference"] <= 1e-4 * out["max_abs_value"] and out["max_abs_value"] > 0
    # a new scan has no T2 of its own: written on the training targets' intensity scale, as medgen infer does
    inference = json.loads((result["written"][0] / "configs" / "inference.json").read_text())
    inverse = [t for t in inference["postprocessing"]["transforms"] if t["_target_"].endswith("InvertIntensityd")]
    assert inverse and inverse[0]["params"]["preset"] == "mr" and not result["notes"]


def test_bundle_lesion_uda_writes_the_label_map_and_probabilities(tmp_path):
    data = write_phantom_dataset("lesion_domains", tmp_path / "data", n_cases=2, seed=1, shape=(32, 32, 32)).parent
    run = _train("lesion_uda", data, tmp_path, "infer.output_size=[8,8,8]")
    result = export(run, fmt="bundle")
    outputs = result["verification"]["outputs"]
    assert set(outputs) == {"lesion", "lesion_prob"}
    assert outputs["lesion"]["voxels_differing"] == 0 and outputs["lesion_prob"]["max_abs_difference"] <= 1e-5
    meta = json.loads((result["written"][0] / "configs" / "metadata.json").read_text())
    assert [o["dtype"] for o in meta["medgen"]["outputs"]] == ["uint8", "float32"]
    assert meta["medgen"]["mask_key"] == "brain_mask"  # z-scored inside the brain mask when the case has one


# ----- 2D images and tables: TorchScript and ONNX, no bundle ----------------------------------------------------------
@pytest.fixture(scope="module")
def oct_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("oct")
    data = write_phantom_dataset("oct", root / "data", n_cases=12, seed=3, shape=(64, 64)).parent
    return _train("oct_anogan", data, root, "train.iterations=4", "model.encoder_iterations=2")


def test_oct_anogan_exports_generator_encoder_and_scorer(oct_run):
    from monai.data import load_net_with_metadata

    files = export(oct_run, fmt="torchscript")["written"]
    assert sorted(p.name for p in files) == ["E.ts", "G.ts", "scorer.ts"]
    _, _, stages, _ = load_trained(oct_run, device="cpu")
    pipe = stages[0]
    scorer, meta, _ = load_net_with_metadata(str(oct_run / "export" / "scorer.ts"))
    assert meta["outputs"] == ["score", "residual"] and meta["patch_size"] == [16, 16]
    case = pipe.data.load("test")[0]
    patches = case["image"][:, 10:26, 20:36].unsqueeze(0).repeat(3, 1, 1, 1)  # normalised B-scan patches
    score, residual = scorer(patches)
    want, rec = pipe.score_patches(patches)
    torch.testing.assert_close(score, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(residual, (patches - rec).abs(), atol=1e-5, rtol=1e-5)


def test_no_bundle_for_2d_scans_says_why_and_leaves_no_folder(oct_run, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(MedgenError, match=r"oct_anogan.*has no MONAI bundle.*--format torchscript"):
        export(oct_run, fmt="bundle", out=out)
    assert not out.exists() and not out.parent.joinpath(".never.new").exists()


def test_anogan_scorer_is_not_a_graph_and_says_so(tmp_path):
    from medgen.registry import PIPELINES

    cls, cfg = build_config("oct_anogan", REPO / "configs" / "oct_anogan_smoke.yaml", ["model.method=anogan"])
    pipe = cls(cfg)
    pipe.networks = pipe.build_networks()
    found = exportables(pipe)
    assert set(found) == {"G", "D", "scorer"} and "not a fixed graph" in found["scorer"].unavailable
    assert PIPELINES.get("oct_anogan") is cls


def test_a_failed_export_leaves_no_file_and_no_folder(oct_run, monkeypatch):
    import medgen.engine.export as ex

    calls = []
    real = ex.verify_export

    def fail_on_the_third_file(*args, **kwargs):
        calls.append(kwargs.get("what", ""))
        if len({c.split(" ")[-1] for c in calls}) > 2:
            raise MedgenError("simulated failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(ex, "verify_export", fail_on_the_third_file)
    out = oct_run / "ts_fail"
    with pytest.raises(MedgenError, match="simulated"):
        export(oct_run, fmt="torchscript", out=out)
    assert not out.exists() and not list(oct_run.glob(".ts_fail*"))


def test_expression_encoder_gives_the_latent_medgen_infer_writes(tmp_path):
    import pandas as pd

    data = write_phantom_dataset("expression", tmp_path / "data", n_cases=60, seed=1, n_genes=40).parent
    run = _train("expression_vae", data, tmp_path, "train.epochs=2", "model.latent_rotation=varimax", smoke=False)
    (path,) = export(run, fmt="torchscript")["written"]
    from monai.data import load_net_with_metadata

    encoder, meta, _ = load_net_with_metadata(str(path))
    assert len(meta["preprocessing"]["features"]) == 40 and meta["latent_rotation"] == "varimax"
    infer(run, split="test", out=tmp_path / "pred")
    latent = pd.read_csv(tmp_path / "pred" / "test_latent.tsv", sep="\t", index_col=0)
    _, _, stages, _ = load_trained(run, device="cpu")
    x = torch.as_tensor(stages[0].data.load("test")[0]["x"])
    with torch.no_grad():
        got = encoder(x).numpy()
    np.testing.assert_allclose(got, latent.to_numpy(), atol=1e-4)
