"""scikit-learn: an estimator saved with joblib, scored on a numpy matrix, through its exact fast
paths (server/frameworks/trees.py) where it has them.

The fast paths: forests (random and extra trees) and gradient boosting step every tree together
(`trees.Trees`); single trees call the library's own Cython kernel (`Tree.predict`), minus the
validation around it; linear models compute the library's own expression (`X @ coef_.T +
intercept_`, then expit or softmax), minus the validation. predict and predict_proba each have
their own, checked on its own. `FRAMEWORK`, at the end, is what the framework registry reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .base import Framework
from .tables import native_matrix
from .trees import (NO_FAST_PATHS, Compiled, FastPaths, Scorer, TreeArrays, Trees, constant_tree, float32_values,
                    sequential_sum, tree_probes)

# Past these many rows the tree-stepping kernels lose to the library's compiled loops. Measured on
# 2 cores with 100-tree models (library / fast): forests 6.5 / 3.6 ms at 1024 rows, 7.2 / 15.8 at
# 2048 (the library pays ~40 us per tree however few the rows); gradient boosting 255 / 201 us at
# 128 rows, 342 / 449 at 256.
_FOREST_MAX_ROWS = 512
_BOOSTING_MAX_ROWS = 64


class SklearnRuntime:
    def __init__(self, model: Any):
        self._model = model
        self.n_features = getattr(model, "n_features_in_", None)
        names = getattr(model, "feature_names_in_", None)  # set when fitted on a DataFrame
        self.feature_names = None if names is None else [str(name) for name in names]
        self._fast: Scorer | None = None
        self._fast_proba: Scorer | None = None

    def prepare(self) -> None:
        """In the process that will predict (compiling checks itself by predicting; the gunicorn
        master only loads): the exact fast paths, where the model has them."""
        self._fast, self._fast_proba = compile_sklearn(self._model)

    def predict(self, payload: Any) -> list:
        matrix = native_matrix(payload, self)
        if self._fast is not None:
            return self._fast(matrix).tolist()
        return self._model.predict(self._named(matrix)).tolist()

    @property
    def predict_proba(self) -> Callable[[Any], list] | None:
        """Class probabilities, for a classifier (None otherwise: the core says so to the client)."""
        if not hasattr(self._model, "predict_proba"):
            return None

        def probabilities(payload: Any) -> list:
            matrix = native_matrix(payload, self)
            if self._fast_proba is not None:
                return self._fast_proba(matrix).tolist()
            return self._model.predict_proba(self._named(matrix)).tolist()

        return probabilities

    def _named(self, matrix: np.ndarray) -> Any:
        """For a model fitted on a DataFrame, a DataFrame: on an array scikit-learn warns at every call."""
        return matrix if self.feature_names is None else pd.DataFrame(matrix, columns=self.feature_names)

    def close(self) -> None:
        pass


# -- the fast paths ---------------------------------------------------------------------------

def compile_sklearn(estimator: Any) -> FastPaths:
    """The exact fast paths of `estimator.predict` and `estimator.predict_proba` (None for either
    where this module has none for the estimator, or where it disagreed with the library)."""
    try:
        model = _sklearn_model(estimator)
    except (AttributeError, TypeError, ValueError, IndexError):  # not fitted, or fitted in a shape not foreseen
        return NO_FAST_PATHS
    if model is None:
        return NO_FAST_PATHS
    if model.trees_for_probes is not None:
        probes = tree_probes(model.trees_for_probes, model.n_features, nan=model.nan_ok)
    else:
        probes = _linear_probes(model.n_features)
    return model.checked(probes)


def _sklearn_model(estimator: Any) -> Compiled | None:
    from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor, GradientBoostingClassifier,
                                  GradientBoostingRegressor, RandomForestClassifier, RandomForestRegressor)
    from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    kind = type(estimator)  # exact types: a subclass may predict differently
    if getattr(estimator, "n_outputs_", 1) != 1:
        return None
    if kind in (RandomForestClassifier, ExtraTreesClassifier, RandomForestRegressor, ExtraTreesRegressor):
        return _forest(estimator, classifier=kind in (RandomForestClassifier, ExtraTreesClassifier))
    if kind in (DecisionTreeClassifier, DecisionTreeRegressor):
        return _decision_tree(estimator, classifier=kind is DecisionTreeClassifier)
    if kind in (GradientBoostingClassifier, GradientBoostingRegressor):
        return _gradient_boosting(estimator, classifier=kind is GradientBoostingClassifier)
    if kind is LogisticRegression:
        return _logistic_regression(estimator)
    if kind in (LinearRegression, Ridge, Lasso, ElasticNet):
        return _linear_regression(estimator)
    return None


def _library(estimator: Any, method: str) -> Scorer:
    """The estimator's own method, called as the runtime calls it: on a DataFrame with the feature
    names when the estimator was fitted on one (on an array scikit-learn warns at every call)."""
    call = getattr(estimator, method)
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        return call

    def named(X: np.ndarray) -> np.ndarray:
        if isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[1] == len(names):
            X = pd.DataFrame(X, columns=names)
        return call(X)

    return named


def _sklearn_tree_arrays(tree: Any) -> TreeArrays:
    """A fitted `sklearn.tree._tree.Tree`'s nodes. A value goes left when its float32 rounding is
    <= the float64 threshold (`_apply_dense` in sklearn/tree/_tree.pyx)."""
    nan_left = getattr(tree, "missing_go_to_left", None)  # scikit-learn >= 1.3
    return TreeArrays(tree.feature, tree.threshold, tree.children_left, tree.children_right,
                       np.ones(tree.node_count, dtype=bool) if nan_left is None else nan_left)


def _allows_nan(estimator: Any) -> bool:
    """Whether the library takes NaN (it routes it per node); otherwise it refuses NaN."""
    try:
        return bool(estimator.__sklearn_tags__().input_tags.allow_nan)
    except AttributeError:
        return False


def _forest(forest: Any, classifier: bool) -> Compiled:
    """ForestClassifier.predict_proba: each tree's leaf value (class fractions: scikit-learn >= 1.4
    stores them normalised) added into zeros tree by tree, then divided by the number of trees;
    predict takes the argmax. ForestRegressor.predict the same with the leaf's single value."""
    estimators = forest.estimators_
    arrays = [_sklearn_tree_arrays(e.tree_) for e in estimators]
    trees = Trees(arrays, right_on_tie=False)
    n_trees = len(estimators)
    if classifier:
        n_classes = int(forest.n_classes_)
        per_node = np.concatenate([e.tree_.value[:, 0, :n_classes] for e in estimators])
    else:
        per_node = np.concatenate([e.tree_.value[:, 0, 0] for e in estimators])
    leaf_value = np.zeros((len(trees.position),) + per_node.shape[1:])
    leaf_value[trees.position] = per_node

    def averaged(X: np.ndarray, has_nan: bool) -> np.ndarray:
        values = leaf_value.take(trees.leaves(float32_values(X), has_nan), axis=0)
        return sequential_sum(values, axis=1) / n_trees

    common = dict(n_features=forest.n_features_in_, nan_ok=_allows_nan(forest.estimators_[0]), float32_input=True,
                  max_rows=_FOREST_MAX_ROWS, trees_for_probes=arrays)
    if not classifier:
        return Compiled(predict_kernel=averaged, predict_library=_library(forest, "predict"), **common)
    classes = forest.classes_
    return Compiled(predict_kernel=lambda X, has_nan: classes.take(np.argmax(averaged(X, has_nan), axis=1), axis=0),
                  predict_library=_library(forest, "predict"),
                  proba_kernel=averaged, proba_library=_library(forest, "predict_proba"), **common)


def _decision_tree(estimator: Any, classifier: bool) -> Compiled:
    """BaseDecisionTree.predict / predict_proba around the library's own `Tree.predict`."""
    tree = estimator.tree_

    def values(X: np.ndarray, has_nan: bool) -> np.ndarray:
        return tree.predict(X.astype(np.float32))

    common = dict(n_features=estimator.n_features_in_, nan_ok=_allows_nan(estimator), float32_input=True,
                  trees_for_probes=[_sklearn_tree_arrays(tree)])
    if not classifier:
        return Compiled(predict_kernel=lambda X, has_nan: values(X, has_nan)[:, 0],
                      predict_library=_library(estimator, "predict"), **common)
    classes, n_classes = estimator.classes_, int(estimator.n_classes_)
    return Compiled(predict_kernel=lambda X, has_nan: classes.take(np.argmax(values(X, has_nan), axis=1), axis=0),
                  predict_library=_library(estimator, "predict"),
                  proba_kernel=lambda X, has_nan: values(X, has_nan)[:, :n_classes],
                  proba_library=_library(estimator, "predict_proba"), **common)


def _gradient_boosting(estimator: Any, classifier: bool) -> Compiled | None:
    """BaseGradientBoosting._raw_predict: the init estimator's raw prediction (a constant for the
    default init, computed once here), then for each stage and output `out += learning_rate *
    leaf value` (predict_stages in sklearn/ensemble/_gradient_boosting.pyx), in that order."""
    from sklearn.dummy import DummyClassifier, DummyRegressor

    init = estimator.init_
    if not ((isinstance(init, str) and init == "zero") or type(init) is DummyRegressor
            or (type(init) is DummyClassifier and init.strategy != "stratified")):
        return None  # an init estimator whose prediction depends on the row
    n_features = estimator.n_features_in_
    init_raw = estimator._raw_predict_init(np.zeros((1, n_features), dtype=np.float32))[0]  # (outputs,)
    stages = estimator.estimators_  # (stages, outputs) regression trees
    n_stages, n_outputs = stages.shape
    arrays = [_sklearn_tree_arrays(e.tree_) for e in stages.ravel()]
    # Stage-major like `stages.ravel()`, after one constant tree per output holding the init value.
    trees = Trees([constant_tree() for _ in range(n_outputs)] + arrays, right_on_tie=False)
    leaf_value = np.zeros(len(trees.position))
    # The product the library computes per leaf: a double times a double, rounded once.
    leaf_value[trees.position] = np.concatenate([init_raw] + [estimator.learning_rate * e.tree_.value[:, 0, 0]
                                                              for e in stages.ravel()])
    loss = estimator._loss

    def decision(X: np.ndarray, has_nan: bool) -> np.ndarray:
        values = leaf_value.take(trees.leaves(float32_values(X), has_nan)).reshape(len(X), n_stages + 1, n_outputs)
        raw = sequential_sum(values, axis=1)
        return raw.ravel() if n_outputs == 1 else raw  # decision_function's shape

    common = dict(n_features=n_features, nan_ok=False, float32_input=True, max_rows=_BOOSTING_MAX_ROWS,
                  trees_for_probes=arrays)
    if not classifier:
        return Compiled(predict_kernel=decision, predict_library=_library(estimator, "predict"), **common)
    classes = estimator.classes_

    def predict(X: np.ndarray, has_nan: bool) -> np.ndarray:
        raw = decision(X, has_nan)
        return classes[(raw >= 0).astype(int) if raw.ndim == 1 else np.argmax(raw, axis=1)]

    return Compiled(predict_kernel=predict, predict_library=_library(estimator, "predict"),
                  proba_kernel=lambda X, has_nan: loss.predict_proba(decision(X, has_nan)),
                  proba_library=_library(estimator, "predict_proba"), **common)


def _logistic_regression(estimator: Any) -> Compiled:
    """LinearClassifierMixin.decision_function / predict and LogisticRegression.predict_proba
    (expit for two classes, softmax for more), as scikit-learn 1.9 computes them, for a dense
    input: the same numpy expressions on the same arrays, so the same bits."""
    from scipy.special import expit

    coef, intercept, classes = estimator.coef_, estimator.intercept_, estimator.classes_
    if not isinstance(coef, np.ndarray) or coef.ndim != 2:
        raise TypeError("sparse or unexpected coefficients")
    coef_t = coef.T  # the view the library multiplies by: a copy in another layout may round differently
    binary = len(classes) <= 2

    def decision(X: np.ndarray) -> np.ndarray:
        scores = X @ coef_t + intercept
        return scores.reshape(-1) if scores.shape[1] == 1 else scores

    def predict(X: np.ndarray, has_nan: bool) -> np.ndarray:
        scores = decision(X)
        indices = (scores > 0).astype(np.intp) if scores.ndim == 1 else np.argmax(scores, axis=1)
        return classes.take(indices, axis=0)

    def proba(X: np.ndarray, has_nan: bool) -> np.ndarray:
        scores = decision(X)
        if binary:
            p = expit(scores, out=scores)
            return np.stack([1 - p, p], axis=1)
        scores -= np.max(scores, axis=1).reshape(-1, 1)  # sklearn.utils.extmath.softmax
        np.exp(scores, out=scores)
        scores /= np.sum(scores, axis=1).reshape(-1, 1)
        return scores

    return Compiled(n_features=estimator.n_features_in_,
                  predict_kernel=predict, predict_library=_library(estimator, "predict"),
                  proba_kernel=proba, proba_library=_library(estimator, "predict_proba"))


def _linear_regression(estimator: Any) -> Compiled:
    """LinearModel._decision_function for a dense input."""
    coef, intercept = estimator.coef_, estimator.intercept_
    if not isinstance(coef, np.ndarray):
        raise TypeError("sparse coefficients")
    coef_t = coef if coef.ndim == 1 else coef.T
    return Compiled(n_features=estimator.n_features_in_, predict_kernel=lambda X, has_nan: X @ coef_t + intercept,
                  predict_library=_library(estimator, "predict"))


def _linear_probes(n_features: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    probes = rng.normal(size=(48, n_features)) * rng.choice([1e-3, 1, 30, 1e4], size=(48, 1))
    probes[::7] = 0.0
    return probes


# -- the declaration ---------------------------------------------------------------------------

def _read(path: Path) -> Any:
    import joblib

    return joblib.load(path)  # nosec B301: a model file the operator (or `mis package`'s user) chose


FRAMEWORK = Framework(
    name="scikit-learn",
    aliases=("sklearn",),
    module="sklearn",
    suffixes=(".joblib", ".pkl"),
    read=_read,
    runtime=SklearnRuntime,
    packages={".joblib": "model.joblib", ".pkl": "model.joblib", ".pickle": "model.joblib"},
    reads_as="joblib",
    score_load="""\
import joblib

return joblib.load(path)""",
    ads_model="ads.model.framework.sklearn_model.SklearnModel",
)
