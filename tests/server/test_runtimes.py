import base64
import io
import json
import re
import sys
import zipfile

import joblib
import lightgbm
import numpy as np
import pandas as pd
import pytest
import xgboost
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from server.errors import InvalidInput
from server.runtimes import LightGBMRuntime, ScoreModuleRuntime, SklearnRuntime, XGBoostRuntime, open_runtime

from .zips import helper_artifact, score_artifact


def unpacked(tmp_path, name, archive):
    target = tmp_path / name
    zipfile.ZipFile(archive).extractall(target)
    return target


def test_each_artifact_gets_its_own_helper_module(tmp_path):
    first = ScoreModuleRuntime("m-1", unpacked(tmp_path, "one", helper_artifact(tmp_path / "1.zip", 1)))
    second = ScoreModuleRuntime("m-2", unpacked(tmp_path, "two", helper_artifact(tmp_path / "2.zip", 2)))
    assert first.predict([[0], [0]]) == [1, 1]
    assert second.predict([[0]]) == [2]
    assert "features" not in sys.modules
    assert str(tmp_path / "one") not in sys.path and str(tmp_path / "two") not in sys.path
    first.close()
    assert first.module_name not in sys.modules and second.module_name in sys.modules
    second.close()


def test_score_module_checks_row_width_from_the_input_schema(tmp_path):
    artifact = unpacked(tmp_path, "a", helper_artifact(tmp_path / "a.zip", 7))
    (artifact / "input_schema.json").write_text('{"schema": [{"name": "a"}, {"name": "b"}], "version": "1.1"}')
    runtime = ScoreModuleRuntime("m", artifact)
    assert runtime.predict([[1, 2]]) == [7]
    with pytest.raises(InvalidInput) as caught:
        runtime.predict({"data": [[1, 2, 3]]})
    assert caught.value.details == {"expected": 2, "received": 3}

# -- every body shape, checked against the input schema ------------------------------------------

# score.py answers the body it was given, so a test sees exactly what the server passed on.
ECHO_SCORE = """
def load_model():
    return None

def predict(data, model=None):
    return {"prediction": data}
"""
DATAFRAME, NDARRAY, SERIES = (f"<class '{name}'>" for name in
                              ("pandas.core.frame.DataFrame", "numpy.ndarray", "pandas.core.series.Series"))


def echo_runtime(tmp_path, columns=("a", "b")):
    artifact = unpacked(tmp_path, "echo", score_artifact(tmp_path / "echo.zip", ECHO_SCORE))
    if columns:
        schema = {"schema": [{"name": name, "dtype": "float64"} for name in columns], "version": "1.1"}
        (artifact / "input_schema.json").write_text(json.dumps(schema))
    return ScoreModuleRuntime("echo", artifact)


def npy(array) -> str:
    """An array as ADS's client sends it: base64 of numpy.save's output."""
    out = io.BytesIO()
    np.save(out, np.asarray(array))
    return base64.b64encode(out.getvalue()).decode()


@pytest.mark.parametrize("body, received", [
    ([[1, 2, 3]], 3),
    ([1, 2, 3], 3),
    ({"data": [[1, 2, 3]]}, 3),
    ({"data": [[1, 2, 3]], "data_type": "<class 'list'>"}, 3),
    ({"data": npy(np.ones((2, 3))), "data_type": NDARRAY}, 3),
    ({"data": "[[1, 2, 3]]", "data_type": DATAFRAME}, 3),
    ("[[1]]", 1),
])
def test_a_wrong_width_is_refused_in_every_body_shape(tmp_path, body, received):
    with pytest.raises(InvalidInput) as caught:
        echo_runtime(tmp_path).predict(body)
    assert caught.value.details == {"expected": 2, "received": received}


@pytest.mark.parametrize("body", [
    {"a": [1.0], "c": [2.0]},
    {"data": {"a": [1.0], "c": [2.0]}},
    {"data": {"a": [1.0], "c": [2.0]}, "data_type": "<class 'dict'>"},
    {"data": json.dumps({"a": {"0": 1.0}, "c": {"0": 2.0}}), "data_type": DATAFRAME},
    {"data": json.dumps([{"a": 1.0, "c": 2.0}]), "data_type": DATAFRAME},
])
def test_columns_that_are_not_the_schemas_are_named(tmp_path, body):
    with pytest.raises(InvalidInput, match=re.escape("missing ['b'], unexpected ['c']")) as caught:
        echo_runtime(tmp_path).predict(body)
    assert caught.value.details == {"missing": ["b"], "unexpected": ["c"]}


@pytest.mark.parametrize("body, message", [
    ({"data": [1.0, 2.0], "data_type": SERIES}, "a pandas Series is one-dimensional"),
    ({"data": npy([1.0, 2.0]), "data_type": NDARRAY}, "the numpy array has shape [2]"),
    ({"data": "not an array", "data_type": NDARRAY}, "base64 text of numpy.save's output"),
    ({"data": "/etc/passwd", "data_type": DATAFRAME}, "not JSON text"),  # pd.read_json would read the file
    ("http://169.254.169.254/latest/meta-data", "not JSON text"),  # ... or fetch the URL
    ({"data": [[1, 2]], "data_type": 5}, "data_type must be a string"),
    ({"a": 1.0, "b": 2.0}, "cannot be read as a table: If using all scalar values"),
    ({"a": [1.0, 2.0], "b": [3.0]}, "cannot be read as a table: All arrays must be of the same length"),
    ({"data": None}, "expected a list of rows"),
    ([[1, 2], [3]], "rows must be lists of values, all of the same length"),
    ([[1, [2]]], "values must be numbers, strings or null"),
    ([], "expected a list of rows"),
])
def test_a_body_that_is_no_table_is_refused_when_the_schema_gives_a_width(tmp_path, body, message):
    with pytest.raises(InvalidInput, match=re.escape(message)):
        echo_runtime(tmp_path).predict(body)


def test_without_a_schema_score_py_gets_what_is_not_a_table_as_sent(tmp_path):
    runtime = echo_runtime(tmp_path, columns=())
    for body in ["hello", {"text": "hello"}, {"data": "x", "data_type": "<class 'str'>"}, ["a", "b"]]:
        assert runtime.predict(body) == body
    assert runtime.predict([1, 2, 3]) == [[1, 2, 3]]
    with pytest.raises(InvalidInput, match="non-finite"):
        runtime.predict([[1.0, float("inf")]])


@pytest.mark.parametrize("body, passed", [
    ([[1, 2]], [[1, 2]]),
    ([1, 2], [[1, 2]]),
    ({"data": [1, 2]}, {"data": [[1, 2]]}),
    ({"data": [[1, None]], "data_type": "<class 'list'>"}, {"data": [[1, None]], "data_type": "<class 'list'>"}),
    ({"a": [1.0], "b": [2.0]}, {"a": [1.0], "b": [2.0]}),
    ({"b": [2.0], "a": [1.0]}, {"a": [1.0], "b": [2.0]}),
    ({"data": {"b": [2.0], "a": [1.0]}}, {"data": {"a": [1.0], "b": [2.0]}}),
    ({"a": [None], "b": [2.0]}, {"a": [float("nan")], "b": [2.0]}),
    ({"b": ["x"], "a": [1.0]}, {"a": [1.0], "b": ["x"]}),
    ({"data": '{"b":{"0":2.0},"a":{"0":1.0}}', "data_type": DATAFRAME},
     {"data": '{"a": {"0": 1.0}, "b": {"0": 2.0}}', "data_type": DATAFRAME}),
    ({"data": '[{"b":2.0,"a":1.0}]', "data_type": DATAFRAME},
     {"data": '[{"a": 1.0, "b": 2.0}]', "data_type": DATAFRAME}),
    ({"data": npy([[1.0, 2.0]]), "data_type": NDARRAY}, {"data": npy([[1.0, 2.0]]), "data_type": NDARRAY}),
])
def test_score_py_gets_the_body_as_sent_but_for_what_the_checks_settle(tmp_path, body, passed):
    """One row is wrapped, named columns come in the schema's order, a dict's null numbers as NaN."""
    assert json.dumps(echo_runtime(tmp_path).predict(body)) == json.dumps(passed)  # dumps: key order counts


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X, y


def test_sklearn_joblib_matches_the_estimator(tmp_path, iris):
    X, y = iris
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    joblib.dump(model, tmp_path / "model.joblib")
    runtime = open_runtime("m", tmp_path / "model.joblib")
    assert isinstance(runtime, SklearnRuntime) and runtime.n_features == 4
    assert runtime.predict(X.tolist()) == model.predict(X).tolist()
    assert runtime.predict(X[0].tolist()) == model.predict(X[:1]).tolist()  # one row
    assert runtime.predict({"data": X[:3].tolist()}) == model.predict(X[:3]).tolist()
    runtime.prepare()  # the exact fast path (server/fastpaths.py) from here on
    assert runtime._fast is not None
    assert [runtime.predict(row) for row in X.tolist()] == [[label] for label in model.predict(X).tolist()]


@pytest.mark.parametrize("make_model, dataset", [
    (lambda: xgboost.XGBClassifier(n_estimators=8, max_depth=3), load_breast_cancer),
    (lambda: xgboost.XGBClassifier(n_estimators=8, max_depth=3), load_iris),
    (lambda: xgboost.XGBRegressor(n_estimators=8, max_depth=3), load_diabetes),
])
def test_xgboost_booster_gives_the_wrappers_predictions(tmp_path, make_model, dataset):
    X, y = dataset(return_X_y=True)
    model = make_model().fit(X, y)
    model.save_model(tmp_path / "model.json")
    runtime = open_runtime("m", tmp_path / "model.json")
    assert isinstance(runtime, XGBoostRuntime) and runtime.n_features == X.shape[1]
    np.testing.assert_array_equal(runtime.predict(X.tolist()), model.predict(X))
    runtime.prepare()
    assert runtime._fast is not None
    np.testing.assert_array_equal([runtime.predict(row)[0] for row in X.tolist()], model.predict(X))


@pytest.mark.parametrize("make_model, dataset", [
    (lambda: lightgbm.LGBMClassifier(n_estimators=8, verbose=-1), load_breast_cancer),
    (lambda: lightgbm.LGBMClassifier(n_estimators=8, verbose=-1), load_iris),
    (lambda: lightgbm.LGBMRegressor(n_estimators=8, verbose=-1), load_diabetes),
])
def test_lightgbm_booster_gives_the_wrappers_predictions(tmp_path, make_model, dataset):
    X, y = dataset(return_X_y=True)
    model = make_model().fit(X, y)
    model.booster_.save_model(tmp_path / "model.txt")
    runtime = open_runtime("m", tmp_path / "model.txt")
    assert isinstance(runtime, LightGBMRuntime) and runtime.n_features == X.shape[1]
    np.testing.assert_array_equal(runtime.predict(X.tolist()), model.predict(X))
    runtime.prepare()
    assert runtime._fast is not None
    np.testing.assert_array_equal([runtime.predict(row)[0] for row in X.tolist()], model.predict(X))

@pytest.mark.parametrize("framework", ["xgboost", "lightgbm"])
def test_booster_labels_match_the_wrapper_around_the_binary_threshold(tmp_path, framework):
    """Rows whose probability of class 1 lies within 0.05 of 0.5, on both sides: a threshold that
    moves by 0.05 or more either way changes some of their labels."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 3))
    y = (X[:, 0] + rng.normal(scale=2.0, size=len(X)) > 0).astype(int)  # a weak signal keeps probabilities near 0.5
    if framework == "xgboost":
        model = xgboost.XGBClassifier(n_estimators=10, max_depth=2, learning_rate=0.1).fit(X, y)
        model.save_model(tmp_path / "model.json")
        runtime = open_runtime("m", tmp_path / "model.json")
    else:
        model = lightgbm.LGBMClassifier(n_estimators=10, num_leaves=4, learning_rate=0.05, verbose=-1).fit(X, y)
        model.booster_.save_model(tmp_path / "model.txt")
        runtime = open_runtime("m", tmp_path / "model.txt")
    probability = model.predict_proba(X)[:, 1]
    near = (probability > 0.45) & (probability < 0.55)
    assert ((probability > 0.5) & near).sum() >= 20 and ((probability < 0.5) & near).sum() >= 20
    assert runtime.predict(X[near].tolist()) == model.predict(X[near]).tolist()


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


# -- missing and non-finite values: one policy for every runtime -----------------------------------

@pytest.mark.parametrize("framework", ["xgboost", "lightgbm"])
def test_null_and_nan_reach_boosters_as_missing_values(tmp_path, framework):
    X, y = load_breast_cancer(return_X_y=True)
    X[::3, 0] = np.nan
    if framework == "xgboost":
        model = xgboost.XGBClassifier(n_estimators=8, max_depth=3).fit(X, y)
        model.save_model(tmp_path / "model.json")
        runtime = open_runtime("m", tmp_path / "model.json")
    else:
        model = lightgbm.LGBMClassifier(n_estimators=8, verbose=-1).fit(X, y)
        model.booster_.save_model(tmp_path / "model.txt")
        runtime = open_runtime("m", tmp_path / "model.txt")
    rows = X[:30].tolist()
    with_nulls = [[None if v != v else v for v in row] for row in rows]  # NaN -> null, as JSON sends it
    assert runtime.predict(with_nulls) == runtime.predict(rows) == model.predict(X[:30]).tolist()


def test_a_scikit_learn_model_that_takes_no_missing_values_says_so(tmp_path, iris):
    X, y = iris
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), tmp_path / "model.joblib")
    with pytest.raises(ValueError, match="Input X contains NaN"):  # the registry answers it as a 422
        open_runtime("m", tmp_path / "model.joblib").predict([[None, 3.5, 1.4, 0.2]])


INFINITE_BODIES = [
    [[float("inf"), 1.0]],
    {"data": [[1.0, float("-inf")]]},
    {"a": [float("inf")], "b": [1.0]},
    {"data": json.dumps({"a": {"0": float("inf")}, "b": {"0": 1.0}}), "data_type": DATAFRAME},  # "Infinity"
    {"data": npy([[1.0, np.inf]]), "data_type": NDARRAY},
    [["x", float("inf")]],
]


@pytest.mark.parametrize("body", INFINITE_BODIES)
def test_infinity_is_refused_by_an_artifact(tmp_path, body):
    with pytest.raises(InvalidInput, match=re.escape("non-finite values (Infinity)")):
        echo_runtime(tmp_path).predict(body)


@pytest.mark.parametrize("model_file", sorted(NATIVE_FILES))
def test_infinity_is_refused_by_every_native_framework(tmp_path, model_file):
    X, y = load_iris(return_X_y=True, as_frame=True)
    X = X.iloc[:, :2].set_axis(["a", "b"], axis=1)
    NATIVE_FILES[model_file](X, y, tmp_path / model_file)
    runtime = open_runtime("m", tmp_path / model_file)
    for body in INFINITE_BODIES[:-1]:  # the last one has a string: numbers-only models refuse it first
        with pytest.raises(InvalidInput, match=re.escape("non-finite values (Infinity)")):
            runtime.predict(body)


def test_unknown_model_file_has_no_runtime(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="no runtime"):
        open_runtime("m", tmp_path / "model.onnx")


def test_score_module_takes_one_row_like_native_models(tmp_path):
    runtime = ScoreModuleRuntime("m", unpacked(tmp_path, "a", helper_artifact(tmp_path / "a.zip", 3)))
    assert runtime.predict([1.5, 2, 3]) == [3]
    assert runtime.predict([[1.5, 2, 3], [1, 2, 3]]) == [3, 3]
