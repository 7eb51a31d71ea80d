import sys
import zipfile

import lightgbm
import numpy as np
import pytest
import xgboost
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier

from server.errors import InvalidInput
from server.runtimes import LightGBMRuntime, ScoreModuleRuntime, SklearnRuntime, XGBoostRuntime, open_runtime

from .zips import helper_artifact


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


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X, y


def test_sklearn_joblib_matches_the_estimator(tmp_path, iris):
    import joblib

    X, y = iris
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    joblib.dump(model, tmp_path / "model.joblib")
    runtime = open_runtime("m", tmp_path / "model.joblib")
    assert isinstance(runtime, SklearnRuntime) and runtime.n_features == 4
    assert runtime.predict(X.tolist()) == model.predict(X).tolist()
    assert runtime.predict(X[0].tolist()) == model.predict(X[:1]).tolist()  # one row
    assert runtime.predict({"data": X[:3].tolist()}) == model.predict(X[:3]).tolist()


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


@pytest.mark.parametrize("payload, message", [
    ([[1, 2, 3]], "expected 4 features per row, received 3"),
    ([1, 2, 3, 4, 5], "expected 4 features per row, received 5"),
    ([[1, 2, 3, 4], [1, 2]], "rows must be lists of numbers, all of the same length"),
    ([["a", "b", "c", "d"]], "rows must be lists of numbers"),
    ([[[1, 2, 3, 4]]], "2-D array"),
    ([], "2-D array"),
    ({"rows": [[1, 2, 3, 4]]}, 'expected a list of rows, one row, or {"data": rows}'),
    ({"data": {"a": 1}}, "rows must be lists of numbers"),
    ("text", "rows must be lists of numbers"),
])
def test_native_input_errors_say_what_was_expected(tmp_path, iris, payload, message):
    import joblib

    X, y = iris
    joblib.dump(RandomForestClassifier(n_estimators=2, random_state=0).fit(X, y), tmp_path / "model.joblib")
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("{", r"\{")):
        open_runtime("m", tmp_path / "model.joblib").predict(payload)


def test_unknown_model_file_has_no_runtime(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="no runtime"):
        open_runtime("m", tmp_path / "model.onnx")


def test_score_module_takes_one_row_like_native_models(tmp_path):
    runtime = ScoreModuleRuntime("m", unpacked(tmp_path, "a", helper_artifact(tmp_path / "a.zip", 3)))
    assert runtime.predict([1.5, 2, 3]) == [3]
    assert runtime.predict([[1.5, 2, 3], [1, 2, 3]]) == [3, 3]
