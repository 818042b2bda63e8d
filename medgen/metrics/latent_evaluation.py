"""The evaluation of a trained expression_vae model: the model vs PCA of the same size vs the per-feature
training mean (`medgen.baselines.expression`), with the metrics of `medgen.metrics.latent_space`:

- held-out reconstruction (mean BCE per value, MSE; the model's KL);
- label recovery from the latent means vs PCA scores (both fitted on the training split only, labels never
  seen by either) and the per-feature association tests with FDR;
- phantom programme recovery, for the features as trained and after a varimax rotation (`medgen.metrics.varimax`);
- a t-SNE of all samples' latent means coloured by each label (`medgen.metrics.tsne`).

`evaluate_run(run)` loads a run's model and writes `<run>/eval/` (summary.json, CSV / TSV tables, report.md,
latent_all.tsv, tsne_all.png); `evaluate_latent_space(pipeline, run_dir)` does it for a model already loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medgen.errors import MedgenError


def _write_table(df, path: Path, overwrite: bool, sep: str = ",") -> None:
    from medgen.files import atomic_write

    atomic_write(path, lambda t: df.to_csv(t, sep=sep, index=False, float_format="%.6g"), overwrite=overwrite)


def evaluate_run(run, split: str = "test", out=None, overwrite: bool = False, checkpoint: str = "best",
                 dataset=None, device: str = "cpu", tsne: bool = True) -> dict:
    """All metrics of a trained expression_vae run (a run folder or a checkpoint); see `evaluate_latent_space`."""
    from medgen.engine.commands import load_trained

    _, _, stages, run_dir = load_trained(run, checkpoint, device, dataset)
    return evaluate_latent_space(stages[-1], run_dir, split=split, out=out, overwrite=overwrite, tsne=tsne)


def _patients(cases: dict, split: str) -> dict:
    """Groups (patients) per split and how many of the held-out split's also have a training sample (0 when
    data.group_by keeps them apart; for TCGA barcodes counted by patient even without it: the leak)."""
    from medgen.data.table_source import split_overlap, tcga_patient
    from medgen.errors import DataError

    train, held = cases["training"], cases[split]
    groups = None
    if train.get("groups") is not None:
        groups = dict(zip(train["samples"] + held["samples"], train["groups"] + held["groups"]))
    shared = split_overlap(train["samples"], held["samples"], groups)
    out = {"held_out_in_training": len(shared)}
    try:
        for name, c in (("training", train), (split, held)):
            out[name] = len(set(c["groups"])) if c.get("groups") is not None else len(
                {tcga_patient(i) for i in c["samples"]})
    except DataError:  # ids that are not TCGA barcodes and no groups: no patient count to give
        pass
    return out


def evaluate_latent_space(p, run_dir, split: str = "test", out=None, overwrite: bool = False,
                          tsne: bool = True) -> dict:
    """All metrics of a trained expression_vae pipeline `p` (model vs PCA of the same size vs training mean).

    Writes `<run_dir>/eval/` (or `out`): summary.json, reconstruction.csv, labels.csv, associations.tsv,
    programmes.csv (phantom), latent_all.tsv, tsne_all.png, report.md. Returns the summary dict.
    """
    import pandas as pd

    from medgen.baselines.expression import PCABaseline, TrainingMean
    from medgen.data.table_source import SPLIT_NAMES, label_strings
    from medgen.files import atomic_write
    from medgen.metrics.latent_space import (active_units, association_tests, label_auroc_cv, label_auroc_heldout,
                                             programme_linear_r, programme_recovery, reconstruction_metrics)
    from medgen.metrics.tables import format_table
    from medgen.metrics.tsne import plot_tsne
    from medgen.metrics.varimax import varimax

    cfg = p.config
    cases = {}
    for s in SPLIT_NAMES:
        got = p.data.load(s)
        if got:
            cases[s] = got[0]
    if "training" not in cases or split not in cases:
        raise MedgenError(f"{run_dir}: need the 'training' and '{split}' splits to evaluate; have {sorted(cases)}")
    out = Path(out) if out else Path(run_dir) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    method, seed, ev = cfg.model.method, cfg.train.seed, cfg.evaluation
    preds = {s: p.predict_case(c) for s, c in cases.items()}
    k = preds["training"]["latent"].shape[1]
    x = {s: c["x"].numpy() for s, c in cases.items()}
    pca = PCABaseline(k, seed=seed).fit([cases["training"]])
    pca_preds = {s: pca.predict_case(c) for s, c in cases.items()}
    scores = {s: pr["latent"].numpy() for s, pr in pca_preds.items()}
    mean = TrainingMean().fit([cases["training"]])
    raw = {s: pr["latent"].numpy() for s, pr in preds.items()}
    weights = p.decoder_weights()
    rot = p.latent_rotation(weights)
    latent = raw if rot is None else {s: z @ rot for s, z in raw.items()}  # the configured readout

    # held-out reconstruction
    test_x = x[split]
    recon_rows = [
        {"method": method, **reconstruction_metrics(preds[split]["reconstruction"].numpy(), test_x)},
        {"method": pca.name, **reconstruction_metrics(pca_preds[split]["reconstruction"].numpy(), test_x)},
        {"method": mean.name,
         **reconstruction_metrics(mean.predict_case(cases[split])["reconstruction"].numpy(), test_x)},
    ]
    if "logvar" in preds[split]:
        import torch

        from medgen.losses.vae import kl_divergence

        recon_rows[0]["kl"] = float(kl_divergence(torch.as_tensor(raw[split]), preds[split]["logvar"]).mean())

    # label recovery and association tests
    order = [s for s in SPLIT_NAMES if s in cases] if ev.label_samples == "all" else [split]
    z_all = np.concatenate([latent[s] for s in order])
    pc_all = np.concatenate([scores[s] for s in order])
    labels_all = pd.concat([cases[s]["labels"] for s in order])
    grouped = all(cases[s].get("groups") is not None for s in order)
    groups_all = [g for s in order for g in cases[s]["groups"]] if grouped else None
    ids_all = [i for s in order for i in cases[s]["samples"]]
    label_rows, assoc = [], []
    names = [f"{p.latent_prefix}{i}" for i in range(k)]
    for col in labels_all.columns:
        y = label_strings(labels_all[col])
        y_tr, y_te = (label_strings(cases[s]["labels"][col]) for s in ("training", split))
        row = {"label": col, "n": int(len(y)), "classes": int(len(np.unique(y)))}
        for tag, feats, tr, te in (("latent", z_all, latent["training"], latent[split]),
                                   ("pca", pc_all, scores["training"], scores[split])):
            row[f"auroc_{tag}"] = label_auroc_cv(feats, y, ev.cv_folds, seed, ev.min_class_size, groups=groups_all)
            row[f"auroc_heldout_{tag}"] = label_auroc_heldout(tr, y_tr, te, y_te, seed, ev.min_class_size)
        row["auroc_diff"] = row["auroc_latent"] - row["auroc_pca"]
        df = association_tests(z_all, y, names, col, ev.min_class_size, ev.fdr)
        if len(df):
            best = df.loc[df["p"].idxmin()]
            row.update(significant_features=int(df["significant"].sum()), best_feature=best["feature"],
                       best_effect=float(best["effect"]), best_q=float(best["q"]))
            assoc.append(df)
        label_rows.append(row)

    summary = {"run": str(run_dir), "method": method, "split": split,
               "n_samples": {s: len(c["samples"]) for s, c in cases.items()},
               "n_features": int(test_x.shape[1]), "latent_dim": int(k), "active_units": active_units(raw["training"]),
               "latent_rotation": cfg.model.latent_rotation,
               "group_by": cfg.data.group_by, "patients": _patients(cases, split),
               "reconstruction": recon_rows, "labels": label_rows, "label_samples": ev.label_samples}
    _write_table(pd.DataFrame(recon_rows), out / "reconstruction.csv", overwrite)
    if label_rows:
        _write_table(pd.DataFrame(label_rows), out / "labels.csv", overwrite)
    if assoc:
        _write_table(pd.concat(assoc), out / "associations.tsv", overwrite, sep="\t")
    if "programs" in cases["training"]:
        progs = pd.concat([cases[s]["programs"] for s in order])
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
    atomic_write(out / "latent_all.tsv", lambda t: lat.to_csv(t, sep="\t", float_format="%.6g"), overwrite=overwrite)
    if tsne and len(lat) >= 5:
        atomic_write(out / "tsne_all.png", lambda t: plot_tsne(z_all, labels_all, t, seed=seed,
                                                               perplexity=cfg.model.tsne_perplexity,
                                                               title=f"{method} latent means ({len(lat)} samples)"),
                     overwrite=overwrite)
    atomic_write(out / "summary.json", json.dumps(summary, indent=1, default=float), overwrite=overwrite)
    lines = [f"# expression_vae evaluation of {run_dir}", "",
             f"Held-out split: {split} ({len(cases[split]['samples'])} samples); {test_x.shape[1]} features; "
             f"{summary['active_units']} of {k} latent features active.", "",
             "## Reconstruction (held-out)", "", format_table(recon_rows, id_key="method"), ""]
    if label_rows:
        lines += ["## Labels (AUROC: cross-validated logistic regression; heldout: fit on training, scored on test)",
                  "", format_table(label_rows, id_key="label"), ""]
    if "programmes" in summary:
        lines += ["## True programmes: best |r| with one latent feature (as trained; varimax-rotated)", "",
                  format_table(summary["programmes"], id_key="programme"), ""]
    if tsne and len(lat) >= 5:
        lines += ["![t-SNE](tsne_all.png)", ""]
    atomic_write(out / "report.md", "\n".join(lines), overwrite=overwrite)
    summary["report"] = str(out / "report.md")
    return summary


def summary_table(result: dict) -> str:
    """A printable table: held-out reconstruction, label AUROCs and programme recovery."""
    from medgen.metrics.tables import format_table

    parts = ["held-out reconstruction:", format_table(result["reconstruction"], id_key="method")]
    if result.get("labels"):
        keep = ("label", "auroc_latent", "auroc_pca", "auroc_diff", "significant_features")
        parts += ["label recovery (CV logistic regression AUROC):",
                  format_table([{k: r.get(k) for k in keep} for r in result["labels"]], id_key="label")]
    if result.get("programmes"):
        parts += ["programme recovery (best |r|):", format_table(result["programmes"], id_key="programme")]
    return "\n".join(parts)
