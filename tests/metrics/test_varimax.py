"""Varimax rotation of a latent space: it undoes an arbitrary rotation of sparse loadings, and it refuses bad input."""
import numpy as np
import pytest

from medgen.errors import MedgenError
from medgen.metrics.varimax import varimax


def _sparse_loadings(rng, genes=300, k=4, per_factor=20):
    w = rng.normal(0.0, 0.02, (genes, k))  # small weights everywhere, as a trained decoder has
    for j in range(k):
        w[j * per_factor:(j + 1) * per_factor, j] += rng.lognormal(np.log(0.6), 0.35, per_factor)
    return w


def test_varimax_undoes_a_rotation_of_sparse_loadings():
    rng = np.random.default_rng(0)
    truth = _sparse_loadings(rng)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))  # an arbitrary orthogonal mixing
    mixed = truth @ q
    rot = varimax(mixed)
    np.testing.assert_allclose(rot.T @ rot, np.eye(4), atol=1e-10)
    found = mixed @ rot
    # each true factor is one rotated column, up to order (signs: the large weights come out positive)
    r = np.corrcoef(truth.T, found.T)[:4, 4:]
    assert np.all(r.max(1) > 0.99) and sorted(r.argmax(1)) == [0, 1, 2, 3]
    # the mixed loadings themselves spread each factor over several columns
    assert np.corrcoef(truth.T, mixed.T)[:4, 4:].max() < 0.95


def test_varimax_single_column_and_bad_input():
    assert varimax(-np.ones((5, 1)))[0, 0] == -1.0
    with pytest.raises(MedgenError, match="NaN"):
        varimax(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(MedgenError, match="features x k"):
        varimax(np.ones(4))
