"""server/frameworks/boosters.py, xgboost.py and lightgbm.py: XGBoost and LightGBM booster files
labelled as their scikit-learn wrappers label, through the fast path and without, missing values
included."""

import lightgbm
import numpy as np
import pytest
import xgboost
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from server.frameworks import open_runtime
from server.frameworks.lightgbm import LightGBMRuntime
from server.frameworks.xgboost import XGBoostRuntime


@pytest.mark.parametrize("make_model, dataset, model_file", [
    (lambda: xgboost.XGBClassifier(n_estimators=8, max_depth=3), load_breast_cancer, "model.json"),
    (lambda: xgboost.XGBClassifier(n_estimators=8, max_depth=3), load_iris, "model.json"),
    (lambda: xgboost.XGBRegressor(n_estimators=8, max_depth=3), load_diabetes, "model.json"),
    (lambda: lightgbm.LGBMClassifier(n_estimators=8, verbose=-1), load_breast_cancer, "model.txt"),
    (lambda: lightgbm.LGBMClassifier(n_estimators=8, verbose=-1), load_iris, "model.txt"),
    (lambda: lightgbm.LGBMRegressor(n_estimators=8, verbose=-1), load_diabetes, "model.txt"),
])
def test_a_booster_file_gives_the_wrappers_predictions(tmp_path, make_model, dataset, model_file):
    X, y = dataset(return_X_y=True)
    model = make_model().fit(X, y)
    (model if model_file == "model.json" else model.booster_).save_model(tmp_path / model_file)
    runtime = open_runtime("m", tmp_path / model_file)
    kind = XGBoostRuntime if model_file == "model.json" else LightGBMRuntime
    assert isinstance(runtime, kind) and runtime.n_features == X.shape[1]
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
