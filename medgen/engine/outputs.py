"""The folder `medgen infer` writes into, as a service handed to a pipeline's `write_outputs`.

Every file goes through it, so for every pipeline alike:
- names stay inside the folder (`medgen.files.contained_path`: a case id cannot climb out of it);
- a file is written atomically with ordinary permissions (`medgen.files.atomic_write`);
- a file that is already there is replaced only when medgen infer wrote it into this folder before (its
  manifest lists it) or the user passed `--overwrite`: a user's own file is never silently replaced;
- images carry no NaN or infinity: a prediction that is not finite fails its case instead of being written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

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
