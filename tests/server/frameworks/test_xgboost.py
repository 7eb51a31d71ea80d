"""server/frameworks/xgboost.py's fast path: it answers inplace_predict bit for bit, missing values
included, and boosters it does not know get None (the runtime: test_boosters.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost

from server.frameworks.xgboost import compile_xgboost

from .checks import xgboost_booster, assert_answers_like, split


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
    booster = xgboost_booster(model)
    fast = compile_xgboost(booster)
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
    assert compile_xgboost(xgboost_booster(fit(X_train, y_train))) is None
