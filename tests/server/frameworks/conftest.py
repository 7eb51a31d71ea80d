"""Fixtures of the framework tests."""

from __future__ import annotations

import pytest
from sklearn.datasets import load_iris


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X, y
