"""What "answers as the library does" means for a fast path, and the data the fast paths are checked on."""

from __future__ import annotations

import functools

import numpy as np
import xgboost
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

LOADERS = {"binary": load_breast_cancer, "multiclass": load_iris, "regression": load_diabetes}


@functools.cache
def _split(task: str, nan: bool, scaled: bool):
    X, y = LOADERS[task](return_X_y=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    X, y = X[order], y[order]
    if scaled:  # linear models converge on standardised features
        X = (X - X.mean(axis=0)) / X.std(axis=0)
    if nan:  # missing values in training (so trees learn where NaN goes) and in the held-out rows
        X = X.copy()
        X[rng.random(X.shape) < 0.1] = np.nan
    cut = len(X) * 2 // 3
    return X[:cut], y[:cut], X[cut:]


def split(task: str, nan: bool = False, scaled: bool = False):
    X_train, y_train, X_test = _split(task, nan, scaled)
    return X_train.copy(), y_train.copy(), X_test.copy()


def assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    """Labels equal; numbers equal to 1e-9 relative; same shape and dtype."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape and got.dtype == expected.dtype, (got.shape, got.dtype, expected.dtype)
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=0)
    else:
        np.testing.assert_array_equal(got, expected)


def assert_answers_like(fast, library, X_test: np.ndarray) -> None:
    """Every held-out row alone (the fast kernel's one-row path), then batches: a few rows, all of
    them, and more rows than the kernels take (the library's own call)."""
    assert fast is not None
    expected = library(X_test)
    for i in range(len(X_test)):
        assert_same(fast(X_test[i:i + 1]), expected[i:i + 1])
    for rows in (X_test[:5], X_test, np.tile(X_test, (3, 1))):
        assert_same(fast(rows), library(rows))


def xgboost_booster(model) -> xgboost.Booster:
    """The booster as the runtime has it: loaded from the saved model, not the wrapper's own."""
    return xgboost.Booster(model_file=bytearray(model.get_booster().save_raw(raw_format="json")))
