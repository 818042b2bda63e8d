"""Expression matrices (samples x features) for the Tybalt-style VAE: loading, feature selection,
train-only min-max scaling with stored parameters, and a seeded split by sample id.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from medgen.errors import ConfigError, DataError

TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")


def read_table(path: Path, index_col: int | str | None = 0):
    import pandas as pd

    if not path.exists():
        raise DataError(path, "file does not exist")
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
            if index_col is not None and isinstance(df.index, pd.RangeIndex):
                col = df.columns[index_col] if isinstance(index_col, int) else index_col
                if col in df.columns and not pd.api.types.is_numeric_dtype(df[col]):
                    df = df.set_index(col)
        elif name.endswith((".csv", ".csv.gz")):
            df = pd.read_csv(path, index_col=index_col)
        elif name.endswith((".tsv", ".tsv.gz", ".txt", ".txt.gz")):
            df = pd.read_csv(path, sep="\t", index_col=index_col)
        else:
            raise DataError(path, f"unsupported table type; expected one of {', '.join(TABLE_SUFFIXES)}")
    except DataError:
        raise
    except Exception as err:
        raise DataError(path, f"cannot read the table ({type(err).__name__}: {err})") from err
    return df


def load_matrix(path: str | os.PathLike, orientation: str = "samples_x_features", index_col: int | str | None = 0,
                allow_nan: bool = False):
    """Read a numeric matrix (TSV / CSV / Parquet) as a float DataFrame indexed by sample id.

    orientation: "samples_x_features" (rows are samples, as the TCGA parquet files) or
    "features_x_samples" (rows are genes, as many expression TSVs; transposed here).
    DataError for an unreadable file, an empty table, non-numeric columns, duplicate sample ids
    and (unless allow_nan) missing values.
    """
    import pandas as pd

    path = Path(path)
    if orientation not in ("samples_x_features", "features_x_samples"):
        raise ConfigError(f"orientation must be 'samples_x_features' or 'features_x_samples', got {orientation!r}")
    df = read_table(path, index_col)
    if orientation == "features_x_samples":
        df = df.T
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise DataError(path, f"table is empty (shape {df.shape})")
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])]
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (f" ... ({len(bad)} in all)" if len(bad) > 5 else "")
        raise DataError(path, f"non-numeric columns: {shown} (is the orientation right? "
                              f"orientation={orientation!r})")
    df = df.astype(np.float64)
    if not allow_nan:
        n_nan = int(df.isna().to_numpy().sum())
        if n_nan:
            cols = df.columns[df.isna().any(axis=0)]
            raise DataError(path, f"{n_nan} missing values (NaN), e.g. in columns {', '.join(map(str, cols[:5]))}")
    if not np.isfinite(df.to_numpy()[~np.isnan(df.to_numpy())]).all():
        raise DataError(path, "matrix has infinite values")
    if df.index.has_duplicates:
        raise DataError(path, duplicate_ids_message(df.index))
    df.index = df.index.map(str)
    df.columns = df.columns.map(str)
    return df


def duplicate_ids_message(index) -> str:
    """Every sample id that names more than one row, with its count, and what to do about it."""
    import pandas as pd

    counts = pd.Series(index.map(str)).value_counts()
    dup = counts[counts > 1].sort_index()
    listed = ", ".join(f"{i} (x{n})" for i, n in dup.items())
    return (f"{len(dup)} sample id(s) name more than one row ({int(dup.sum())} rows in all): {listed}. Each row "
            "needs its own id: index the matrix by sample (e.g. the full TCGA sample barcode, "
            "TCGA-XX-XXXX-01A-...), and keep a patient's samples in one split with data.group_by "
            "(tcga_patient, or a label-table column naming the patient)")


def load_labels(path: str | os.PathLike, index: Iterable[str] | None = None, column: str | None = None):
    """A label Series (e.g. subtype groups) indexed by sample id, reordered to `index` when given."""
    path = Path(path)
    df = read_table(path)
    if df.shape[1] == 0:
        raise DataError(path, "label table has no columns")
    if column is None:
        if df.shape[1] > 1:
            raise DataError(path, f"label table has {df.shape[1]} columns ({', '.join(map(str, df.columns[:5]))}); "
                                  "say which one with column=")
        column = df.columns[0]
    if column not in df.columns:
        raise DataError(path, f"no column {column!r}; columns: {', '.join(map(str, df.columns))}")
    s = df[column]
    s.index = s.index.map(str)
    if index is not None:
        index = [str(i) for i in index]
        missing = [i for i in index if i not in s.index]
        if missing:
            raise DataError(path, f"{len(missing)} sample id(s) have no label, e.g. {', '.join(missing[:5])}")
        s = s.loc[index]
    return s


def feature_scores(df, by: str = "mad"):
    """Per-feature spread: 'mad' = median absolute deviation from the median (Tybalt paper),
    'mean_ad' = mean absolute deviation from the mean (Tybalt code, pandas' old DataFrame.mad),
    'variance' = sample variance (ddof=1)."""
    import pandas as pd

    x = df.to_numpy(dtype=np.float64)
    if by == "mad":
        s = np.median(np.abs(x - np.median(x, axis=0)), axis=0)
    elif by == "mean_ad":
        s = np.mean(np.abs(x - np.mean(x, axis=0)), axis=0)
    elif by == "variance":
        s = np.var(x, axis=0, ddof=1) if x.shape[0] > 1 else np.zeros(x.shape[1])
    else:
        raise ConfigError(f"unknown feature score {by!r}; choose 'mad', 'mean_ad' or 'variance'")
    return pd.Series(s, index=df.columns, name=by)


def select_features(df, k: int = 5000, by: str = "mad", return_scores: bool = False):
    """Keep the k most variable features, ordered by decreasing score (ties keep column order),
    as Tybalt does. k larger than the number of features keeps them all."""
    if k <= 0:
        raise ConfigError(f"k must be positive, got {k}")
    scores = feature_scores(df, by)
    order = np.argsort(-scores.to_numpy(), kind="stable")[: min(k, df.shape[1])]
    out = df.iloc[:, order]
    return (out, scores.iloc[order]) if return_scores else out


class MinMaxScaler:
    """Per-feature min-max scaling to [0, 1], fitted on training rows only.

    Parameters are stored per feature name (`to_dict` / `from_dict` for JSON and checkpoints).
    Constant features get range 1 (they map to 0). Test rows may fall outside [0, 1] unless `clip`.
    Kept rather than scikit-learn's `MinMaxScaler`, which it equals (tests/data/test_tabular.py): a checkpoint
    holds plain lists only (it is loaded weights-only), and a fitted scikit-learn object is not one.
    """

    def __init__(self, clip: bool = False):
        self.clip = clip
        self.features: list[str] | None = None
        self.min_: np.ndarray | None = None
        self.max_: np.ndarray | None = None

    def fit(self, x) -> "MinMaxScaler":
        arr, cols = self._arr(x)
        if arr.shape[0] == 0:
            raise DataError(None, "cannot fit a scaler on zero rows")
        self.min_, self.max_ = arr.min(axis=0), arr.max(axis=0)
        self.features = cols
        return self

    def _arr(self, x) -> tuple[np.ndarray, list[str] | None]:
        if hasattr(x, "columns"):
            return x.to_numpy(dtype=np.float64), [str(c) for c in x.columns]
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 2:
            raise DataError(None, f"expected a 2D samples x features matrix, got shape {arr.shape}")
        return arr, None

    def _check(self, x) -> np.ndarray:
        if self.min_ is None:
            raise ConfigError("MinMaxScaler is not fitted: call fit() on the training rows first")
        arr, cols = self._arr(x)
        if cols is not None and self.features is not None and cols != self.features:
            raise DataError(None, "feature columns differ from those the scaler was fitted on")
        if arr.shape[1] != self.min_.shape[0]:
            raise DataError(None, f"matrix has {arr.shape[1]} features, the scaler was fitted on {self.min_.shape[0]}")
        return arr

    @property
    def range_(self) -> np.ndarray:
        r = self.max_ - self.min_
        return np.where(r > 0, r, 1.0)

    def _wrap(self, like, arr):
        if hasattr(like, "columns"):
            import pandas as pd

            return pd.DataFrame(arr, index=like.index, columns=like.columns)
        return arr

    def transform(self, x):
        y = (self._check(x) - self.min_) / self.range_
        if self.clip:
            y = np.clip(y, 0.0, 1.0)
        return self._wrap(x, y)

    def fit_transform(self, x):
        return self.fit(x).transform(x)

    def inverse_transform(self, y):
        return self._wrap(y, self._check(y) * self.range_ + self.min_)

    def to_dict(self) -> dict[str, Any]:
        if self.min_ is None:
            raise ConfigError("MinMaxScaler is not fitted")
        return {"kind": "minmax", "clip": self.clip, "features": self.features,
                "min": [float(v) for v in self.min_], "max": [float(v) for v in self.max_]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MinMaxScaler":
        s = cls(clip=bool(d.get("clip", False)))
        s.min_, s.max_ = np.asarray(d["min"], dtype=np.float64), np.asarray(d["max"], dtype=np.float64)
        s.features = list(d["features"]) if d.get("features") is not None else None
        return s


def train_test_split_ids(ids: Sequence[Any], test_fraction: float = 0.1, seed: int = 0) -> tuple[list, list]:
    """Seeded split of sample ids -> (train_ids, test_ids), each in the input order: scikit-learn's
    `train_test_split`, with the test set's size fixed here.

    The test set has round(n * test_fraction) ids (at least one when the fraction is > 0 and n > 1).
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction}")
    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise DataError(None, "sample ids are not unique")
    n = len(ids)
    n_test = int(round(n * test_fraction))
    if test_fraction > 0 and n > 1:
        n_test = min(max(n_test, 1), n - 1)
    if n_test == 0:
        return ids, []
    _, test_positions = train_test_split(np.arange(n), test_size=n_test, random_state=seed, shuffle=True)
    chosen = set(test_positions.tolist())
    train = [x for i, x in enumerate(ids) if i not in chosen]
    test = [x for i, x in enumerate(ids) if i in chosen]
    return train, test
