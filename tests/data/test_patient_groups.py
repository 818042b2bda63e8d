"""Expression matrices with several samples per patient (TCGA: a tumour and its solid normal, metastases):
duplicate ids reported in full, splits and cross-validation folds grouped by patient (data.group_by), and a
warning when an ungrouped split puts a patient's samples on both sides."""
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from medgen.data.cases import DatasetRef
from medgen.data.table_source import TableSource, split_overlap, tcga_patient
from medgen.data.tabular import load_matrix
from medgen.errors import ConfigError, DataError
from medgen.metrics.latent_space import label_auroc_cv
from medgen.pipelines.expression_vae.config import ExpressionDataConfig


def _barcodes(n_patients=40, seed=0):
    """Two samples (01 tumour, 11 normal) per patient for most patients, '.'-separated as the TCGA parquet files."""
    rng = np.random.default_rng(seed)
    ids = []
    for p in range(n_patients):
        ids.append(f"TCGA.A{p % 7}.{1000 + p}.01A.11R.A143.13")
        if rng.random() < 0.7:
            ids.append(f"TCGA.A{p % 7}.{1000 + p}.11A.33R.A143.13")
    return ids


def _dataset(folder, ids, with_patient_column=False):
    folder.mkdir()
    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.random((len(ids), 6)), index=ids, columns=list("abcdef"))
    df.to_csv(folder / "m.tsv", sep="\t")
    labels = {"kind": ["t" if ".01A" in i else "n" for i in ids]}
    if with_patient_column:
        labels["patient"] = [i.split(".")[2] for i in ids]
    pd.DataFrame(labels, index=ids).to_csv(folder / "l.tsv", sep="\t")
    (folder / "dataset.json").write_text(json.dumps({"tables": {"expression": "m.tsv", "labels": "l.tsv"}}))
    return DatasetRef(folder, "-")


def test_tcga_patient_of_a_barcode():
    assert tcga_patient("TCGA.E2.A1L7.11A.33R.A143.13") == "TCGA-E2-A1L7"
    assert tcga_patient("TCGA-E2-A1L7-01A") == tcga_patient("tcga-e2-a1l7") == "TCGA-E2-A1L7"
    with pytest.raises(DataError, match="not a TCGA barcode"):
        tcga_patient("sample_7")
    assert split_overlap(["TCGA-AA-0001-01A", "TCGA-AA-0002-01A"], ["TCGA-AA-0001-11A"]) == ["TCGA-AA-0001"]
    assert split_overlap(["s1"], ["s1"]) == []  # not barcodes, no groups: nothing can be told


def test_duplicate_ids_are_all_reported(tmp_path):
    ids = [f"TCGA-AB-{1000 + i}" for i in range(7)] * 2 + ["TCGA-AB-2000"]
    pd.DataFrame(np.ones((len(ids), 2)), index=ids, columns=["x", "y"]).to_csv(tmp_path / "m.tsv", sep="\t")
    with pytest.raises(DataError) as err:
        load_matrix(tmp_path / "m.tsv")
    text = str(err.value)
    assert "7 sample id(s) name more than one row (14 rows in all)" in text
    assert all(f"TCGA-AB-{1000 + i} (x2)" in text for i in range(7)) and "TCGA-AB-2000" not in text
    assert "data.group_by" in text


def test_grouped_split_keeps_each_patient_in_one_split(tmp_path):
    ids = _barcodes()
    cfg = ExpressionDataConfig(test_fraction=0.25, val_fraction=0.2, group_by="tcga_patient")
    source = TableSource(_dataset(tmp_path / "a", ids), cfg)
    splits = source.split_ids()
    assert sorted(sum(splits.values(), [])) == sorted(ids) and all(splits.values())
    for a, b in (("training", "test"), ("training", "validation"), ("validation", "test")):
        assert split_overlap(splits[a], splits[b]) == []
    source.use(source.fit_preprocessing())
    case = source.load("test")[0]
    assert case["groups"] == [tcga_patient(i) for i in case["samples"]]


def test_ungrouped_split_of_tcga_barcodes_warns_of_the_leak(tmp_path):
    source = TableSource(_dataset(tmp_path / "a", _barcodes()), ExpressionDataConfig(test_fraction=0.3))
    with pytest.warns(UserWarning, match=r"test patients also have a sample in training.*group_by=tcga_patient"):
        splits = source.split_ids()
    assert split_overlap(splits["training"], splits["test"])  # the leak it warns about is real
    grouped = TableSource(_dataset(tmp_path / "b", _barcodes()),
                          ExpressionDataConfig(test_fraction=0.3, group_by="tcga_patient"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grouped.split_ids()


def test_group_column_listed_splits_and_bad_settings(tmp_path):
    ids = _barcodes()
    cfg = ExpressionDataConfig(test_fraction=0.25, group_by="patient")
    source = TableSource(_dataset(tmp_path / "a", ids, with_patient_column=True), cfg)
    splits = source.split_ids()
    patient = {i: i.split(".")[2] for i in ids}
    assert not {patient[i] for i in splits["training"]} & {patient[i] for i in splits["test"]}
    assert list(source.labels.columns) == ["kind"]  # the patient column is a group, not a label to score
    with pytest.raises(ConfigError, match="label_columns"):
        TableSource(_dataset(tmp_path / "b", ids, with_patient_column=True),
                    ExpressionDataConfig(group_by="patient", label_columns=["patient", "kind"])).labels
    with pytest.raises(DataError, match="no column 'nope'"):
        TableSource(_dataset(tmp_path / "c", ids), ExpressionDataConfig(group_by="nope")).split_ids()
    with pytest.raises(DataError, match="not TCGA barcodes"):
        TableSource(_dataset(tmp_path / "d", [f"s{i}" for i in range(20)]),
                    ExpressionDataConfig(group_by="tcga_patient")).split_ids()
    # listed splits that put a patient on both sides are refused, naming the patient
    folder = tmp_path / "e"
    _dataset(folder, ids)
    meta = json.loads((folder / "dataset.json").read_text())
    meta.update(training=[{"id": i} for i in ids[1:]], test=[{"id": ids[0]}])
    (folder / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"both training and test: TCGA-A0-1000"):
        TableSource(DatasetRef(folder, "-"), ExpressionDataConfig(group_by="tcga_patient")).split_ids()


def test_grouped_folds_do_not_score_patient_memory():
    """Labels constant within a patient and unrelated to anything but the patient's own signature: folds that
    split a patient's samples let the classifier recognise the patient (AUROC near 1); grouped folds give chance."""
    rng = np.random.default_rng(0)
    n_patients, per, dims = 30, 3, 60
    signature = rng.normal(size=(n_patients, dims))
    label = np.array(["a", "b"] * (n_patients // 2))
    x = np.repeat(signature, per, 0) + 0.3 * rng.normal(size=(n_patients * per, dims))
    y = np.repeat(label, per)
    groups = np.repeat([f"p{i}" for i in range(n_patients)], per)
    leaky = label_auroc_cv(x, y, folds=5, seed=0)
    grouped = label_auroc_cv(x, y, folds=5, seed=0, groups=groups)
    assert leaky > 0.9 and grouped < 0.75, (leaky, grouped)
