"""server/fastpaths.py: each fast path answers what the library answers, on held-out rows (with
NaN where the model takes it), one row at a time and in batches; models without an exact fast
path get None, and a fast path that disagrees with the library is caught by the self-check."""

from __future__ import annotations

import functools
import threading
import warnings

import lightgbm
import numpy as np
import pandas as pd
import pytest
import xgboost
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor, GradientBoostingClassifier,
                              GradientBoostingRegressor, HistGradientBoostingClassifier, RandomForestClassifier,
                              RandomForestRegressor)
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from server import fastpaths
from server.fastpaths import (compile_booster_lightgbm, compile_booster_xgboost, compile_sklearn,
                              compile_sklearn_proba)

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


# -- scikit-learn -----------------------------------------------------------------------------

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
    assert_answers_like(compile_sklearn(model), model.predict, X_test)
    if task != "regression":
        assert_answers_like(compile_sklearn_proba(model), model.predict_proba, X_test)
    else:
        assert compile_sklearn_proba(model) is None


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
    assert_answers_like(compile_sklearn(model), model.predict, X_test)
    if hasattr(model, "predict_proba"):
        assert_answers_like(compile_sklearn_proba(model), model.predict_proba, X_test)
    # These take no missing value: the fast path hands NaN to the library, which refuses it.
    with_nan = X_test[:2].copy()
    with_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        compile_sklearn(model)(with_nan[:1])
    with pytest.raises(ValueError, match="NaN"):
        compile_sklearn(model)(with_nan)


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
    fast = compile_sklearn(model)
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
        fast = compile_sklearn_proba(model)
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
    fast = compile_sklearn(model)
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
        assert compile_sklearn(model) is None, model
        assert compile_sklearn_proba(model) is None, model
    assert compile_sklearn(RandomForestClassifier()) is None  # not fitted
    assert compile_sklearn_proba(LinearRegression().fit(X_train, y_train)) is None  # no probabilities
    assert compile_sklearn(LinearRegression().fit(X_train, y_train)) is not None


# -- XGBoost ----------------------------------------------------------------------------------

def _xgboost_booster(model) -> xgboost.Booster:
    """The booster as the runtime has it: loaded from the saved model, not the wrapper's own."""
    return xgboost.Booster(model_file=bytearray(model.get_booster().save_raw(raw_format="json")))


XGBOOST_MODELS = [
    ("binary:logistic", "binary"), ("binary:logitraw", "binary"), ("reg:logistic", "binary"),
    ("multi:softprob", "multiclass"), ("multi:softmax", "multiclass"),
    ("reg:squarederror", "regression"), ("reg:absoluteerror", "regression"), ("reg:pseudohubererror", "regression"),
    ("count:poisson", "regression"), ("reg:tweedie", "regression"), ("reg:gamma", "regression"),
]


@pytest.mark.parametrize("objective, task", XGBOOST_MODELS, ids=[o for o, _ in XGBOOST_MODELS])
def test_xgboost_answers_inplace_predict_bit_for_bit_with_missing_values(objective, task):
    X_train, y_train, X_test = split(task, nan=True)
    wrapper = xgboost.XGBClassifier if objective.startswith(("binary", "multi")) else xgboost.XGBRegressor
    model = wrapper(n_estimators=25, max_depth=4, objective=objective).fit(X_train, y_train)
    booster = _xgboost_booster(model)
    fast = compile_booster_xgboost(booster)
    assert_answers_like(fast, lambda X: np.array(booster.inplace_predict(X)), X_test)
    # float32 sums in XGBoost's order and its own expf: not merely close, identical
    for i in range(len(X_test)):
        np.testing.assert_array_equal(fast(X_test[i:i + 1]), booster.inplace_predict(X_test[i:i + 1]))


def _categorical_xgboost(X, y):
    frame = pd.DataFrame(X[:, :3], columns=["a", "b", "c"]).assign(kind=pd.Categorical(np.arange(len(X)) % 3))
    return xgboost.XGBClassifier(n_estimators=3, enable_categorical=True, tree_method="hist").fit(frame, y)


XGBOOST_WITHOUT_FAST_PATH = {
    "dart": lambda X, y: xgboost.XGBClassifier(n_estimators=3, booster="dart").fit(X, y),
    "gblinear": lambda X, y: xgboost.XGBClassifier(n_estimators=3, booster="gblinear").fit(X, y),
    "rank:pairwise": lambda X, y: xgboost.XGBRanker(n_estimators=3).fit(X, y, qid=np.zeros(len(X), dtype=int)),
    "categorical": _categorical_xgboost,
}


@pytest.mark.parametrize("fit", XGBOOST_WITHOUT_FAST_PATH.values(), ids=XGBOOST_WITHOUT_FAST_PATH.keys())
def test_xgboost_without_an_exact_fast_path_gets_none(fit):
    X_train, y_train, _ = split("binary")
    assert compile_booster_xgboost(_xgboost_booster(fit(X_train, y_train))) is None


# -- LightGBM ---------------------------------------------------------------------------------

LIGHTGBM_MODELS = [("binary", "binary"), ("multiclass", "multiclass"), ("regression", "regression"),
                   ("poisson", "regression")]


@pytest.mark.parametrize("objective, task", LIGHTGBM_MODELS, ids=[o for o, _ in LIGHTGBM_MODELS])
def test_lightgbm_answers_booster_predict_with_missing_values(objective, task):
    X_train, y_train, X_test = split(task, nan=True)
    wrapper = lightgbm.LGBMRegressor if task == "regression" else lightgbm.LGBMClassifier
    model = wrapper(n_estimators=25, objective=objective, verbose=-1).fit(X_train, y_train)
    booster = lightgbm.Booster(model_str=model.booster_.model_to_string())  # as the runtime loads it
    fast = compile_booster_lightgbm(booster)
    assert_answers_like(fast, booster.predict, X_test)
    row = X_test[:1].copy()
    row[0, 0] = np.inf  # LightGBM's own reader takes it: the same answer either way
    assert_same(fast(row), booster.predict(row))


# -- the self-check, and sharing between threads ----------------------------------------------

@pytest.mark.parametrize("framework", ["forest", "boosting", "xgboost"])
def test_the_self_check_refuses_a_fast_path_that_disagrees(monkeypatch, framework):
    """One threshold moved in the compiled trees (the first tree's root, so every row meets it):
    the compile-time check against the library finds the difference and gives None."""
    X_train, y_train, _ = split("binary")
    if framework == "forest":
        model = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(X_train, y_train)
        compile_it = functools.partial(compile_sklearn, model)
    elif framework == "boosting":
        model = GradientBoostingClassifier(n_estimators=5, random_state=0).fit(X_train, y_train)
        compile_it = functools.partial(compile_sklearn, model)
    else:
        model = xgboost.XGBClassifier(n_estimators=5, max_depth=3).fit(X_train, y_train)
        compile_it = functools.partial(compile_booster_xgboost, _xgboost_booster(model))
    assert compile_it() is not None

    built = fastpaths._Trees.__init__

    def moved(self, trees, right_on_tie):
        built(self, trees, right_on_tie)
        first = int(np.flatnonzero(~np.isnan(self.threshold))[0])  # the first tree that splits: its root
        self.threshold = self.threshold.copy()
        self.threshold[first] += 1000 * (abs(self.threshold[first]) + 1)  # every row now goes left there

    monkeypatch.setattr(fastpaths._Trees, "__init__", moved)
    assert compile_it() is None


def test_threads_may_share_a_fast_path():
    X_train, y_train, X_test = split("multiclass", nan=True)
    forest = RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0).fit(X_train, y_train)
    booster = lightgbm.LGBMClassifier(n_estimators=10, verbose=-1).fit(X_train, y_train).booster_
    paths = [(compile_sklearn_proba(forest), forest.predict_proba(X_test)),
             (compile_booster_lightgbm(booster), booster.predict(X_test))]
    failures = []

    def score(fast, expected):
        for _ in range(20):
            for i in range(len(X_test)):
                if not np.array_equal(fast(X_test[i:i + 1]), expected[i:i + 1]):
                    failures.append(i)

    threads = [threading.Thread(target=score, args=path) for path in paths for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
