"""server/frameworks/tables.py as native models read bodies: every body shape, named columns in
any order, and the errors that say what was expected, for a model file of each framework."""

import re

import joblib
import lightgbm
import numpy as np
import pandas as pd
import pytest
import xgboost
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from server.errors import InvalidInput
from server.frameworks import open_runtime

from .bodies import DATAFRAME, INFINITE_BODIES, NDARRAY, npy


@pytest.mark.parametrize("payload, message", [
    ([[1, 2, 3]], "expected 4 features per row, received 3"),
    ([1, 2, 3, 4, 5], "expected 4 features per row, received 5"),
    ([[1, 2, 3, 4], [1, 2]], "rows must be lists of values, all of the same length"),
    ([["a", "b", "c", "d"]], "this model takes numbers (or null for a missing value) only"),
    ([[[1, 2, 3, 4]]], "2-D table"),
    ([[[1, 2], 3, 4, 5]], "values must be numbers, strings or null"),
    ([], 'expected a list of rows, one row, {"data": rows}'),
    ({"rows": [[1, 2, 3, 4]]}, "values must be numbers, strings or null"),
    ({"a": [1], "b": [2], "c": [3], "d": [4]}, "this model does not name its features: send rows"),
    ({"data": {"a": 1}}, "cannot be read as a table: If using all scalar values"),
    ("text", "this data is not JSON text"),
    (7, 'expected a list of rows, one row, {"data": rows}'),
])
def test_native_input_errors_say_what_was_expected(tmp_path, iris, payload, message):
    X, y = iris
    joblib.dump(RandomForestClassifier(n_estimators=2, random_state=0).fit(X, y), tmp_path / "model.joblib")
    with pytest.raises(InvalidInput, match=re.escape(message)):
        open_runtime("m", tmp_path / "model.joblib").predict(payload)


def _sklearn_file(X, y, path):
    joblib.dump(RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y), path)


def _xgboost_file(X, y, path):
    xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(X, y).save_model(path)


def _lightgbm_file(X, y, path):
    lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(X, y).booster_.save_model(path)


NATIVE_FILES = {"model.joblib": _sklearn_file, "model.json": _xgboost_file, "model.txt": _lightgbm_file}


@pytest.fixture(params=sorted(NATIVE_FILES))
def named_native(request, tmp_path):
    """A native iris model of each framework, fitted on a DataFrame (so it names its features)."""
    X, y = load_iris(return_X_y=True, as_frame=True)
    X.columns = ["sl", "sw", "pl", "pw"]
    NATIVE_FILES[request.param](X, y, tmp_path / request.param)
    return open_runtime("m", tmp_path / request.param), X.to_numpy()[::10]


def test_native_models_take_every_body_shape_and_named_columns_in_any_order(named_native):
    runtime, rows = named_native
    assert runtime.feature_names == ["sl", "sw", "pl", "pw"]
    expected = runtime.predict(rows.tolist())
    shuffled = pd.DataFrame(rows, columns=runtime.feature_names)[["pw", "pl", "sw", "sl"]]
    for body in [{"data": rows.tolist(), "data_type": "<class 'list'>"}, shuffled.to_dict(orient="list"),
                 {"data": shuffled.to_dict(orient="list")}, {"data": shuffled.to_json(), "data_type": DATAFRAME},
                 shuffled.to_json(orient="records"), {"data": npy(rows), "data_type": NDARRAY}]:
        assert runtime.predict(body) == expected, body
    with pytest.raises(InvalidInput) as caught:
        runtime.predict({"sl": [1.0], "sw": [1.0], "pl": [1.0], "petal": [1.0]})
    assert caught.value.details == {"missing": ["pw"], "unexpected": ["petal"]}
    with pytest.raises(InvalidInput) as caught:
        runtime.predict({"data": npy(np.ones((1, 5))), "data_type": NDARRAY})
    assert caught.value.details == {"expected": 4, "received": 5}


@pytest.mark.parametrize("model_file", sorted(NATIVE_FILES))
def test_infinity_is_refused_by_every_native_framework(tmp_path, model_file):
    X, y = load_iris(return_X_y=True, as_frame=True)
    X = X.iloc[:, :2].set_axis(["a", "b"], axis=1)
    NATIVE_FILES[model_file](X, y, tmp_path / model_file)
    runtime = open_runtime("m", tmp_path / model_file)
    for body in INFINITE_BODIES[:-1]:  # the last one has a string: numbers-only models refuse it first
        with pytest.raises(InvalidInput, match=re.escape("non-finite values (Infinity)")):
            runtime.predict(body)
