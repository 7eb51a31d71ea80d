"""server/frameworks/sklearn.py: a joblib file scored as the estimator scores it; each fast path
answers what the library answers, on held-out rows (with NaN where the model takes it), one row at
a time and in batches; models without an exact fast path get None, for predict and predict_proba
each on its own."""

from __future__ import annotations

import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor, GradientBoostingClassifier,
                              GradientBoostingRegressor, HistGradientBoostingClassifier, RandomForestClassifier,
                              RandomForestRegressor)
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from server.frameworks import open_runtime
from server.frameworks.sklearn import SklearnRuntime, compile_sklearn

from .checks import assert_answers_like, assert_same, split


def test_sklearn_joblib_matches_the_estimator(tmp_path, iris):
    X, y = iris
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    joblib.dump(model, tmp_path / "model.joblib")
    runtime = open_runtime("m", tmp_path / "model.joblib")
    assert isinstance(runtime, SklearnRuntime) and runtime.n_features == 4
    assert runtime.predict(X.tolist()) == model.predict(X).tolist()
    assert runtime.predict(X[0].tolist()) == model.predict(X[:1]).tolist()  # one row
    assert runtime.predict({"data": X[:3].tolist()}) == model.predict(X[:3]).tolist()
    runtime.prepare()  # the exact fast paths from here on
    assert runtime._fast is not None
    assert [runtime.predict(row) for row in X.tolist()] == [[label] for label in model.predict(X).tolist()]


def test_the_runtime_answers_probabilities_through_their_own_fast_path(tmp_path, iris):
    X, y = iris
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    joblib.dump(model, tmp_path / "model.joblib")
    runtime = open_runtime("m", tmp_path / "model.joblib")
    assert runtime.predict_proba(X.tolist()) == model.predict_proba(X).tolist()  # the library's, before prepare
    runtime.prepare()
    assert runtime._fast_proba is not None
    assert_same(runtime.predict_proba(X.tolist()), model.predict_proba(X))
    assert_same([runtime.predict_proba(row)[0] for row in X.tolist()], model.predict_proba(X))


def test_a_scikit_learn_model_that_takes_no_missing_values_says_so(tmp_path, iris):
    X, y = iris
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), tmp_path / "model.joblib")
    with pytest.raises(ValueError, match="Input X contains NaN"):  # the registry answers it as a 422
        open_runtime("m", tmp_path / "model.joblib").predict([[None, 3.5, 1.4, 0.2]])


# -- the fast paths ---------------------------------------------------------------------------

TREE_MODELS = [
    (lambda: RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0), "binary"),
    (lambda: RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0), "multiclass"),
    (lambda: ExtraTreesClassifier(n_estimators=20, random_state=0), "binary"),
    (lambda: ExtraTreesClassifier(n_estimators=20, random_state=0), "multiclass"),
    (lambda: RandomForestRegressor(n_estimators=20, max_depth=6, random_state=0), "regression"),
    (lambda: ExtraTreesRegressor(n_estimators=20, random_state=0), "regression"),
    (lambda: DecisionTreeClassifier(random_state=0), "binary"),
    (lambda: DecisionTreeClassifier(max_depth=4, random_state=0), "multiclass"),
    (lambda: DecisionTreeRegressor(random_state=0), "regression"),
]


def _name(make) -> str:
    return type(make()).__name__


@pytest.mark.parametrize("make, task", TREE_MODELS, ids=[f"{_name(m)}-{t}" for m, t in TREE_MODELS])
def test_sklearn_trees_answer_as_the_library_with_missing_values(make, task):
    X_train, y_train, X_test = split(task, nan=True)
    model = make().fit(X_train, y_train)
    assert_answers_like(compile_sklearn(model).predict, model.predict, X_test)
    if task != "regression":
        assert_answers_like(compile_sklearn(model).predict_proba, model.predict_proba, X_test)
    else:
        assert compile_sklearn(model).predict_proba is None


BOOSTING_AND_LINEAR = [
    (lambda: GradientBoostingClassifier(n_estimators=30, random_state=0), "binary"),
    (lambda: GradientBoostingClassifier(n_estimators=30, random_state=0), "multiclass"),
    (lambda: GradientBoostingClassifier(n_estimators=20, loss="exponential", random_state=0), "binary"),
    (lambda: GradientBoostingRegressor(n_estimators=30, random_state=0), "regression"),
    (lambda: GradientBoostingRegressor(n_estimators=20, loss="huber", init="zero", random_state=0), "regression"),
    (lambda: LogisticRegression(max_iter=1000), "binary"),
    (lambda: LogisticRegression(max_iter=1000), "multiclass"),
    (lambda: LinearRegression(), "regression"),
    (lambda: Ridge(alpha=0.5), "regression"),
    (lambda: Lasso(alpha=0.05), "regression"),
    (lambda: ElasticNet(alpha=0.05), "regression"),
]


@pytest.mark.parametrize("make, task", BOOSTING_AND_LINEAR,
                         ids=[f"{_name(m)}-{t}-{i}" for i, (m, t) in enumerate(BOOSTING_AND_LINEAR)])
def test_sklearn_boosting_and_linear_models_answer_as_the_library(make, task):
    X_train, y_train, X_test = split(task, scaled=True)
    model = make().fit(X_train, y_train)
    assert_answers_like(compile_sklearn(model).predict, model.predict, X_test)
    if hasattr(model, "predict_proba"):
        assert_answers_like(compile_sklearn(model).predict_proba, model.predict_proba, X_test)
    # These take no missing value: the fast path hands NaN to the library, which refuses it.
    with_nan = X_test[:2].copy()
    with_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        compile_sklearn(model).predict(with_nan[:1])
    with pytest.raises(ValueError, match="NaN"):
        compile_sklearn(model).predict(with_nan)


@pytest.mark.parametrize("make", [
    lambda: RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0),
    lambda: GradientBoostingClassifier(n_estimators=10, random_state=0),
    lambda: LogisticRegression(max_iter=1000),
    lambda: DecisionTreeClassifier(random_state=0),
], ids=["forest", "boosting", "logistic", "tree"])
def test_classifiers_answer_their_own_labels(make):
    X_train, y_train, X_test = split("multiclass", scaled=True)
    names = np.array(["setosa", "versicolor", "virginica"])
    model = make().fit(X_train, names[y_train])
    fast = compile_sklearn(model).predict
    assert fast(X_test[:1]).dtype == model.predict(X_test[:1]).dtype
    assert_answers_like(fast, model.predict, X_test)


def test_a_model_fitted_on_a_dataframe_is_checked_as_the_runtime_calls_it():
    """The runtime hands such a model a DataFrame; the fast path takes the array, without the
    warning scikit-learn gives an array, and answers as the model does for the DataFrame."""
    X_train, y_train, X_test = split("binary", nan=True)
    columns = [f"f{i}" for i in range(X_train.shape[1])]
    model = RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0)
    model.fit(pd.DataFrame(X_train, columns=columns), y_train)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = compile_sklearn(model).predict_proba
        assert_same(fast(X_test), model.predict_proba(pd.DataFrame(X_test, columns=columns)))
        assert_same(fast(np.tile(X_test, (3, 1))), model.predict_proba(pd.DataFrame(np.tile(X_test, (3, 1)),
                                                                                   columns=columns)))


@pytest.mark.parametrize("make", [
    lambda: RandomForestClassifier(n_estimators=5, random_state=0),
    lambda: GradientBoostingRegressor(n_estimators=5, random_state=0),
    lambda: LogisticRegression(max_iter=1000),
], ids=["forest", "boosting", "logistic"])
@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # scikit-learn's own, casting 1e39
def test_values_the_library_refuses_go_to_the_library(make):
    task = "regression" if "Regressor" in _name(make) else "binary"
    X_train, y_train, X_test = split(task, scaled=True)
    model = make().fit(X_train, y_train)
    fast = compile_sklearn(model).predict
    for bad in (np.inf, -np.inf, 1e39):  # 1e39 is Infinity once cast to float32 (trees); finite as float64
        row = X_test[:1].copy()
        row[0, 3] = bad
        if bad == 1e39 and isinstance(model, LogisticRegression):
            assert_same(fast(row), model.predict(row))
            continue
        with pytest.raises(ValueError, match="infinity|too large"):
            model.predict(row)
        with pytest.raises(ValueError, match="infinity|too large"):
            fast(row)
    with pytest.raises(ValueError, match="features"):  # the wrong width: the library's own error
        fast(X_test[:1, :-1])


def test_a_probability_fast_path_that_disagrees_leaves_predict_its_own(monkeypatch):
    """Each output is checked on its own: probabilities that differ from the library's (past 1e-9),
    labels that do not."""
    X_train, y_train, X_test = split("binary", scaled=True)
    model = LogisticRegression(max_iter=1000).fit(X_train, y_train)
    assert compile_sklearn(model).predict_proba is not None
    library = model.predict_proba
    monkeypatch.setattr(model, "predict_proba", lambda X: library(X) * (1 + 1e-6))
    fast = compile_sklearn(model)
    assert fast.predict_proba is None
    assert_answers_like(fast.predict, model.predict, X_test)


def test_estimators_without_an_exact_fast_path_get_none():
    X_train, y_train, _ = split("binary")
    y_two = np.stack([y_train, 1 - y_train], axis=1)
    fitted = [
        make_pipeline(StandardScaler(), LogisticRegression()).fit(X_train, y_train),  # pipelines: out of scope
        KNeighborsClassifier().fit(X_train, y_train),
        HistGradientBoostingClassifier(max_iter=5).fit(X_train, y_train),
        RandomForestClassifier(n_estimators=3, random_state=0).fit(X_train, y_two),  # two outputs
        GradientBoostingRegressor(n_estimators=3, init=LinearRegression()).fit(X_train, y_train),  # init by row
    ]
    for model in fitted:
        assert compile_sklearn(model).predict is None, model
        assert compile_sklearn(model).predict_proba is None, model
    assert compile_sklearn(RandomForestClassifier()).predict is None  # not fitted
    assert compile_sklearn(LinearRegression().fit(X_train, y_train)).predict_proba is None  # no probabilities
    assert compile_sklearn(LinearRegression().fit(X_train, y_train)).predict is not None
