"""server/frameworks/lightgbm.py's fast path (the single-row C API): it answers Booster.predict,
missing values and Infinity included (the runtime: test_boosters.py)."""

from __future__ import annotations

import lightgbm
import numpy as np
import pytest

from server.frameworks.lightgbm import compile_lightgbm

from .checks import assert_answers_like, assert_same, split



LIGHTGBM_MODELS = [("binary", "binary"), ("multiclass", "multiclass"), ("regression", "regression"),
                   ("poisson", "regression")]


@pytest.mark.parametrize("objective, task", LIGHTGBM_MODELS, ids=[o for o, _ in LIGHTGBM_MODELS])
def test_lightgbm_answers_booster_predict_with_missing_values(objective, task):
    X_train, y_train, X_test = split(task, nan=True)
    wrapper = lightgbm.LGBMRegressor if task == "regression" else lightgbm.LGBMClassifier
    model = wrapper(n_estimators=25, objective=objective, verbose=-1).fit(X_train, y_train)
    booster = lightgbm.Booster(model_str=model.booster_.model_to_string())  # as the runtime loads it
    fast = compile_lightgbm(booster)
    assert_answers_like(fast, booster.predict, X_test)
    row = X_test[:1].copy()
    row[0, 0] = np.inf  # LightGBM's own reader takes it: the same answer either way
    assert_same(fast(row), booster.predict(row))
