"""What a pipeline predicts for a case (`Output`s), and the folder `medgen infer` writes them into.

A pipeline's `outputs(case, prediction)` names its results in their final form - images in the source's
geometry and units, label maps, single values (an anomaly score), tables (latent features), figures - and the
engine writes them (`write_case_outputs`) and reads them back for evaluation (`read_case_outputs`), so a
prediction is scored from the same values whether it was just computed (validation, a demo) or written to
disk and evaluated later (`medgen evaluate`). Every file goes through an `OutputFolder`, so for every
pipeline alike:
- names stay inside the folder (`medgen.files.contained_path`: a case id cannot climb out of it);
- a file is written atomically with ordinary permissions (`medgen.files.atomic_write`);
- a file that is already there is replaced only when medgen infer wrote it into this folder before (its
  manifest lists it) or the user passed `--overwrite`: a user's own file is never silently replaced;
- images carry no NaN or infinity: a prediction that is not finite fails its case instead of being written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import numpy as np

from medgen.errors import MedgenError
from medgen.files import atomic_write, contained_path, write_json_atomic


class OutputFolder:
    def __init__(self, root, owned: Iterable[str] = (), overwrite: bool = False):
        self.root = Path(root)
        self.owned = {str(p) for p in owned}  # files this folder's manifest says medgen wrote
        self.overwrite = overwrite
        self.written: list[str] = []  # files written through this object, in order

    def path(self, name: str) -> Path:
        """Where `name` goes: inside the folder, and free or medgen's own (else a clear error)."""
        path = contained_path(self.root, name)
        if path.exists() and str(path) not in self.owned and not self.overwrite:
            raise MedgenError(f"{path} exists and was not written by medgen infer into this folder; refusing to "
                              "replace it (pass --overwrite, or write to another --out)")
        return path

    def existing(self, name: str) -> Path | None:
        """An earlier medgen-written file of this folder (e.g. a table to add a row to), or None."""
        path = contained_path(self.root, name)
        return path if path.exists() and str(path) in self.owned else None

    def _wrote(self, path: Path) -> Path:
        self.owned.add(str(path))
        self.written.append(str(path))
        return path

    def write_with(self, name: str, write: Callable[[Path], object]) -> Path:
        """Call `write(temporary_path)` (a library's own save function) and move the result into place."""
        path = self.path(name)
        return self._wrote(atomic_write(path, write))

    def write_text(self, name: str, text: str) -> Path:
        path = self.path(name)
        return self._wrote(atomic_write(path, text))

    def write_json(self, name: str, data) -> Path:
        path = self.path(name)
        return self._wrote(write_json_atomic(path, data))

    def write_figure(self, name: str, fig, dpi: int = 80) -> Path:
        """A matplotlib figure as PNG; the figure is closed."""
        import matplotlib.pyplot as plt

        try:
            return self.write_with(name, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
        finally:
            plt.close(fig)

    def write_image(self, name: str, array, reference, dtype: str = "float32", mode: str | None = None) -> Path:
        """A NIfTI in the source geometry of `reference` (through the one writer, medgen.data.writer)."""
        from medgen.data.writer import write_prediction

        values = np.asarray(array.detach().cpu().numpy() if hasattr(array, "detach") else array)
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise MedgenError(f"{name}: the prediction has {bad} non-finite voxels (NaN or infinity); not written")
        path = self.path(name)
        write_prediction(values, reference, path, dtype=dtype, overwrite=True, mode=mode)
        return self._wrote(path)


@dataclass
class Output:
    """One result of a case.

    kind: "image" ((C, *spatial) array in the source grid, written as NIfTI), "label" (a label map, written as
    uint8), "value" (a number, kept in the manifest), "table" (a pandas DataFrame, written as TSV), "figure" (a
    matplotlib figure, or better a function that draws and saves one at a given path, so nothing is drawn
    when only the values are scored; written as PNG; not evaluated). units: what the numbers are ("Bq/mL", "HU", "probability",
    "normalised", ...). reference: the dataset key it estimates (evaluation compares against it). shared: one
    file for every case (e.g. gene weights), named without the case id.
    """

    value: Any
    kind: Literal["image", "label", "value", "table", "figure"] = "image"
    units: str = ""
    reference: str | None = None
    dtype: str = "float32"
    shared: bool = False
    geometry: Any = None  # where an image goes: a source path or meta dict (default: the case's first input file)


SUFFIXES = {"image": ".nii.gz", "label": ".nii.gz", "table": ".tsv", "figure": ".png"}


def output_file_name(case_id: str, name: str, kind: str, suffix: str = "", shared: bool = False) -> str:
    label = name + (f"_{suffix}" if suffix else "")
    return (label if shared else f"{case_id}_{label}") + SUFFIXES[kind]


def write_case_outputs(case, outputs: dict, out: OutputFolder, suffix: str = "", reference=None) -> list[dict]:
    """Write one case's outputs through `out`; returns the manifest entries (values are kept in them)."""
    entries = []
    for name, o in outputs.items():
        geometry = o.geometry if o.geometry is not None else (reference if reference is not None else case.reference_path)
        label = name + (f"_{suffix}" if suffix else "")
        entry = {"output": label, "name": name, "kind": o.kind, "units": o.units, "reference_key": o.reference}
        if o.kind == "value":
            value = float(o.value)
            if not np.isfinite(value):
                raise MedgenError(f"output '{name}' of case '{case.id}' is not finite ({value}); not written")
            entry["value"] = value
        else:
            file = output_file_name(case.id, name, o.kind, suffix, o.shared)
            if o.kind in ("image", "label"):
                path = out.write_image(file, o.value, geometry, dtype="uint8" if o.kind == "label" else o.dtype)
            elif o.kind == "table":
                entry["index"] = _has_index(o.value)
                path = out.write_with(file, lambda tmp, df=o.value, index=entry["index"]: df.to_csv(
                    tmp, sep="\t", float_format="%.6g", index=index))
            elif callable(o.value):  # a function that saves the figure at a given path
                path = out.write_with(file, o.value)
            else:
                path = out.write_figure(file, o.value)
            entry["path"] = str(path)
        entries.append(entry)
    return entries


def read_case_outputs(entries: list[dict]) -> dict[str, Any]:
    """The values `write_case_outputs` wrote, read back: {name: array | number | DataFrame} (figures left out).
    Images come back channel first, as pipelines return them."""
    import pandas as pd

    from medgen.data.io import load_image

    values = {}
    for e in entries:
        kind, name = e.get("kind"), e.get("name") or e.get("output")
        if kind == "value":
            values[name] = float(e["value"])
        elif kind in ("image", "label"):
            values[name] = np.asarray(load_image(e["path"], ensure_channel_first=True), dtype=np.float32)
        elif kind == "table":
            values[name] = pd.read_csv(e["path"], sep="\t", index_col=0 if e.get("index", True) else None)
    return values


def _has_index(df) -> bool:
    """A table's row labels are worth writing unless they are just 0..n-1."""
    import pandas as pd

    return not isinstance(df.index, pd.RangeIndex)
