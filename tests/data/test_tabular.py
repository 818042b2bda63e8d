"""medgen.data.tabular: matrices, feature selection (median vs mean AD), train-only scaling, splits."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medgen.data.tabular import (MinMaxScaler, feature_scores, load_labels, load_matrix, select_features,
                                 train_test_split_ids)
from medgen.errors import DataError


def _df():
    return pd.DataFrame({"a": [1.0, 2.0, 3.0, 100.0], "b": [0.0, 0.0, 0.0, 40.0], "c": [5.0, 6.0, 7.0, 8.0]},
                        index=["s1", "s2", "s3", "s4"])


def test_load_formats_and_orientation(tmp_path):
    df = _df()
    df.to_csv(tmp_path / "m.csv")
    df.to_csv(tmp_path / "m.tsv", sep="\t")
    df.to_parquet(tmp_path / "m.parquet")
    df.T.to_csv(tmp_path / "genes_rows.tsv", sep="\t")
    for name in ("m.csv", "m.tsv", "m.parquet"):
        got = load_matrix(tmp_path / name)
        pd.testing.assert_frame_equal(got, df, check_names=False)
    got = load_matrix(tmp_path / "genes_rows.tsv", orientation="features_x_samples")
    assert list(got.index) == ["s1", "s2", "s3", "s4"] and list(got.columns) == ["a", "b", "c"]


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_matrix(tmp_path / "none.csv")
    (tmp_path / "bad.parquet").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read the table"):
        load_matrix(tmp_path / "bad.parquet")
    df = _df()
    df["txt"] = ["x", "y", "z", "w"]
    df.to_csv(tmp_path / "txt.csv")
    with pytest.raises(DataError, match="non-numeric columns: txt"):
        load_matrix(tmp_path / "txt.csv")
    df = _df()
    df.iloc[1, 2] = np.nan
    df.to_csv(tmp_path / "nan.csv")
    with pytest.raises(DataError, match="1 missing values.*c"):
        load_matrix(tmp_path / "nan.csv")


def test_mad_versus_mean_absolute_deviation():
    df = _df()
    mad = feature_scores(df, "mad")
    mean_ad = feature_scores(df, "mean_ad")
    # a: median 2.5 -> |dev| 1.5, .5, .5, 97.5 -> median 1.0 ; mean 26.5 -> mean |dev| 36.75
    assert mad["a"] == pytest.approx(1.0) and mean_ad["a"] == pytest.approx(36.75)
    # b: median abs dev 0 (one outlier), mean abs dev 15
    assert mad["b"] == 0.0 and mean_ad["b"] == pytest.approx(15.0)
    assert mad["c"] == pytest.approx(1.0) and mean_ad["c"] == pytest.approx(1.0)
    assert list(select_features(df, k=2, by="mad").columns) == ["a", "c"]  # tie keeps column order
    assert list(select_features(df, k=2, by="mean_ad").columns) == ["a", "b"]
    assert list(select_features(df, k=9, by="variance").columns) == ["a", "b", "c"]


def test_minmax_fitted_on_train_rows_only():
    df = _df()
    train, test = df.iloc[:3], df.iloc[3:]
    sc = MinMaxScaler().fit(train)
    t = sc.transform(train)
    assert t.to_numpy().min() == 0 and t.to_numpy().max() == 1
    assert sc.transform(test).loc["s4", "a"] == pytest.approx((100 - 1) / 2)  # outside [0, 1]: not refitted
    assert sc.transform(test).loc["s4", "b"] == 40.0  # constant train feature: range 1
    back = MinMaxScaler.from_dict(json.loads(json.dumps(sc.to_dict()))).inverse_transform(sc.transform(df))
    pd.testing.assert_frame_equal(back, df)
    assert MinMaxScaler(clip=True).fit(train).transform(test).to_numpy().max() == 1.0
    with pytest.raises(DataError, match="feature columns differ"):
        sc.transform(df[["c", "b", "a"]])


def test_split_ids_is_seeded_and_disjoint():
    ids = [f"s{i}" for i in range(50)]
    tr, te = train_test_split_ids(ids, 0.1, seed=0)
    assert len(te) == 5 and len(tr) == 45 and not set(tr) & set(te) and set(tr) | set(te) == set(ids)
    assert train_test_split_ids(ids, 0.1, seed=0) == (tr, te)
    assert train_test_split_ids(ids, 0.1, seed=1)[1] != te
    assert len(train_test_split_ids(ids[:3], 0.1)[1]) == 1


def test_labels_aligned(tmp_path):
    pd.DataFrame({"groups": ["x", "y", "x"]}, index=["s3", "s1", "s2"]).to_parquet(tmp_path / "g.parquet")
    s = load_labels(tmp_path / "g.parquet", index=["s1", "s2", "s3"])
    assert list(s) == ["y", "x", "x"]
    with pytest.raises(DataError, match="have no label"):
        load_labels(tmp_path / "g.parquet", index=["s9"])


@pytest.mark.shared_data
def test_real_tcga_parquet_shapes(shared_data):
    root = shared_data / "expression_vae" / "tcga_mirna"
    expected = {"BRCA": (1207, 1881), "PRAD": (551, 1881), "BRCASubtypeSel": (1081, 47), "SKCMPositive_4": (452, 298)}
    for name, shape in expected.items():
        df = load_matrix(root / f"{name}.parquet")
        assert df.shape == shape and np.isfinite(df.to_numpy()).all() and df.index[0].startswith("TCGA")
    labels = load_labels(root / "BRCASubtypeSel_groups.parquet", index=load_matrix(root / "BRCASubtypeSel.parquet").index)
    assert len(labels) == 1081 and labels.nunique() > 1
    top = select_features(np.log1p(load_matrix(root / "BRCA.parquet")), k=500, by="mad")
    assert top.shape == (1207, 500)


def test_minmax_scaler_equals_scikit_learns():
    """Kept for its plain-list parameters (weights-only checkpoints); the numbers are scikit-learn's."""
    from sklearn.preprocessing import MinMaxScaler as SkMinMax

    rng = np.random.default_rng(0)
    train = pd.DataFrame(rng.normal(size=(20, 4)) * [1, 10, 100, 0], columns=list("abcd"))  # "d" is constant
    test = pd.DataFrame(rng.normal(size=(6, 4)) * [2, 10, 100, 1], columns=list("abcd"))
    for clip in (False, True):
        ours = MinMaxScaler(clip=clip).fit(train)
        theirs = SkMinMax(clip=clip).fit(train.to_numpy())
        np.testing.assert_allclose(ours.transform(test).to_numpy(), theirs.transform(test.to_numpy()), atol=1e-12)
        restored = MinMaxScaler.from_dict(ours.to_dict())
        np.testing.assert_allclose(restored.transform(test).to_numpy(), ours.transform(test).to_numpy())
        if not clip:
            np.testing.assert_allclose(restored.inverse_transform(restored.transform(test)).to_numpy(),
                                       test.to_numpy())
