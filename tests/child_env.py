"""The environment for tests that start medgen in child processes (torchrun ranks, CLI runs)."""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child_env(**extra) -> dict:
    """This checkout first on PYTHONPATH, then whatever the caller had (a GPU machine may carry monai
    and nibabel there), one OpenMP thread per child (two children share the cores)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path, **extra)
