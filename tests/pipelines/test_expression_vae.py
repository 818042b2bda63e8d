"""expression_vae (Tybalt): end to end on a small expression phantom, learning vs baselines, the KL warm-up,
the preprocessing contract (feature selection, train-only scaling, saved split) and bad input."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from medgen.engine.outputs import OutputFolder, write_case_outputs
from medgen.data.phantoms import write_phantom_dataset
from medgen.engine.commands import build_config, infer, load_trained, train_config
from medgen.errors import ConfigError, DataError, MedgenError
from medgen.data.table_source import tcga_sample_type
from medgen.metrics.latent_evaluation import evaluate_run
from medgen.metrics.latent_space import association_tests, programme_recovery
from medgen.pipelines.expression_vae import ExpressionVAE

FAST = ["train.progress=off", "train.log_every=5", "evaluation.cv_folds=3"]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("expr")
    return write_phantom_dataset("expression", root / "ph", n_cases=300, seed=1, n_genes=500).parent


def _train(data, root, name, *extra, resume=False):
    cls, cfg = build_config("expression_vae", None, [f"data.dataset={data}", f"output.root={root}",
                                                     f"output.name={name}", *FAST, *extra])
    return train_config(cls, cfg, resume=resume)


@pytest.fixture(scope="module")
def trained(phantom, tmp_path_factory):
    """Two runs on the same split: kappa 1 (paper) and kappa 0 (beta stays 0: a plain autoencoder)."""
    root = tmp_path_factory.mktemp("runs")
    common = ["train.epochs=60", "train.val_every=1000"]  # paper's 100 latent features
    on = _train(phantom, root, "kl_on", *common)
    off = _train(phantom, root, "kl_off", *common, "model.kappa=0")
    return on["run_dir"], off["run_dir"]


def test_train_resume_infer_evaluate(phantom, tmp_path):
    common = ["model.latent_dim=6", "model.top_genes=5", "train.val_every=6", "train.deterministic=true"]
    _train(phantom, tmp_path, "r", *common, "train.epochs=2")
    summary = _train(phantom, tmp_path, "r", *common, "train.epochs=4", resume=True)
    straight = _train(phantom, tmp_path, "s", *common, "train.epochs=4")
    assert summary["steps"] == straight["steps"] == 4 * 5  # 240 training samples / batch 50 -> 5 steps per epoch
    a = torch.load(tmp_path / "expression_vae/r/checkpoints/last.pt", weights_only=True)["networks"]["VAE"]
    b = torch.load(tmp_path / "expression_vae/s/checkpoints/last.pt", weights_only=True)["networks"]["VAE"]
    for k in a:
        torch.testing.assert_close(a[k], b[k])  # resume continues exactly
    run = tmp_path / "expression_vae" / "r"
    assert json.loads((run / "preprocessing.json").read_text())["n_features"] == 500
    result = infer(run)
    assert result["written"] == 1 and result["failed"] == 0
    # output "geometry": rows are exactly the test samples of dataset.json, columns the latent features
    meta = json.loads((phantom / "dataset.json").read_text())
    latent = pd.read_csv(run / "predictions" / "test_latent.tsv", sep="\t", index_col=0)
    assert list(latent.index) == [c["id"] for c in meta["test"]] and latent.shape[1] == 6
    weights = pd.read_csv(run / "predictions" / "gene_weights.tsv", sep="\t", index_col=0)
    source = pd.read_csv(phantom / "expression.tsv", sep="\t", index_col=0, nrows=1)
    assert weights.shape == (500, 6) and set(weights.index) == set(source.columns)
    top = pd.read_csv(run / "predictions" / "top_genes.tsv", sep="\t")
    assert len(top) == 6 * 2 * 5 and top.groupby("latent_feature")["feature"].count().eq(10).all()
    z0 = top[(top.latent_feature == "z0") & (top.sign == "positive")]
    assert z0["feature"].iloc[0] == weights["z0"].idxmax()
    assert (run / "predictions" / "test_tsne.png").stat().st_size > 1000
    assert infer(run)["skipped"] == 1  # reruns do only what is missing
    _, _, stages, _ = load_trained(run)
    case = stages[0].data.load("test")[0]
    with pytest.raises(MedgenError, match="exists"):  # a file medgen did not write there is never overwritten
        write_case_outputs(case, stages[0].outputs(case, stages[0].predict_case(case)), OutputFolder(run / "predictions"))
    from medgen.cli import main  # `medgen evaluate` scores the split through the pipeline's evaluate_case

    assert main(["evaluate", str(run / "predictions"), str(phantom), "--out", str(run / "eval_cli")]) == 0
    assert (run / "eval_cli" / "report.md").exists()
    summary = json.loads((run / "eval_cli" / "summary.json").read_text())
    assert "training_mean" in summary["floors"] and summary["metrics"]["mse"]["n"] == 1
    ev = evaluate_run(run, tsne=False)
    assert {r["method"] for r in ev["reconstruction"]} == {"tybalt", "pca6", "training_mean"}
    assert (run / "eval" / "associations.tsv").exists() and (run / "eval" / "report.md").exists()
    assert len(ev["programmes"]) == 5


def test_beats_training_mean_and_recovers_labels(trained):
    """Margins fixed before the first run: held-out MSE <= 0.8 x the per-gene training mean's, and the sex
    label (one programme) recovered from the latent space with cross-validated AUROC >= 0.9."""
    ev = evaluate_run(trained[0], out=trained[0] + "/eval_test", tsne=False)
    rec = {r["method"]: r for r in ev["reconstruction"]}
    assert rec["tybalt"]["mse"] <= 0.8 * rec["training_mean"]["mse"]
    labels = {r["label"]: r for r in ev["labels"]}
    assert labels["sex"]["auroc_latent"] >= 0.9
    assert labels["sex"]["significant_features"] >= 1


def test_kl_term_is_active_after_warmup(trained):
    on, off = (pd.read_csv(f"{r}/metrics.csv").dropna(subset=["kl"]) for r in trained)
    # beta: 0 during epoch 0 (5 steps), then kappa * epoch capped at 1; logged every 5 steps
    assert on["beta"].iloc[0] == 0.0 and (on["beta"].iloc[1:] == 1.0).all()
    assert (off["beta"] == 0.0).all()
    # the KL term shapes training: it ends well below the KL of the same model trained with beta = 0 (whose KL
    # stays bounded only because batch norm on the heads keeps mu and log-variance near standardised)
    assert on["kl"].iloc[-1] < 0.8 * off["kl"].iloc[-1]
    assert on["kl"].iloc[-1] < on["kl"].iloc[1]  # and it decreases once switched on


def test_varimax_readout_concentrates_the_programmes(trained):
    """Margins fixed before the first run: after a varimax rotation of the trained latent space (fitted on the
    decoder weights only), the mean over the five programmes of the best single-feature |r| rises by at least
    0.05, and every programme reaches |r| >= 0.7."""
    ev = evaluate_run(trained[0], out=trained[0] + "/eval_varimax", tsne=False)
    raw = np.array([r["best_abs_r"] for r in ev["programmes"]])
    rotated = np.array([r["best_abs_r_varimax"] for r in ev["programmes"]])
    assert rotated.mean() >= raw.mean() + 0.05
    assert rotated.min() >= 0.7


def test_varimax_exports_are_an_exact_reparametrisation(phantom, tmp_path):
    """With model.latent_rotation=varimax the exported latent means and gene weights are rotated together:
    latent @ weights.T (the decoder's input to its output layer, less the bias) equals that of the model's
    own latent means and decoder weights, while the latent means themselves differ."""
    common = ["model.latent_dim=6", "model.top_genes=5", "train.epochs=2", "train.val_every=1000"]
    run = _train(phantom, tmp_path, "vmx", *common, "model.latent_rotation=varimax")["run_dir"]
    assert infer(run)["written"] == 1
    latent = pd.read_csv(f"{run}/predictions/test_latent.tsv", sep="\t", index_col=0)
    weights = pd.read_csv(f"{run}/predictions/gene_weights.tsv", sep="\t", index_col=0)
    assert list(latent.columns) == list(weights.columns) and latent.columns[0] == "vz0"
    _, _, stages, _ = load_trained(run)
    p = stages[0]
    raw = p.predict_case(p.data.load("test")[0])["latent"].numpy()
    np.testing.assert_allclose(latent.to_numpy() @ weights.to_numpy().T, raw @ p.decoder_weights().T, atol=1e-3)
    assert not np.allclose(latent.to_numpy(), raw, atol=1e-3)
    ev = evaluate_run(run, tsne=False)
    assert ev["latent_rotation"] == "varimax" and ev["labels"][0]["best_feature"].startswith("vz")


def test_beta_schedule_and_kl_gradient(phantom):
    _, cfg = build_config("expression_vae", None, [f"data.dataset={phantom}", "model.latent_dim=4", "model.kappa=0.4"])
    p = ExpressionVAE(cfg)
    p.steps_per_epoch = 10
    betas = []
    for step in (0, 9, 10, 25, 30, 100):
        p.step = step
        betas.append(p.beta())
    assert betas == pytest.approx([0.0, 0.0, 0.4, 0.8, 1.0, 1.0])  # + kappa per completed epoch, capped at 1
    net = p.build_networks()["VAE"].train()
    x = torch.as_tensor(p.data.matrix(p.preprocessing.splits["training"][:20]))
    grads = []
    for beta in (0.0, 1.0):
        torch.manual_seed(0)
        net.zero_grad()
        terms = p.losses(x, net(x), beta)
        terms["loss"].backward()
        grads.append(net.encoder.mu[0].weight.grad.clone())
        assert float(terms["kl"].detach()) > 0
    assert not torch.allclose(grads[0], grads[1])  # with beta > 0 the KL term contributes gradient


def test_head_relu_flag(phantom):
    for flag in (False, True):
        _, cfg = build_config("expression_vae", None, [f"data.dataset={phantom}", "model.latent_dim=4",
                                                       f"model.head_relu={str(flag).lower()}"])
        net = ExpressionVAE(cfg).build_networks()["VAE"].eval()
        _, mu, logvar, _ = net(torch.rand(32, 500) * 3 - 1)
        assert bool((logvar >= 0).all()) == flag  # the reference quirk forces sigma >= 1


def _matrix_dataset(folder, df, labels=None, splits=None):
    folder.mkdir(parents=True, exist_ok=True)
    df.to_csv(folder / "m.tsv", sep="\t")
    meta = {"name": "t", "tables": {"expression": "m.tsv"}}
    if labels is not None:
        labels.to_csv(folder / "l.tsv", sep="\t")
        meta["tables"]["labels"] = "l.tsv"
    meta.update(splits or {})
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def test_feature_selection_scaling_and_split(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    spiky = np.zeros(n)
    spiky[:6] = 100.0  # median absolute deviation 0, mean absolute deviation large
    df = pd.DataFrame({"spread": rng.uniform(0, 10, n), "spiky": spiky, "flat": rng.uniform(0, 0.1, n)},
                      index=[f"s{i}" for i in range(n)])
    data = _matrix_dataset(tmp_path / "d", df)
    chosen = {}
    for how in ("mad", "mean_ad"):
        _, cfg = build_config("expression_vae", None, [f"data.dataset={data}", "data.n_features=1",
                                                       f"data.feature_selection={how}"])
        p = ExpressionVAE(cfg)
        p.prepare()
        chosen[how] = p.preprocessing.features
    assert chosen == {"mad": ["spread"], "mean_ad": ["spiky"]}  # paper (median) vs code (mean)
    _, cfg = build_config("expression_vae", None, [f"data.dataset={data}"])
    p = ExpressionVAE(cfg)
    fitted = p.prepare()
    assert len(fitted.splits["test"]) == 6 and len(fitted.splits["training"]) == 54  # seeded 10 % test split
    train = df.loc[fitted.splits["training"], fitted.features]
    np.testing.assert_allclose(fitted.scaler.min_, train.min().to_numpy())  # fitted on training rows only
    np.testing.assert_allclose(fitted.scaler.max_, train.max().to_numpy())
    again = ExpressionVAE(cfg)
    again.load_state_dict(p.state_dict())  # the saved state restores split, features and scaler
    assert again.preprocessing.splits == fitted.splits and again.preprocessing.features == fitted.features
    np.testing.assert_allclose(again.data.matrix(fitted.splits["test"]), p.data.matrix(fitted.splits["test"]))


def test_bad_input_errors(tmp_path, phantom):
    df = pd.DataFrame(np.random.default_rng(0).random((20, 5)), index=[f"s{i}" for i in range(20)],
                      columns=list("abcde"))
    nan = df.copy()
    nan.iloc[3, 2] = np.nan
    data = _matrix_dataset(tmp_path / "nan", nan)
    _, cfg = build_config("expression_vae", None, [f"data.dataset={data}"])
    with pytest.raises(DataError, match=r"m\.tsv.*missing values"):
        ExpressionVAE(cfg).prepare()
    (tmp_path / "nokey").mkdir()
    (tmp_path / "nokey" / "dataset.json").write_text(json.dumps({"tables": {"matrix": "m.tsv"}}))
    _, cfg = build_config("expression_vae", None, [f"data.dataset={tmp_path / 'nokey'}"])
    with pytest.raises(DataError, match=r"dataset\.json.*tables\.expression"):
        ExpressionVAE(cfg).prepare()
    labels = pd.DataFrame({"group": ["x"] * 10}, index=[f"s{i}" for i in range(10)])
    data = _matrix_dataset(tmp_path / "lab", df, labels)
    _, cfg = build_config("expression_vae", None, [f"data.dataset={data}"])
    with pytest.raises(DataError, match=r"l\.tsv.*no label"):
        ExpressionVAE(cfg).prepare()
    data = _matrix_dataset(tmp_path / "split", df, splits={"training": [{"id": "s1"}, {"id": "zz"}]})
    _, cfg = build_config("expression_vae", None, [f"data.dataset={data}"])
    with pytest.raises(DataError, match=r"dataset\.json.*not rows"):
        ExpressionVAE(cfg).prepare()
    with pytest.raises(ConfigError, match="latent_dm"):
        build_config("expression_vae", None, ["model.latent_dm=3"])
    with pytest.raises(DataError, match="TCGA barcode"):
        tcga_sample_type("SAMPLE0001")
    assert tcga_sample_type("TCGA.E2.A1L7.11A.33R.A143.13") == "11"


def test_association_and_programme_recovery():
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b"], 50)
    z = rng.normal(size=(100, 6))
    z[y == "b", 2] += 2.0  # one feature shifted by the label
    df = association_tests(z, y, [f"z{i}" for i in range(6)], "lab")
    assert df.loc[df["q"].idxmin(), "feature"] == "z2" and df.set_index("feature").loc["z2", "effect"] > 0.85
    assert df["significant"].sum() == 1
    from scipy.stats import mannwhitneyu

    p_hand = mannwhitneyu(z[y == "b", 2], z[y == "a", 2]).pvalue
    assert df.set_index("feature").loc["z2", "p"] == pytest.approx(p_hand)
    programs = pd.DataFrame({"p0": z[:, 4] * -3.0 + 1.0, "p1": rng.normal(size=100)})
    rec = programme_recovery(z, programs)
    assert rec[0]["feature"] == 4 and rec[0]["best_abs_r"] == pytest.approx(1.0)
    assert rec[1]["best_abs_r"] < 0.5


def test_real_tcga_preprocessing(shared_data, tmp_path):
    src = shared_data / "expression_vae" / "tcga_mirna" / "PRAD.parquet"
    _, cfg = build_config("expression_vae", None, [f"data.dataset={src}", "data.transform=log2_cpm",
                                                   "data.sample_type_from_barcode=true"])
    p = ExpressionVAE(cfg)
    fitted = p.prepare()
    assert len(fitted.features) == 1881  # miRNA: fewer than 5000 features, so all are kept
    counts = p.data.labels["sample_type"].value_counts()
    assert counts["01"] == 498 and counts["11"] == 52
    x = p.data.matrix(fitted.splits["training"])
    assert x.min() == 0.0 and x.max() == 1.0
