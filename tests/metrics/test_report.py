from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medgen.errors import MedgenError
from medgen.metrics import format_table, summarise, write_report

ROWS = [
    {"id": "case000", "psnr": 30.0, "dice": 0.5, "hd95": 2.0, "site": "A"},
    {"id": "case001", "psnr": 32.0, "dice": 1.0, "hd95": float("inf"), "site": "B"},
    {"id": "case002", "psnr": np.float32(34.0), "dice": 0.0, "hd95": 4.0, "site": "A", "n_lesions": 3},
]


def test_summarise_stats_sample_std_and_nonfinite():
    s = summarise(ROWS)
    assert s["n_cases"] == 3 and s["std_ddof"] == 1
    assert s["skipped_columns"] == ["site"]
    p = s["metrics"]["psnr"]
    assert p["mean"] == pytest.approx(32.0)
    assert p["std"] == pytest.approx(2.0)  # sample std of 30, 32, 34 (population would be 1.633)
    assert (p["median"], p["min"], p["max"], p["n"], p["n_nonfinite"]) == (32.0, 30.0, 34.0, 3, 0)
    h = s["metrics"]["hd95"]
    assert h["n"] == 2 and h["n_nonfinite"] == 1
    assert h["mean"] == pytest.approx(3.0) and h["max"] == 4.0
    n = s["metrics"]["n_lesions"]  # present in one row only
    assert n["n"] == 1 and n["mean"] == 3.0 and n["std"] is None


def test_all_nonfinite_column_gives_nulls():
    s = summarise([{"id": "a", "x": float("nan")}, {"id": "b", "x": float("inf")}])
    x = s["metrics"]["x"]
    assert x["n"] == 0 and x["n_nonfinite"] == 2 and x["mean"] is None and x["std"] is None


def test_write_report_files(tmp_path):
    out = tmp_path / "eval"
    summary = write_report(ROWS, out)
    assert sorted(p.name for p in out.iterdir()) == ["per_case.csv", "summary.json"]  # no temp files left
    with open(out / "per_case.csv", newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["id", "psnr", "dice", "hd95", "site", "n_lesions"]
    assert [r[0] for r in table[1:]] == ["case000", "case001", "case002"]
    assert table[2][3] == "inf" and table[1][5] == "" and table[3][5] == "3"
    assert float(table[3][1]) == 34.0 and float(table[1][2]) == 0.5
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    assert on_disk["metrics"]["dice"]["mean"] == pytest.approx(0.5)
    assert on_disk["metrics"]["dice"]["std"] == pytest.approx(0.5)
    # rewriting replaces the files
    write_report(ROWS[:1], out)
    assert len((out / "per_case.csv").read_text().strip().splitlines()) == 2
    assert json.loads((out / "summary.json").read_text())["n_cases"] == 1


def test_write_report_custom_id_and_errors(tmp_path):
    write_report([{"case": "x", "mae": 1.5}], tmp_path, id_key="case")
    assert (tmp_path / "per_case.csv").read_text().splitlines()[0] == "case,mae"
    with pytest.raises(MedgenError, match="no 'id'"):
        write_report([{"mae": 1.0}], tmp_path / "b")
    with pytest.raises(MedgenError, match="duplicate"):
        write_report([{"id": "a"}, {"id": "a"}], tmp_path / "c")
    with pytest.raises(MedgenError, match="list of dicts"):
        write_report({"id": "a"}, tmp_path / "d")


def test_format_table_rows_and_summary():
    text = format_table(ROWS)
    lines = text.splitlines()
    assert lines[0].split("|")[1].strip() == "id"
    assert lines[1].startswith("|-")
    assert "case001" in lines[3] and "inf" in lines[3]
    assert len({len(line) for line in lines}) == 1  # aligned columns
    st = format_table(summarise(ROWS))
    psnr_line = next(line for line in st.splitlines() if line.startswith("| psnr"))
    cells = [c.strip() for c in psnr_line.strip("|").split("|")]
    assert cells[:2] == ["psnr", "32"] and cells[4:] == ["2", "32", "30", "34", "3", "0"]
    assert 30 <= float(cells[2]) <= 32 <= float(cells[3]) <= 34  # the bootstrap interval brackets the mean
    n_line = next(line for line in st.splitlines() if line.startswith("| n_lesions"))
    assert "| -" in n_line  # undefined std
    with pytest.raises(MedgenError):
        format_table({"psnr": 1.0})
    empty = summarise([])
    assert (empty["n_cases"], empty["metrics"], empty["skipped_columns"]) == (0, {}, [])
