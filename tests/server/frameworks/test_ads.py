"""server/frameworks/ads.py: an ADS artifact's score.py, imported once, fed every body shape as
checked against its input schema (server/frameworks/tables.py)."""

import json
import re
import sys
import zipfile

import numpy as np
import pytest

from server.errors import InvalidInput
from server.frameworks.ads import ScoreModuleRuntime

from ..zips import helper_artifact, score_artifact
from .bodies import DATAFRAME, INFINITE_BODIES, NDARRAY, SERIES, npy


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


def echo_runtime(tmp_path, columns=("a", "b")):
    artifact = unpacked(tmp_path, "echo", score_artifact(tmp_path / "echo.zip", ECHO_SCORE))
    if columns:
        schema = {"schema": [{"name": name, "dtype": "float64"} for name in columns], "version": "1.1"}
        (artifact / "input_schema.json").write_text(json.dumps(schema))
    return ScoreModuleRuntime("echo", artifact)


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


@pytest.mark.parametrize("body", INFINITE_BODIES)
def test_infinity_is_refused_by_an_artifact(tmp_path, body):
    with pytest.raises(InvalidInput, match=re.escape("non-finite values (Infinity)")):
        echo_runtime(tmp_path).predict(body)


def test_score_module_takes_one_row_like_native_models(tmp_path):
    runtime = ScoreModuleRuntime("m", unpacked(tmp_path, "a", helper_artifact(tmp_path / "a.zip", 3)))
    assert runtime.predict([1.5, 2, 3]) == [3]
    assert runtime.predict([[1.5, 2, 3], [1, 2, 3]]) == [3, 3]
