"""Scoring bodies as ADS's clients send them, shared by the tests of every runtime."""

from __future__ import annotations

import base64
import io
import json

import numpy as np

DATAFRAME, NDARRAY, SERIES = (f"<class '{name}'>" for name in
                              ("pandas.core.frame.DataFrame", "numpy.ndarray", "pandas.core.series.Series"))


def npy(array) -> str:
    """An array as ADS's client sends it: base64 of numpy.save's output."""
    out = io.BytesIO()
    np.save(out, np.asarray(array))
    return base64.b64encode(out.getvalue()).decode()


INFINITE_BODIES = [
    [[float("inf"), 1.0]],
    {"data": [[1.0, float("-inf")]]},
    {"a": [float("inf")], "b": [1.0]},
    {"data": json.dumps({"a": {"0": float("inf")}, "b": {"0": 1.0}}), "data_type": DATAFRAME},  # "Infinity"
    {"data": npy([[1.0, np.inf]]), "data_type": NDARRAY},
    [["x", float("inf")]],
]
