"""Copies of a phantom dataset.json that point at the original image files, for tests that edit a datalist."""
import json


def absolute_datalist(folder) -> dict:
    """`folder`/dataset.json with every NIfTI path of every split made absolute (so the copy can live elsewhere)."""
    data = json.loads((folder / "dataset.json").read_text())
    for split in ("training", "validation", "test"):
        for case in data.get(split, []):
            for k, v in list(case.items()):
                if isinstance(v, str) and v.endswith(".nii.gz"):
                    case[k] = str(folder / v)
    return data
