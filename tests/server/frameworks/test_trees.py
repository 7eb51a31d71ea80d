"""server/frameworks/trees.py: the self-check finds a fast path that disagrees with the library,
and threads may share a fast path."""

from __future__ import annotations

import functools
import threading

import lightgbm
import numpy as np
import pytest
import xgboost
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

from server.frameworks.lightgbm import compile_lightgbm
from server.frameworks.sklearn import compile_sklearn
from server.frameworks.trees import Trees
from server.frameworks.xgboost import compile_xgboost

from .checks import xgboost_booster, split


@pytest.mark.parametrize("framework", ["forest", "boosting", "xgboost"])
def test_the_self_check_refuses_a_fast_path_that_disagrees(monkeypatch, framework):
    """One threshold moved in the compiled trees (the first tree's root, so every row meets it):
    the compile-time check against the library finds the difference and gives None."""
    X_train, y_train, _ = split("binary")
    if framework == "forest":
        model = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(X_train, y_train)
        compile_it = lambda: compile_sklearn(model).predict  # noqa: E731
    elif framework == "boosting":
        model = GradientBoostingClassifier(n_estimators=5, random_state=0).fit(X_train, y_train)
        compile_it = lambda: compile_sklearn(model).predict  # noqa: E731
    else:
        model = xgboost.XGBClassifier(n_estimators=5, max_depth=3).fit(X_train, y_train)
        compile_it = functools.partial(compile_xgboost, xgboost_booster(model))
    assert compile_it() is not None

    built = Trees.__init__

    def moved(self, trees, right_on_tie):
        built(self, trees, right_on_tie)
        first = int(np.flatnonzero(~np.isnan(self.threshold))[0])  # the first tree that splits: its root
        self.threshold = self.threshold.copy()
        self.threshold[first] += 1000 * (abs(self.threshold[first]) + 1)  # every row now goes left there

    monkeypatch.setattr(Trees, "__init__", moved)
    assert compile_it() is None


def test_threads_may_share_a_fast_path():
    X_train, y_train, X_test = split("multiclass", nan=True)
    forest = RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0).fit(X_train, y_train)
    booster = lightgbm.LGBMClassifier(n_estimators=10, verbose=-1).fit(X_train, y_train).booster_
    paths = [(compile_sklearn(forest).predict_proba, forest.predict_proba(X_test)),
             (compile_lightgbm(booster), booster.predict(X_test))]
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
