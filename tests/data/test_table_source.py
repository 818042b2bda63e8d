"""TableSource: an expression matrix behind CaseSource's interface (one case per split), a saved split reused
only on the matrix it was fitted on, and a split that cannot be read reported as a CaseError."""
import json

import numpy as np
import pandas as pd
import pytest

from medgen.data.cases import CaseError, DatasetRef
from medgen.data.table_source import TableSource
from medgen.errors import DataError
from medgen.pipelines.expression_vae.config import ExpressionDataConfig


def _dataset(folder, columns, n=40):
    folder.mkdir()
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.random((n, len(columns))), index=[f"s{i}" for i in range(n)], columns=columns)
    df.to_csv(folder / "m.tsv", sep="\t")
    pd.DataFrame({"group": ["a", "b"] * (n // 2)}, index=df.index).to_csv(folder / "l.tsv", sep="\t")
    (folder / "dataset.json").write_text(json.dumps({"tables": {"expression": "m.tsv", "labels": "l.tsv"}}))
    return DatasetRef(folder, "-")


def test_table_source_cases_and_errors(tmp_path):
    cfg = ExpressionDataConfig()
    source = TableSource(_dataset(tmp_path / "a", list("abcde")), cfg)
    with pytest.raises(DataError):  # no case before the preprocessing is fitted
        source.load("test")
    fitted = source.fit_preprocessing()
    source.use(fitted)
    assert source.ids("test") == ["test"] and source.ids("validation") == []  # one case per non-empty split
    inputs = source.inputs("test")["test"]
    assert inputs["samples"] == fitted.splits["test"] and inputs["tables"]["expression"].endswith("m.tsv")
    case = source.load("test")[0]
    assert case.id == "test" and case["x"].shape == (4, 5) and list(case["labels"].index) == fitted.splits["test"]
    # another matrix with a feature missing: its own seeded split, and the case fails with the reason
    other = TableSource(_dataset(tmp_path / "b", list("abcd"), n=30), cfg, fitted)
    assert other.entries("test")[0]["samples"] != fitted.splits["test"]
    (error,) = list(other.iter("test"))
    assert isinstance(error, CaseError) and "m.tsv" in error.error and "missing" in error.error


def test_a_listed_id_that_is_not_a_row_is_an_error_even_with_a_saved_split(tmp_path):
    cfg = ExpressionDataConfig()
    ref = _dataset(tmp_path / "a", list("abcde"))
    fitted = TableSource(ref, cfg).fit_preprocessing()
    meta = json.loads((tmp_path / "a" / "dataset.json").read_text())
    meta.update(training=[{"id": f"s{i}"} for i in range(30)], test=[{"id": "s35"}, {"id": "NOT_A_SAMPLE"}])
    (tmp_path / "a" / "dataset.json").write_text(json.dumps(meta))
    source = TableSource(ref, cfg, fitted)  # the fitted split's ids are all rows: it would be used as it is
    with pytest.raises(DataError, match=r"dataset\.json.*1 'test' sample id\(s\) are not rows of the matrix, "
                                        r"e\.g\. NOT_A_SAMPLE"):
        source.ids("test")
