"""The environment for tests that start medgen in child processes (torchrun ranks, CLI runs), and the loader
for tests of the scripts in benchmarks/ (not a package)."""
import importlib.util
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child_env(**extra) -> dict:
    """This checkout first on PYTHONPATH, then whatever the caller had (a GPU machine may carry monai
    and nibabel there), one OpenMP thread per child (two children share the cores)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path, **extra)


def load_script(relative: str, name: str):
    """A script of this checkout (e.g. "benchmarks/paper_scale.py") imported as module `name`."""
    spec = importlib.util.spec_from_file_location(name, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
