"""An expression matrix (samples x features) read as medgen cases: one case per split.

- `read_tables(path, matrix_key, labels_key)`: the tables a dataset names (dataset.json "tables": the matrix,
  an optional label table, a phantom's true "programs") with its split lists, or a bare matrix file.
- `transform_matrix`, `label_strings`, `tcga_sample_type`: count transforms, label values, TCGA sample types.
- `tcga_patient`, `split_overlap`: the patient of a TCGA barcode, and the groups (patients) two splits share:
  with `data.group_by` a patient's samples stay in one split (and in one cross-validation fold).
- `MatrixPreprocessing`: what is fitted on the training rows and saved with the model (the split's sample ids,
  the selected features, the min-max scaler); `TableSource.fit_preprocessing` fits it.
- `TableSource`: `medgen.data.cases.CaseSource`'s interface over the matrix (split ids, what a split's
  prediction is made from, its case one at a time or cached); `MatrixRows`: the training rows as a Dataset.

Feature selection, scaling and the seeded split themselves are in `medgen.data.tabular`.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from medgen.data.cases import Case, CaseError, CaseSource, DatasetRef, case_error_text
from medgen.data.tabular import MinMaxScaler
from medgen.errors import ConfigError, DataError

SPLIT_NAMES = ("training", "validation", "test")
DEFAULT_MATRIX_KEY = "expression"  # dataset.json "tables" key of the samples x features matrix (data.matrix_key)
GROUP_RULES = ("", "none", "tcga_patient")  # data.group_by values that are not a label-table column
PROGRAMS_KEY = "programs"  # dataset.json["tables"] key of a phantom's true programme activities


# ----- values of a matrix ------------------------------------------------------------------------------
def tcga_sample_type(barcode: str) -> str:
    """Characters 14-15 (1-based) of a TCGA barcode: 01 primary tumour, 06 metastatic, 11 solid normal."""
    code = str(barcode)[13:15]
    if len(code) != 2 or not code.isdigit():
        raise DataError(None, f"sample id {barcode!r} is not a TCGA barcode (no sample-type code at 14-15)")
    return code


def tcga_patient(barcode: str) -> str:
    """The patient of a TCGA barcode: its first three fields, TCGA-<site>-<participant> ('-' or '.' separated,
    as the GDC and the Bioconductor exports write them); a patient's tumour, normal and metastasis share it."""
    parts = re.split(r"[-.]", str(barcode))
    if len(parts) < 3 or parts[0].upper() != "TCGA" or not parts[1] or not parts[2]:
        raise DataError(None, f"sample id {barcode!r} is not a TCGA barcode (TCGA-XX-XXXX...)")
    return "-".join(x.upper() for x in parts[:3])


def _is_tcga(barcode) -> bool:
    try:
        tcga_patient(barcode)
    except DataError:
        return False
    return True


def split_overlap(ids_a, ids_b, groups=None) -> list[str]:
    """The groups (patients) with samples in both `ids_a` and `ids_b`. `groups` maps sample id -> group; without
    it, each id's TCGA patient when every id is a TCGA barcode, else nothing can be told ([])."""
    ids_a, ids_b = list(ids_a), list(ids_b)
    if groups is None:
        if not all(_is_tcga(i) for i in ids_a + ids_b):
            return []
        a, b = {tcga_patient(i) for i in ids_a}, {tcga_patient(i) for i in ids_b}
    else:
        a, b = {str(groups[i]) for i in ids_a}, {str(groups[i]) for i in ids_b}
    return sorted(a & b)


def label_strings(series) -> np.ndarray:
    """Label values as plain strings, missing values (NaN / None / NA) as "" (left out of the label's tests)."""
    import pandas as pd

    values = series.to_numpy(dtype=object)
    return np.array(["" if pd.isna(v) else str(v) for v in values], dtype=object)


def transform_matrix(df, how: str, path=None):
    """Optional count transform before feature selection: log2(1 + x) or log2(1 + counts per million)."""
    if how == "none":
        return df
    if (df.to_numpy() < 0).any():
        raise DataError(path, f"data.transform={how!r} needs non-negative counts, but the matrix has negative values")
    if how == "log2p1":
        return np.log2(1.0 + df)
    if how == "log2_cpm":
        lib = df.sum(axis=1).to_numpy()[:, None]
        if (lib <= 0).any():
            raise DataError(path, "a sample has zero total counts; cannot compute counts per million")
        return np.log2(1.0 + df * (1e6 / lib))
    raise ConfigError(f"data.transform must be none, log2p1 or log2_cpm, got {how!r}")


# ----- the tables of a dataset ----------------------------------------------------------------------------
@dataclass(frozen=True)
class MatrixTables:
    """source: the file errors name (dataset.json, or the matrix file); tables: key -> file; splits: the
    sample ids dataset.json lists per split ({} when it lists none)."""

    source: Path
    tables: dict
    splits: dict


def read_tables(path: Path, matrix_key: str = DEFAULT_MATRIX_KEY, labels_key: str = "labels") -> MatrixTables:
    """dataset.json's "tables" (each file checked to exist) and split lists, or a bare matrix file."""
    from medgen.data.datalist import normalise_cases, read_dataset_json
    from medgen.data.tabular import TABLE_SUFFIXES

    p = Path(path)
    if p.is_file() and p.name.lower().endswith(TABLE_SUFFIXES):
        return MatrixTables(p, {matrix_key: p}, {})
    data, root, json_path = read_dataset_json(p)
    tables = data.get("tables")
    if not isinstance(tables, dict) or matrix_key not in tables:
        raise DataError(json_path, f"no tables.{matrix_key} (the samples x features matrix); expected e.g. "
                                   f'"tables": {{"{matrix_key}": "expression.tsv", "{labels_key}": "labels.tsv"}}')
    resolved = {}
    for key, rel in tables.items():
        rp = Path(rel) if Path(str(rel)).is_absolute() else root / str(rel)
        if not rp.exists():
            raise DataError(json_path, f"tables.{key} points at {rp}, which does not exist")
        resolved[key] = rp
    cases = normalise_cases(data, json_path, SPLIT_NAMES)
    splits = {s: [str(c["id"]) for c in cases[s]] for s in SPLIT_NAMES if cases.get(s)}
    return MatrixTables(json_path, resolved, splits)


# ----- what is fitted on the training rows ----------------------------------------------------------------
@dataclass
class MatrixPreprocessing:
    """Fitted on the training rows only and saved with the model: sample ids per split, the selected features
    (in decreasing spread) and the per-feature min-max scaler."""

    features: list
    scaler: MinMaxScaler
    splits: dict | None

    def as_dict(self) -> dict:
        return {"features": list(self.features), "scaler": self.scaler.to_dict(), "splits": self.splits}

    @classmethod
    def from_dict(cls, state: dict) -> "MatrixPreprocessing":
        return cls(list(state["features"]), MinMaxScaler.from_dict(state["scaler"]), state.get("splits"))


class MatrixRows(torch.utils.data.Dataset):
    """The training rows; item i is row i (finite: the engine reshuffles per epoch with a seeded permutation)."""

    def __init__(self, x):
        self.x = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        return {"x": self.x[i]}


# ----- the source ---------------------------------------------------------------------------------------
class TableSource(CaseSource):
    """A matrix dataset's cases: a split is one case (id = the split's name) with the scaled rows of its samples
    under `x` (samples x features) and the fields `samples`, `labels` (a DataFrame), `features` and, for a
    phantom, `programs` (the true programme activities).

    It keeps CaseSource's interface and its `load` (cached, `skip_bad_cases`), but not its datalist: a bare
    matrix file has no dataset.json, and a split's members are rows of the matrix, not entries.
    `preprocessing` is the fitted `MatrixPreprocessing` (None until fitted: cases need it; `use` replaces it).
    Which samples make a split: the fitted split when every one of its samples is a row of this matrix, else
    (another dataset given at inference) this dataset's own split lists or seeded split.
    """

    def __init__(self, ref: DatasetRef, data_cfg, preprocessing: MatrixPreprocessing | None = None,
                 skip_bad_cases: bool = False):
        self.ref = ref
        self.cfg = data_cfg
        self.preprocessing = preprocessing
        self.skip_bad_cases = skip_bad_cases
        self.skipped: list[CaseError] = []
        self._cache: dict[str, list] = {}
        self._tables: MatrixTables | None = None
        self._frame = self._labels = self._programs = self._groups = None

    def use(self, preprocessing: MatrixPreprocessing) -> None:
        """Read cases with this fitted preprocessing from now on (restored weights bring their own)."""
        self.preprocessing = preprocessing
        self._cache.clear()

    # ----- the tables --------------------------------------------------------------------------------------
    @property
    def tables(self) -> MatrixTables:
        if self._tables is None:
            self._tables = read_tables(self.ref.path, self.cfg.matrix_key, self.cfg.labels_key)
        return self._tables

    @property
    def matrix_path(self) -> Path:
        return self.tables.tables[self.cfg.matrix_key]

    def _read(self) -> None:
        """The matrix (transformed), labels and (phantom) true programmes, all indexed by sample id."""
        if self._frame is not None:
            return
        import pandas as pd

        from medgen.data.tabular import load_labels, load_matrix, read_table

        d, info = self.cfg, self.tables
        mpath = self.matrix_path
        df = transform_matrix(load_matrix(mpath, orientation=d.orientation), d.transform, mpath)
        labels = pd.DataFrame(index=df.index)
        group_column = d.group_by if d.group_by not in GROUP_RULES else None
        if d.labels_key in info.tables:
            lpath = info.tables[d.labels_key]
            if group_column and group_column in d.label_columns:
                raise ConfigError(f"data.label_columns lists {group_column!r}, the column data.group_by groups by: "
                                  "a patient id is not a label to score")
            columns = list(d.label_columns) or [str(c) for c in read_table(lpath).columns if str(c) != group_column]
            for col in columns:
                labels[col] = label_strings(load_labels(lpath, index=df.index, column=col))
        elif d.label_columns:
            raise DataError(info.source, f"data.label_columns={d.label_columns} but the dataset has no "
                                         f"tables.{d.labels_key}")
        if d.sample_type_from_barcode:
            try:
                labels["sample_type"] = [tcga_sample_type(s) for s in df.index]
            except DataError as err:
                raise DataError(mpath, err.problem) from None
        if PROGRAMS_KEY in info.tables:
            self._programs = load_matrix(info.tables[PROGRAMS_KEY]).reindex(df.index)
        self._groups = self._read_groups(df.index, group_column)
        self._frame, self._labels = df, labels

    def _read_groups(self, index, column):
        """`data.group_by`: None ("none"), each TCGA barcode's patient ("tcga_patient"), or a label-table column."""
        import pandas as pd

        from medgen.data.tabular import load_labels

        d, info = self.cfg, self.tables
        if d.group_by in ("", "none"):
            return None
        if d.group_by == "tcga_patient":
            bad = [str(i) for i in index if not _is_tcga(i)]
            if bad:
                raise DataError(self.matrix_path, f"data.group_by=tcga_patient, but {len(bad)} sample id(s) are not "
                                                  f"TCGA barcodes (TCGA-XX-XXXX...), e.g. {', '.join(bad[:5])}")
            return pd.Series([tcga_patient(i) for i in index], index=index, dtype=object)
        if d.labels_key not in info.tables:
            raise DataError(info.source, f"data.group_by={column!r} names a column of the label table, but the "
                                         f"dataset has no tables.{d.labels_key}")
        values = label_strings(load_labels(info.tables[d.labels_key], index=index, column=column))
        missing = [str(i) for i, v in zip(index, values) if v == ""]
        if missing:
            raise DataError(info.tables[d.labels_key], f"column {column!r} (data.group_by) is empty for "
                                                       f"{len(missing)} sample(s), e.g. {', '.join(missing[:5])}")
        return pd.Series(values, index=index, dtype=object)

    @property
    def frame(self):
        """The whole matrix (samples x features, transformed, before feature selection)."""
        self._read()
        return self._frame

    @property
    def labels(self):
        """Label table (samples x label columns, strings, "" = missing), indexed like `frame`."""
        self._read()
        return self._labels

    @property
    def groups(self):
        """Sample id -> group (patient) under `data.group_by`, or None (every sample its own group)."""
        self._read()
        return self._groups

    @property
    def programs(self):
        """A phantom's true programme activities (samples x programmes), or None."""
        self._read()
        return self._programs

    # ----- splits and the fitted preprocessing -------------------------------------------------------------
    def split_ids(self) -> dict[str, list[str]]:
        """Sample ids per split: dataset.json's lists, else a seeded split (test_fraction, val_fraction)."""
        from medgen.data.tabular import train_test_split_ids

        d, info = self.cfg, self.tables
        ids = list(self.frame.index)
        groups = self.groups
        if info.splits:
            self._check_listed_ids()
            splits = {s: list(info.splits.get(s, [])) for s in SPLIT_NAMES}
            if groups is not None:
                for a, b in (("training", "test"), ("training", "validation"), ("validation", "test")):
                    shared = split_overlap(splits[a], splits[b], groups)
                    if shared:
                        raise DataError(info.source, f"the listed splits put {len(shared)} group(s) of "
                                                     f"data.group_by={d.group_by!r} in both {a} and {b}: "
                                                     f"{', '.join(shared)}")
        elif groups is None:
            train, test = train_test_split_ids(ids, d.test_fraction, d.split_seed)
            splits = {"training": train, "validation": [], "test": test}
        else:
            splits = self._grouped_split(ids, (1.0 - d.test_fraction, 0.0, d.test_fraction), d.split_seed)
        if not splits["validation"] and d.val_fraction > 0:
            if groups is None:
                train, val = train_test_split_ids(splits["training"], d.val_fraction, d.split_seed + 1)
            else:
                part = self._grouped_split(splits["training"], (1.0 - d.val_fraction, d.val_fraction, 0.0),
                                           d.split_seed + 1)
                train, val = part["training"], part["validation"]
            splits["training"], splits["validation"] = train, val
        if groups is None:
            shared = split_overlap(splits["training"], splits["test"])
            if shared:
                n_test = len({tcga_patient(i) for i in splits["test"]})
                warnings.warn(f"{len(shared)} of the {n_test} test patients also have a sample in training (TCGA "
                              f"barcodes of one patient: {', '.join(shared[:5])}{' ...' if len(shared) > 5 else ''})"
                              ": set data.group_by=tcga_patient to keep each patient in one split", stacklevel=2)
        if len(splits["training"]) < 2:
            raise DataError(info.source, f"the training split has {len(splits['training'])} sample(s); need >= 2")
        return splits

    def _check_listed_ids(self) -> None:
        """Every sample id dataset.json lists in a split is a row of the matrix (DataError naming the first)."""
        info = self.tables
        known = set(self.frame.index)
        for s, members in info.splits.items():
            missing = [i for i in members if i not in known]
            if missing:
                raise DataError(info.source, f"{len(missing)} '{s}' sample id(s) are not rows of the matrix, "
                                             f"e.g. {', '.join(missing[:3])}")

    def _grouped_split(self, ids, fractions, seed: int) -> dict[str, list[str]]:
        """Whole groups per split (`medgen.data.splitting.split_cases`), each split in the matrix's row order."""
        from medgen.data.splitting import split_cases

        groups = self.groups
        got = split_cases(ids, fractions, seed=seed, groups={i: groups[i] for i in ids})
        order = {i: k for k, i in enumerate(ids)}
        return {s: sorted(got.get(s, []), key=order.__getitem__) for s in SPLIT_NAMES}

    def fit_preprocessing(self) -> MatrixPreprocessing:
        """Split, then select the `data.n_features` most variable features and fit the scaler, on the training
        rows only (fitting on all samples would leak the test split)."""
        from medgen.data.tabular import select_features

        d = self.cfg
        splits = self.split_ids()
        train = self.frame.loc[splits["training"]]
        selected = select_features(train, d.n_features, by=d.feature_selection)
        spread = (selected.max(axis=0) - selected.min(axis=0)).to_numpy()
        if not (spread > 0).any():
            raise DataError(self.matrix_path, f"no feature varies across the {len(train)} training samples (a "
                                              "constant matrix): there is nothing to learn")
        return MatrixPreprocessing(list(selected.columns), MinMaxScaler().fit(selected), splits)

    def _fitted(self) -> MatrixPreprocessing:
        if self.preprocessing is None:
            raise ConfigError("the expression matrix has no fitted preprocessing yet (features, scaler, split): "
                              "train a model first, or restore one from its checkpoint")
        return self.preprocessing

    def matrix(self, ids) -> np.ndarray:
        """Scaled rows for sample ids, on the fitted features (DataError naming missing features)."""
        fitted = self._fitted()
        missing = [f for f in fitted.features if f not in self.frame.columns]
        if missing:
            raise DataError(self.matrix_path, f"{len(missing)} feature(s) the model was trained on are missing, "
                                              f"e.g. {', '.join(missing[:5])}")
        return np.array(fitted.scaler.transform(self.frame.loc[list(ids), fitted.features]), dtype=np.float32)

    def samples(self, split: str) -> list[str]:
        """The sample ids of a split (see the class docstring for which split)."""
        saved = self.preprocessing.splits if self.preprocessing is not None else None
        if self.tables.splits:  # a listed id that is not a row is an error, whichever split is then used
            self._check_listed_ids()
        if saved:
            known = set(self.frame.index)
            if all(i in known for ids in saved.values() for i in ids) and saved.get(split) is not None:
                return list(saved[split])
        return self.split_ids().get(split, [])

    # ----- CaseSource's interface -----------------------------------------------------------------------------
    def entries(self, split: str) -> list[dict]:
        """The split's one case as an entry: the tables it is read from and its sample ids ([] when empty)."""
        ids = self.samples(split)
        if not ids:
            return []
        return [{"id": split, "tables": {k: str(v) for k, v in self.tables.tables.items()}, "samples": list(ids)}]

    def iter(self, split: str, skip=()) -> Iterator[Case | CaseError]:
        for entry in self.entries(split):
            if entry["id"] in skip:
                continue
            try:
                case = self.case(split, entry["samples"])
            except Exception as exc:  # noqa: BLE001 - reported with the case, as CaseSource does
                yield CaseError(split, split, case_error_text(exc))
                continue
            yield case

    def case(self, split: str, ids) -> Case:
        ids = list(ids)
        fields = {"samples": ids, "labels": self.labels.loc[ids], "features": list(self._fitted().features)}
        if self.groups is not None:
            fields["groups"] = [str(g) for g in self.groups.loc[ids]]
        if self.programs is not None:
            fields["programs"] = self.programs.loc[ids]
        return Case(id=split, split=split, arrays={"x": torch.from_numpy(self.matrix(ids))},
                    paths={k: str(v) for k, v in self.tables.tables.items()}, fields=fields)
