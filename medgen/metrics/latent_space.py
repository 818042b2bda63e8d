"""Metrics of a learned latent space of an expression matrix (the Tybalt evaluation, Way & Greene 2018):

- reconstruction of held-out rows: mean BCE per value and MSE;
- label recovery: cross-validated logistic-regression AUROC from latent features (or any features: PCA scores
  are scored the same way; folds grouped by patient when groups are given), and a held-out AUROC (fit on the training samples, scored on the test samples);
- per-feature association with a label (Mann-Whitney U for two classes, Kruskal-Wallis for more) with
  Benjamini-Hochberg FDR: how the paper found its sex and metastasis features;
- true-programme recovery (phantoms): each programme's best |Pearson r| with one latent feature, and the r of
  a cross-validated ridge prediction from all of them;
- active units (Burda et al. 2016).

Missing labels and classes smaller than `min_class_size` are left out of a label's scores.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-6
MISSING = ("", "nan", "NaN", "NA", "None", "<NA>")


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

    from medgen.metrics.anomaly import roc_auc

    if len(classes) == 2:
        return roc_auc(proba[:, 1], (y == classes[1]).astype(int))
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes))


def _classifier(seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))


def label_auroc_cv(features: np.ndarray, y, folds: int = 5, seed: int = 0, min_class_size: int = 5,
                   groups=None) -> float:
    """Stratified k-fold cross-validated logistic-regression AUROC (one-vs-rest macro for > 2 classes).

    groups: one group (patient) per sample; a group's samples then stay in one fold (scikit-learn's
    StratifiedGroupKFold), so a patient's tumour never helps to predict the same patient's normal sample.
    The folds are at most the fewest groups any class has."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict

    got = _usable(y, min_class_size)
    if got is None:
        return float("nan")
    mask, yy = got
    classes, counts = np.unique(yy, return_counts=True)
    if groups is None:
        k = int(min(folds, counts.min()))
        if k < 2:
            return float("nan")
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        proba = cross_val_predict(_classifier(seed), features[mask], yy, cv=cv, method="predict_proba")
        return _auroc(yy, proba, classes)
    g = np.asarray([str(v) for v in groups], dtype=object)[mask]
    k = int(min(folds, min(len(set(g[yy == c])) for c in classes)))
    if k < 2:
        return float("nan")
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    proba = cross_val_predict(_classifier(seed), features[mask], yy, cv=cv, groups=g, method="predict_proba")
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
