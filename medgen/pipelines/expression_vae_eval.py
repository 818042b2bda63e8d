"""Metrics and figures of the expression_vae pipeline.

- held-out reconstruction (mean BCE per value, MSE) of the model vs PCA of the same size and the per-feature
  training mean;
- label recovery: cross-validated logistic-regression AUROC from the latent means vs PCA scores of the same size
  (both fitted on the training split only, labels never seen by either), plus a held-out AUROC (fit on the
  training samples, scored on the test samples);
- per-feature association with each label (Mann-Whitney U for two classes, Kruskal-Wallis for more) with
  Benjamini-Hochberg FDR per label: how Way & Greene found their sex and metastasis features;
- phantom programme recovery: each true programme's best absolute Pearson correlation with one latent feature,
  for the features as trained and after a varimax rotation (`expression_vae_rotation`);
- a t-SNE of the latent space coloured by each label, and the top-weighted genes of each latent feature.

`evaluate_run(run)` runs all of it on a trained run and writes `eval/` (summary.json, CSV / TSV tables,
report.md, latent_all.tsv, tsne_all.png). `medgen evaluate` compares image files and does not apply here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medgen.errors import MedgenError

EPS = 1e-6
MISSING = ("", "nan", "NaN", "NA", "None", "<NA>")


# ----- tables and figures ------------------------------------------------------------------------------
def top_genes_table(weights, n: int = 50):
    """Long table (latent_feature, sign, rank, feature, weight): the n most positive and n most negative
    weights of each latent feature (Tybalt's high-weight genes per node)."""
    import pandas as pd

    rows = []
    w = weights.to_numpy()
    names = np.asarray(weights.index)
    n = min(n, w.shape[0])
    for j, col in enumerate(weights.columns):
        order = np.argsort(-w[:, j], kind="stable")
        for sign, idx in (("positive", order[:n]), ("negative", order[::-1][:n])):
            for rank, i in enumerate(idx, start=1):
                rows.append({"latent_feature": col, "sign": sign, "rank": rank, "feature": names[i], "weight": w[i, j]})
    return pd.DataFrame(rows)


def plot_tsne(z: np.ndarray, labels, path, seed: int = 0, perplexity: float = 30.0, title: str = "") -> None:
    """2D t-SNE (scikit-learn, PCA init, seeded) of the rows of z, one panel coloured by each label column."""
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    n = z.shape[0]
    z = np.asarray(z, dtype=np.float64)
    if not np.isfinite(z).all() or float(np.ptp(z, axis=0).max(initial=0.0)) <= 0.0:
        # scikit-learn's Barnes-Hut t-SNE of identical points divides by a zero spread and can crash the
        # process (seen: a segmentation fault on a constant matrix); there is nothing to embed anyway.
        raise MedgenError(f"no t-SNE: the {n} latent vectors are identical or not finite")
    perp = float(min(perplexity, max(2.0, (n - 1) / 3.0)))
    emb = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(z)
    columns = list(labels.columns) if labels is not None and len(labels.columns) else [None]
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 4.0), squeeze=False)
    for ax, col in zip(axes[0], columns):
        if col is None:
            ax.scatter(emb[:, 0], emb[:, 1], s=4, c="0.3")
        else:
            values = np.array(["" if pd.isna(v) else str(v) for v in labels[col].to_numpy(dtype=object)])
            values = np.where(values == "", "missing", values)
            levels = sorted(set(values), key=lambda v: (-int((values == v).sum()), v))[:10]
            cmap = plt.get_cmap("tab10")
            for k, lev in enumerate(levels):
                sel = values == lev
                ax.scatter(emb[sel, 0], emb[sel, 1], s=4, color=cmap(k), label=f"{lev} ({int(sel.sum())})")
            rest = ~np.isin(values, levels)
            if rest.any():
                ax.scatter(emb[rest, 0], emb[rest, 1], s=4, c="0.7", label=f"other ({int(rest.sum())})")
            ax.legend(fontsize=6, markerscale=2, loc="best")
            ax.set_title(str(col), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80, format="png")
    plt.close(fig)


# ----- metrics ------------------------------------------------------------------------------------------
def reconstruction_metrics(recon: np.ndarray, x: np.ndarray) -> dict[str, float]:
    """Mean BCE per value (targets clipped to [0, 1], predictions to [1e-6, 1 - 1e-6]) and MSE (unclipped)."""
    from medgen.metrics.image import mse

    p = np.clip(recon, EPS, 1 - EPS)
    t = np.clip(x, 0.0, 1.0)
    bce = float(-(t * np.log(p) + (1 - t) * np.log(1 - p)).mean())
    return {"bce": bce, "mse": mse(recon, x)}


def _usable(y, min_class_size: int):
    """Mask and values of a label with classes of at least min_class_size samples; None if < 2 classes remain.
    Missing labels (empty, "nan", "NA", "None") are left out."""
    y = np.array(["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in y], dtype=object)
    levels, counts = np.unique(y.astype(str), return_counts=True)
    keep = [lev for lev, c in zip(levels, counts) if c >= min_class_size and lev not in MISSING]
    if len(keep) < 2:
        return None
    y = y.astype(str)
    mask = np.isin(y, keep)
    return mask, y[mask]


def _auroc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    from medgen.metrics import roc_auc

    if len(classes) == 2:
        return roc_auc(proba[:, 1], (y == classes[1]).astype(int))
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes))


def _classifier(seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))


def label_auroc_cv(features: np.ndarray, y, folds: int = 5, seed: int = 0, min_class_size: int = 5) -> float:
    """Stratified k-fold cross-validated logistic-regression AUROC (one-vs-rest macro for > 2 classes)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    got = _usable(y, min_class_size)
    if got is None:
        return float("nan")
    mask, yy = got
    classes, counts = np.unique(yy, return_counts=True)
    k = int(min(folds, counts.min()))
    if k < 2:
        return float("nan")
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    proba = cross_val_predict(_classifier(seed), features[mask], yy, cv=cv, method="predict_proba")
    return _auroc(yy, proba, classes)


def label_auroc_heldout(f_train, y_train, f_test, y_test, seed: int = 0, min_class_size: int = 5) -> float:
    """Logistic regression fitted on the training samples, AUROC on the held-out samples (NaN if not possible)."""
    got = _usable(y_train, min_class_size)
    if got is None:
        return float("nan")
    mask, yy = got
    classes = np.unique(yy)
    y_test = np.asarray(y_test).astype(str)
    classes = np.asarray(classes)
    tmask = np.isin(y_test, classes)
    if len(np.unique(y_test[tmask])) < len(classes):
        return float("nan")  # a class absent from the held-out samples
    clf = _classifier(seed).fit(f_train[mask], yy)
    return _auroc(y_test[tmask], clf.predict_proba(f_test[tmask]), clf.classes_)


def association_tests(z: np.ndarray, y, feature_names, label: str, min_class_size: int = 5, fdr: float = 0.05):
    """One test per latent feature against a label: Mann-Whitney U (2 classes; effect = AUC of the feature
    for the second class) or Kruskal-Wallis (> 2; effect = epsilon^2 = (H - k + 1) / (n - k)), with
    Benjamini-Hochberg q-values across the features. Constant features get p = 1."""
    import pandas as pd
    from scipy import stats

    got = _usable(y, min_class_size)
    if got is None:
        return pd.DataFrame()
    mask, yy = got
    zz = z[mask]
    classes = np.unique(yy)
    rows = []
    for j, name in enumerate(feature_names):
        col = zz[:, j]
        groups = [col[yy == c] for c in classes]
        if np.ptp(col) == 0:
            stat, p, eff = 0.0, 1.0, (0.5 if len(classes) == 2 else 0.0)
            test = "mannwhitneyu" if len(classes) == 2 else "kruskal"
        elif len(classes) == 2:
            res = stats.mannwhitneyu(groups[1], groups[0], alternative="two-sided")
            stat, p, test = float(res.statistic), float(res.pvalue), "mannwhitneyu"
            eff = stat / (len(groups[0]) * len(groups[1]))
        else:
            res = stats.kruskal(*groups)
            stat, p, test = float(res.statistic), float(res.pvalue), "kruskal"
            eff = (stat - len(classes) + 1) / (len(col) - len(classes))
        rows.append({"label": label, "feature": name, "test": test, "statistic": stat, "p": p, "effect": eff})
    df = pd.DataFrame(rows)
    df["q"] = stats.false_discovery_control(df["p"].to_numpy(), method="bh")
    df["significant"] = df["q"] < fdr
    df["classes"] = " vs ".join(classes[::-1] if len(classes) == 2 else classes)
    return df


def programme_recovery(z: np.ndarray, programs) -> list[dict]:
    """Each true programme's best absolute Pearson correlation with a single latent feature."""
    out = []
    zc = z - z.mean(0)
    zs = np.sqrt((zc**2).sum(0))
    for name in programs.columns:
        a = programs[name].to_numpy(np.float64)
        ac = a - a.mean()
        r = (zc.T @ ac) / np.maximum(zs * np.sqrt((ac**2).sum()), 1e-12)
        r = np.where(zs > 1e-9, r, 0.0)
        j = int(np.argmax(np.abs(r)))
        out.append({"programme": name, "best_abs_r": float(abs(r[j])), "feature": j})
    return out


def programme_linear_r(z: np.ndarray, programs, folds: int = 5, seed: int = 0) -> list[float]:
    """Each programme's Pearson r with its 5-fold cross-validated ridge prediction from all latent features:
    whether the programme is in the latent space at all, even when spread over several features."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict

    cv = KFold(n_splits=folds, shuffle=True, random_state=seed)
    out = []
    for name in programs.columns:
        a = programs[name].to_numpy(np.float64)
        pred = cross_val_predict(RidgeCV(alphas=np.logspace(-3, 3, 13)), z, a, cv=cv)
        out.append(float(np.corrcoef(pred, a)[0, 1]))
    return out


def active_units(z: np.ndarray, threshold: float = 0.01) -> int:
    """Latent features whose mean varies across samples (variance > threshold; Burda et al. 2016)."""
    return int((z.var(axis=0) > threshold).sum())


# ----- a whole run --------------------------------------------------------------------------------------------
def _write_table(df, path: Path, overwrite: bool, sep: str = ",") -> None:
    from medgen.pipelines.expression_vae import write_atomic

    write_atomic(path, lambda t: df.to_csv(t, sep=sep, index=False, float_format="%.6g"), overwrite)


def evaluate_run(run, split: str = "test", out=None, overwrite: bool = False, checkpoint: str = "best",
                 dataset=None, device: str = "cpu", tsne: bool = True) -> dict:
    """All metrics of a trained expression_vae run (model vs PCA of the same size vs training mean).

    Writes `<run>/eval/` (or `out`): summary.json, reconstruction.csv, labels.csv, associations.tsv,
    programmes.csv (phantom), latent_all.tsv, tsne_all.png, report.md. Returns the summary dict.
    """
    import pandas as pd
    from sklearn.decomposition import PCA

    from medgen.engine.commands import load_trained
    from medgen.metrics import format_table
    from medgen.pipelines.expression_vae import SPLIT_NAMES, label_strings, write_atomic
    from medgen.pipelines.expression_vae_rotation import varimax

    cls, cfg, stages, run_dir = load_trained(run, checkpoint, device, dataset)
    p = stages[-1]
    cases = {}
    for s in SPLIT_NAMES:
        got = p.load_cases(s)
        if got:
            cases[s] = got[0]
    if "training" not in cases or split not in cases:
        raise MedgenError(f"{run}: need the 'training' and '{split}' splits to evaluate; have {sorted(cases)}")
    out = Path(out) if out else Path(run_dir) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    method, seed, ev = cfg.model.method, cfg.train.seed, cfg.evaluation
    preds = {s: p.predict_case(c) for s, c in cases.items()}
    k = preds["training"]["latent"].shape[1]
    x = {s: c["x"].numpy() for s, c in cases.items()}
    pca = PCA(n_components=min(k, x["training"].shape[0], x["training"].shape[1]), random_state=seed).fit(x["training"])
    scores = {s: pca.transform(v) for s, v in x.items()}
    raw = {s: pr["latent"].numpy() for s, pr in preds.items()}
    weights = p.decoder_weights()
    rot = p.latent_rotation(weights)
    latent = raw if rot is None else {s: z @ rot for s, z in raw.items()}  # the configured readout

    # held-out reconstruction
    test_x = x[split]
    recon_rows = [
        {"method": method, **reconstruction_metrics(preds[split]["reconstruction"].numpy(), test_x)},
        {"method": f"pca{pca.n_components_}", **reconstruction_metrics(pca.inverse_transform(scores[split]), test_x)},
        {"method": "training_mean", **reconstruction_metrics(np.broadcast_to(x["training"].mean(0), test_x.shape), test_x)},
    ]
    if "logvar" in preds[split]:
        from medgen.losses.vae import kl_divergence

        import torch

        recon_rows[0]["kl"] = float(kl_divergence(torch.as_tensor(raw[split]), preds[split]["logvar"]).mean())

    # label recovery and association tests
    order = [s for s in SPLIT_NAMES if s in cases] if ev.label_samples == "all" else [split]
    z_all = np.concatenate([latent[s] for s in order])
    pc_all = np.concatenate([scores[s] for s in order])
    labels_all = pd.concat([cases[s]["labels"] for s in order])
    ids_all = [i for s in order for i in cases[s]["samples"]]
    label_rows, assoc = [], []
    names = [f"{p.latent_prefix}{i}" for i in range(k)]
    for col in labels_all.columns:
        y = label_strings(labels_all[col])
        y_tr, y_te = (label_strings(cases[s]["labels"][col]) for s in ("training", split))
        row = {"label": col, "n": int(len(y)), "classes": int(len(np.unique(y)))}
        for tag, feats, tr, te in (("latent", z_all, latent["training"], latent[split]),
                                   ("pca", pc_all, scores["training"], scores[split])):
            row[f"auroc_{tag}"] = label_auroc_cv(feats, y, ev.cv_folds, seed, ev.min_class_size)
            row[f"auroc_heldout_{tag}"] = label_auroc_heldout(tr, y_tr, te, y_te, seed, ev.min_class_size)
        row["auroc_diff"] = row["auroc_latent"] - row["auroc_pca"]
        df = association_tests(z_all, y, names, col, ev.min_class_size, ev.fdr)
        if len(df):
            best = df.loc[df["p"].idxmin()]
            row.update(significant_features=int(df["significant"].sum()), best_feature=best["feature"],
                       best_effect=float(best["effect"]), best_q=float(best["q"]))
            assoc.append(df)
        label_rows.append(row)

    summary = {"run": str(run_dir), "method": method, "split": split, "n_samples": {s: len(c["samples"]) for s, c in cases.items()},
               "n_features": int(test_x.shape[1]), "latent_dim": int(k), "active_units": active_units(raw["training"]),
               "latent_rotation": cfg.model.latent_rotation,
               "reconstruction": recon_rows, "labels": label_rows, "label_samples": ev.label_samples}
    _write_table(pd.DataFrame(recon_rows), out / "reconstruction.csv", overwrite)
    if label_rows:
        _write_table(pd.DataFrame(label_rows), out / "labels.csv", overwrite)
    if assoc:
        _write_table(pd.concat(assoc), out / "associations.tsv", overwrite, sep="\t")
    if p._programs is not None:
        progs = p._programs.loc[ids_all]
        # both readouts whatever the config says: as trained (the paper's) and varimax-rotated
        z_raw = np.concatenate([raw[s] for s in order])
        rec = programme_recovery(z_raw, progs)
        rec_vmx = programme_recovery(z_raw @ (rot if rot is not None else varimax(weights)), progs)
        rec_pca = programme_recovery(pc_all, progs)
        lin, lin_pca = programme_linear_r(z_raw, progs, seed=seed), programme_linear_r(pc_all, progs, seed=seed)
        for r, v, q, a, b in zip(rec, rec_vmx, rec_pca, lin, lin_pca):
            r.update(best_abs_r_varimax=v["best_abs_r"], feature_varimax=v["feature"], best_abs_r_pca=q["best_abs_r"],
                     linear_r=a, linear_r_pca=b)
        summary["programmes"] = rec
        _write_table(pd.DataFrame(rec), out / "programmes.csv", overwrite)
    lat = pd.DataFrame(z_all, index=pd.Index(ids_all, name="sample"), columns=names)
    lat.insert(0, "split", [s for s in order for _ in cases[s]["samples"]])
    write_atomic(out / "latent_all.tsv", lambda t: lat.to_csv(t, sep="\t", float_format="%.6g"), overwrite)
    if tsne and len(lat) >= 5:
        write_atomic(out / "tsne_all.png", lambda t: plot_tsne(z_all, labels_all, t, seed=seed,
                                                               perplexity=cfg.model.tsne_perplexity,
                                                               title=f"{method} latent means ({len(lat)} samples)"),
                     overwrite)
    write_atomic(out / "summary.json", lambda t: t.write_text(json.dumps(summary, indent=1, default=float)), overwrite)
    lines = [f"# expression_vae evaluation of {run_dir}", "",
             f"Held-out split: {split} ({len(cases[split]['samples'])} samples); {test_x.shape[1]} features; "
             f"{summary['active_units']} of {k} latent features active.", "",
             "## Reconstruction (held-out)", "", format_table(recon_rows, id_key="method"), ""]
    if label_rows:
        lines += ["## Labels (AUROC: cross-validated logistic regression; heldout: fit on training, scored on test)", "",
                  format_table(label_rows, id_key="label"), ""]
    if "programmes" in summary:
        lines += ["## True programmes: best |r| with one latent feature (as trained; varimax-rotated)", "",
                  format_table(summary["programmes"], id_key="programme"), ""]
    if tsne and len(lat) >= 5:
        lines += ["![t-SNE](tsne_all.png)", ""]
    write_atomic(out / "report.md", lambda t: t.write_text("\n".join(lines)), overwrite)
    summary["report"] = str(out / "report.md")
    return summary


def summary_table(result: dict) -> str:
    """A printable table: held-out reconstruction, label AUROCs and programme recovery."""
    from medgen.metrics import format_table

    parts = ["held-out reconstruction:", format_table(result["reconstruction"], id_key="method")]
    if result.get("labels"):
        keep = ("label", "auroc_latent", "auroc_pca", "auroc_diff", "significant_features")
        parts += ["label recovery (CV logistic regression AUROC):",
                  format_table([{k: r.get(k) for k in keep} for r in result["labels"]], id_key="label")]
    if result.get("programmes"):
        parts += ["programme recovery (best |r|):", format_table(result["programmes"], id_key="programme")]
    return "\n".join(parts)
