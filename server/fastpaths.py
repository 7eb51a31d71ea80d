"""Fast paths for native models: the library's own answer, without the library's per-call overhead.

A one-row request spends almost all its time in the library's wrapper, not in arithmetic:
input validation, joblib dispatch of one task per tree (scikit-learn forests), JSON-configured C
calls (XGBoost). Each `compile_*` function below returns a function that computes the same
output from a 2-D float64 matrix (columns in the model's order, NaN for a missing value), or
None where there is no such path for that model. The returned function answers the library's
own call for whatever it does not take (other widths or dtypes, large batches, values the
library refuses such as Infinity), so it can replace the library call outright.

"The same output" means: labels equal, numbers equal to 1e-9 relative. Most paths are
bit-for-bit: they repeat the library's floating-point operations in its order. Every compile
ends with a self-check against the library on probe rows built from the model itself (values at
and beside every split threshold that a sample of tree paths meets, NaN where the model takes
it); a model whose fast path disagrees anywhere gets None, so a model nobody foresaw falls back
to the library instead of answering differently.

- scikit-learn forests (random and extra trees) and gradient boosting, and XGBoost: every tree
  of the ensemble is stepped one level per numpy operation (`_Trees`), so a row costs a few
  numpy calls per level rather than one Python dispatch (forests) or one Cython call per tree.
- scikit-learn single trees: the library's own Cython kernel (`Tree.predict`), minus the
  validation around it.
- scikit-learn linear models: the library's own expression (`X @ coef_.T + intercept_`, then
  expit or softmax), minus the validation.
- LightGBM: its C API for single rows (`LGBM_BoosterPredictForMatSingleRowFast`), which runs
  the booster's own predictor with its configuration parsed once instead of per call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

Scorer = Callable[[np.ndarray], np.ndarray]

RTOL = 1e-9
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT64_MAX = float(np.finfo(np.float64).max)

# Past these many rows the tree-stepping kernels lose to the library's compiled loops. Measured on
# 2 cores with 100-tree models (library / fast): forests 6.5 / 3.6 ms at 1024 rows, 7.2 / 15.8 at
# 2048 (the library pays ~40 us per tree however few the rows); gradient boosting 255 / 201 us at
# 128 rows, 342 / 449 at 256; XGBoost 284 / 213 us at 32 rows, 321 / 355 at 64.
_FOREST_MAX_ROWS = 512
_BOOSTING_MAX_ROWS = 64
_XGBOOST_MAX_ROWS = 32


def compile_sklearn(estimator: Any) -> Scorer | None:
    """`estimator.predict`, or None where this module has no exact fast path for the estimator."""
    model = _compile_sklearn(estimator)
    return None if model is None else model.predict


def compile_sklearn_proba(estimator: Any) -> Scorer | None:
    """`estimator.predict_proba` of a classifier, or None."""
    model = _compile_sklearn(estimator)
    return None if model is None else model.proba


def compile_booster_xgboost(booster: Any) -> Scorer | None:
    """`booster.inplace_predict(X)` (all trees, default output), or None."""
    try:
        model = _compile_xgboost(booster)
    except (KeyError, TypeError, ValueError, IndexError, OSError):  # a layout this code does not know; no libm
        return None
    if model is None or not _agrees(model, _tree_probes(model.trees_for_probes, model.n_features, nan=True)):
        return None
    return model.predict


def compile_booster_lightgbm(booster: Any) -> Scorer | None:
    """`booster.predict(X)` (all trees or the best iteration, as Booster.predict picks), or None."""
    try:
        model = _lightgbm_model(booster)
    except Exception:  # noqa: BLE001 - the C API refused this booster (or is not there): the library path it is
        return None
    rng = np.random.default_rng(0)
    probes = rng.normal(size=(64, model.n_features)) * rng.choice([0.1, 1, 10, 1000], size=(64, 1))
    probes[rng.random(probes.shape) < 0.2] = np.nan
    probes[rng.random(probes.shape) < 0.1] = 0.0
    return model.predict if _agrees(model, probes) else None


# -- the common frame: when the fast kernel answers, and the self-check ---------------------------

@dataclass
class _Model:
    """A compiled model: kernels for what the library answers, and the library calls they replace.

    A kernel takes a float64 matrix of the model's width whose values the library takes without
    complaint (finite; NaN only where `nan_ok`), with at most `max_rows` rows, and whether it holds
    a NaN. `float32_input`: the library casts the input to float32, so values beyond float32's
    range are the library's to refuse.
    """

    n_features: int
    predict_kernel: Callable[[np.ndarray, bool], np.ndarray]
    predict_library: Scorer
    proba_kernel: Callable[[np.ndarray, bool], np.ndarray] | None = None
    proba_library: Scorer | None = None
    nan_ok: bool = False
    float32_input: bool = False
    any_value: bool = False  # the kernel is the library's own code for every value, Infinity included
    max_rows: float = float("inf")
    trees_for_probes: list | None = None

    def __post_init__(self):
        self.predict = self._scorer(self.predict_kernel, self.predict_library)
        self.proba = None if self.proba_kernel is None else self._scorer(self.proba_kernel, self.proba_library)

    def outputs(self):
        yield self.predict_kernel, self.predict, self.predict_library
        if self.proba_kernel is not None:
            yield self.proba_kernel, self.proba, self.proba_library

    def _scorer(self, kernel, library) -> Scorer:
        n_features, max_rows, nan_ok, any_value = self.n_features, self.max_rows, self.nan_ok, self.any_value
        limit = _FLOAT32_MAX if self.float32_input else _FLOAT64_MAX

        def score(X: np.ndarray) -> np.ndarray:
            if (not isinstance(X, np.ndarray) or X.dtype != np.float64 or X.ndim != 2 or X.shape[1] != n_features
                    or not 0 < X.shape[0] <= max_rows):
                return library(X)
            if any_value:
                return kernel(X, True)
            if np.abs(X).max() <= limit:  # False for NaN as well: the common case costs one check
                return kernel(X, False)
            if nan_ok and not (np.abs(X) > limit).any():
                return kernel(X, True)
            return library(X)  # Infinity, a value float32 cannot hold, or NaN the model refuses

        return score


def _agrees(model: _Model, probes: np.ndarray) -> bool:
    """Whether every fast path gives the library's output on the probe rows: in batches of the
    largest size the kernel takes, and one row at a time (the case that matters, and a separate
    code path in the tree kernels)."""
    if not model.nan_ok:
        probes = probes[~np.isnan(probes).any(axis=1)]
    probes = np.clip(probes, -1e30, 1e30)  # finite in float32, so every probe reaches the kernel
    step = int(min(model.max_rows, len(probes)))
    singles = list(range(0, len(probes), max(1, len(probes) // 12)))
    for kernel, scorer, library in model.outputs():
        try:
            expected = library(probes)
            got = [kernel(chunk, bool(np.isnan(chunk).any())) for chunk in
                   (probes[i:i + step] for i in range(0, len(probes), step))]
            if not _same(np.concatenate(got), expected):
                return False
            if not all(_same(scorer(probes[i:i + 1]), library(probes[i:i + 1])) for i in singles):
                return False
        except Exception:  # noqa: BLE001 - a fast path that breaks on the probes is no fast path
            return False
    return True


def _same(got: np.ndarray, expected: np.ndarray) -> bool:
    got, expected = np.asarray(got), np.asarray(expected)
    if got.shape != expected.shape or got.dtype != expected.dtype:
        return False
    if expected.dtype.kind != "f":
        return bool(np.array_equal(got, expected))
    if not np.array_equal(np.isnan(got), np.isnan(expected)):
        return False
    with np.errstate(invalid="ignore"):
        return bool(np.all((got == expected) | (np.abs(got - expected) <= RTOL * np.abs(expected))))


# -- many trees, one level of all of them per numpy operation ------------------------------------

@dataclass
class _TreeArrays:
    """One binary tree as its library stores it: node arrays, a leaf where `left` is -1."""

    feature: np.ndarray
    threshold: np.ndarray  # float64; a value goes right when above it (or at it, with right_on_tie)
    left: np.ndarray
    right: np.ndarray
    nan_left: np.ndarray  # where a missing value (NaN) goes


class _Trees:
    """All trees of an ensemble as flat node arrays, walked one level per numpy call.

    Nodes are renumbered breadth-first with each node's two children side by side, so the next
    node is `child[node] + goes_right`, and every leaf is its own child with a NaN threshold, so a
    tree that reached its leaf stays there while deeper trees go on. A row then costs ~6 numpy
    calls per level of the deepest tree, whatever the number of trees. For one row of a model
    with few nodes per level it is cheaper still to decide every node at once (3 calls over all
    nodes) and then only follow the pointers (1 call per level).
    """

    def __init__(self, trees: list[_TreeArrays], right_on_tie: bool):
        sizes = [len(t.left) for t in trees]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        left = np.concatenate([np.where(t.left < 0, -1, t.left + o) for t, o in zip(trees, offsets)])
        right = np.concatenate([np.where(t.left < 0, -1, t.right + o) for t, o in zip(trees, offsets)])
        n_nodes = len(left)
        # Breadth-first over all trees at once: the roots first, then each level's children in pairs.
        position = np.empty(n_nodes, dtype=np.intp)
        level = offsets
        position[level] = np.arange(len(level))
        placed, depth = len(level), 0
        while True:
            inner = level[left[level] >= 0]
            if not len(inner):
                break
            level = np.stack([left[inner], right[inner]], axis=1).ravel()
            position[level] = placed + np.arange(len(level))
            placed += len(level)
            depth += 1
        if placed != n_nodes:  # a node no root reaches: not a tree this code understands
            raise ValueError("unreachable tree nodes")
        is_leaf = left < 0
        self.position = position  # original flat node -> walked node, to lay out the leaf values
        self.roots = np.arange(len(trees), dtype=np.intp)
        self.depth = depth
        self.feature = np.zeros(n_nodes, dtype=np.intp)
        self.threshold = np.full(n_nodes, np.nan)
        self.child = np.empty(n_nodes, dtype=np.intp)
        self.nan_right = np.zeros(n_nodes, dtype=bool)
        features = np.concatenate([t.feature for t in trees]).astype(np.intp)
        thresholds = np.concatenate([t.threshold for t in trees]).astype(np.float64)
        nan_left = np.concatenate([t.nan_left for t in trees]).astype(bool)
        inner = ~is_leaf
        self.feature[position[inner]] = features[inner]
        self.threshold[position[inner]] = thresholds[inner]
        self.child[position[inner]] = position[left[inner]]
        self.child[position[is_leaf]] = position[is_leaf]
        self.nan_right[position[inner]] = ~nan_left[inner]
        self.goes_right = np.greater_equal if right_on_tie else np.greater
        # Estimated microseconds for one row either way, fitted on 2-core x86 with 30 to 300 trees of
        # depth 4 to 24: numpy's ~0.4 us per call dominates small arrays, ~1.4 ns per node large ones.
        per_level = depth * (2.0 + 0.0047 * len(trees))
        every_node = 2.0 + 0.0014 * n_nodes + 0.4 * depth
        self.decide_every_node = every_node < per_level

    def leaves(self, x: np.ndarray, has_nan: bool) -> np.ndarray:
        """The walked-node index of each row's leaf in each tree, shape (rows, trees); `x` holds
        the values as the library compares them (float32-rounded, as float64)."""
        n, width = x.shape
        flat = x.reshape(-1)
        if n == 1 and self.decide_every_node:
            value = flat.take(self.feature)
            right = self.goes_right(value, self.threshold)
            if has_nan:
                right |= np.isnan(value) & self.nan_right
            step = self.child + right
            node = self.roots
            for _ in range(self.depth):
                node = step.take(node)
            return node.reshape(1, -1)
        if n == 1:
            node, row_start = self.roots, None
        else:  # one walk over (rows x trees): each row reads its own slice of `flat`
            node = np.tile(self.roots, n)
            row_start = np.repeat(np.arange(0, n * width, width, dtype=np.intp), len(self.roots))
        feature, threshold, child, nan_right, goes_right = (self.feature, self.threshold, self.child, self.nan_right,
                                                            self.goes_right)
        for _ in range(self.depth):
            column = feature.take(node)
            if row_start is not None:
                column += row_start
            value = flat.take(column)
            right = goes_right(value, threshold.take(node))  # False for NaN, and at every leaf
            if has_nan:
                right |= np.isnan(value) & nan_right.take(node)
            node = child.take(node)
            node += right
        return node.reshape(n, len(self.roots))


def _float32_values(X: np.ndarray) -> np.ndarray:
    """The values as scikit-learn trees and XGBoost compare them: rounded to float32. As float64,
    which holds them exactly, so they compare exactly with float64 thresholds."""
    return X.astype(np.float32).astype(np.float64)


def _sequential_sum(values: np.ndarray, axis: int) -> np.ndarray:
    """The sum along `axis` added left to right, as the libraries accumulate trees. np.sum adds
    pairwise, which can differ in the last bit; that moves an exact tie between two classes."""
    return np.cumsum(values, axis=axis).take(-1, axis=axis)


def _constant_tree() -> _TreeArrays:
    """A tree that is one leaf. Put first among the trees of an output, with the start value as
    its leaf value, it makes a boosted model's sum `start + tree 1 + tree 2 + ...` one cumsum."""
    return _TreeArrays(np.zeros(1, dtype=np.intp), np.full(1, np.nan), np.full(1, -1), np.full(1, -1), np.ones(1, bool))


def _tree_probes(trees: list[_TreeArrays], n_features: int, nan: bool, max_nodes: int = 300,
                 seed: int = 0) -> np.ndarray:
    """Rows that test split thresholds where the library decides them: for every root and a
    sample of other nodes, a row that follows the node's path (each ancestor's feature set just
    to the side the path takes) with the node's own feature at the float32 values just below, at
    and just above its threshold, and at the threshold itself in float64 (which tests the cast).
    Other features take values beside random thresholds of theirs. With `nan`, copies with NaN
    at the node's feature (its missing-value direction) and rows with random NaN."""
    rng = np.random.default_rng(seed)
    inner = [np.flatnonzero(t.left >= 0) for t in trees]
    features = np.concatenate([t.feature[i] for t, i in zip(trees, inner)]).astype(np.intp)
    thresholds = np.concatenate([t.threshold[i] for t, i in zip(trees, inner)]).astype(np.float64)
    pools = []
    for f in range(n_features):
        used = thresholds[features == f]
        pools.append(np.concatenate(_float32_sides(used)) if len(used) else rng.normal(size=8))

    candidates = [(i, 0) for i, nodes in enumerate(inner) if len(nodes) and nodes[0] == 0]
    tree_of = np.concatenate([np.full(len(nodes), i) for i, nodes in enumerate(inner)]).astype(np.intp)
    node_of = np.concatenate(inner).astype(np.intp)
    others = np.flatnonzero(node_of != 0)
    for k in rng.choice(others, size=min(max_nodes, len(others)), replace=False).tolist():
        candidates.append((int(tree_of[k]), int(node_of[k])))
    background = np.stack([rng.choice(pool, size=len(candidates)) for pool in pools], axis=1)
    parents = {}
    rows = []
    for (i, node), row in zip(candidates, background):
        t = trees[i]
        if node and i not in parents:
            parents[i] = _parents(t)
        for ancestor, went_right in _path(parents.get(i), node):
            below, _, above = _float32_sides(t.threshold[ancestor])
            row[t.feature[ancestor]] = above if went_right else below
        f = t.feature[node]
        for value in (*_float32_sides(t.threshold[node]), t.threshold[node]) + ((np.nan,) if nan else ()):
            rows.append(row.copy())
            rows[-1][f] = value
    rows.extend(rng.normal(size=(8, n_features)))  # a model with no split at all has rows too
    probes = np.array(rows, dtype=np.float64).reshape(-1, n_features)
    if nan:
        extra = probes[rng.choice(len(probes), size=min(64, len(probes)), replace=False)]
        extra[rng.random(extra.shape) < 0.3] = np.nan
        probes = np.concatenate([probes, extra])
    return probes


def _float32_sides(threshold):
    """The float32 values just below, at-or-below, and just above a threshold (each an array
    when given one): whichever way a library breaks a tie (`<=` a float64 threshold, `<` a
    float32 one), they fall on both sides of it."""
    at = np.asarray(threshold, dtype=np.float32)
    at = np.where(at > threshold, np.nextafter(at, np.float32(-np.inf)), at)
    return np.nextafter(at, np.float32(-np.inf)), at, np.nextafter(at, np.float32(np.inf))


def _parents(tree: _TreeArrays) -> tuple[np.ndarray, np.ndarray]:
    """Each node's parent (-1 for the root) and whether it is its parent's right child."""
    parent = np.full(len(tree.left), -1, dtype=np.intp)
    is_right = np.zeros(len(tree.left), dtype=bool)
    inner = np.flatnonzero(tree.left >= 0)
    parent[tree.left[inner]] = inner
    parent[tree.right[inner]] = inner
    is_right[tree.right[inner]] = True
    return parent, is_right


def _path(parents: tuple[np.ndarray, np.ndarray] | None, node: int) -> list[tuple[int, bool]]:
    """(ancestor, whether the path goes right there), from the root down to `node`."""
    path = []
    while parents is not None and parents[0][node] >= 0:
        path.append((int(parents[0][node]), bool(parents[1][node])))
        node = path[-1][0]
    return path[::-1]


# -- scikit-learn -----------------------------------------------------------------------------

def _compile_sklearn(estimator: Any) -> _Model | None:
    try:
        model = _sklearn_model(estimator)
    except (AttributeError, TypeError, ValueError, IndexError):  # not fitted, or fitted in a shape not foreseen
        return None
    if model is None:
        return None
    if model.trees_for_probes is not None:
        probes = _tree_probes(model.trees_for_probes, model.n_features, nan=model.nan_ok)
    else:
        probes = _linear_probes(model.n_features)
    return model if _agrees(model, probes) else None


def _sklearn_model(estimator: Any) -> _Model | None:
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
        import pandas as pd

        if isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[1] == len(names):
            X = pd.DataFrame(X, columns=names)
        return call(X)

    return named


def _sklearn_tree_arrays(tree: Any) -> _TreeArrays:
    """A fitted `sklearn.tree._tree.Tree`'s nodes. A value goes left when its float32 rounding is
    <= the float64 threshold (`_apply_dense` in sklearn/tree/_tree.pyx)."""
    nan_left = getattr(tree, "missing_go_to_left", None)  # scikit-learn >= 1.3
    return _TreeArrays(tree.feature, tree.threshold, tree.children_left, tree.children_right,
                       np.ones(tree.node_count, dtype=bool) if nan_left is None else nan_left)


def _allows_nan(estimator: Any) -> bool:
    """Whether the library takes NaN (it routes it per node); otherwise it refuses NaN."""
    try:
        return bool(estimator.__sklearn_tags__().input_tags.allow_nan)
    except AttributeError:
        return False


def _forest(forest: Any, classifier: bool) -> _Model:
    """ForestClassifier.predict_proba: each tree's leaf value (class fractions: scikit-learn >= 1.4
    stores them normalised) added into zeros tree by tree, then divided by the number of trees;
    predict takes the argmax. ForestRegressor.predict the same with the leaf's single value."""
    estimators = forest.estimators_
    arrays = [_sklearn_tree_arrays(e.tree_) for e in estimators]
    trees = _Trees(arrays, right_on_tie=False)
    n_trees = len(estimators)
    if classifier:
        n_classes = int(forest.n_classes_)
        per_node = np.concatenate([e.tree_.value[:, 0, :n_classes] for e in estimators])
    else:
        per_node = np.concatenate([e.tree_.value[:, 0, 0] for e in estimators])
    leaf_value = np.zeros((len(trees.position),) + per_node.shape[1:])
    leaf_value[trees.position] = per_node

    def averaged(X: np.ndarray, has_nan: bool) -> np.ndarray:
        values = leaf_value.take(trees.leaves(_float32_values(X), has_nan), axis=0)
        return _sequential_sum(values, axis=1) / n_trees

    common = dict(n_features=forest.n_features_in_, nan_ok=_allows_nan(forest.estimators_[0]), float32_input=True,
                  max_rows=_FOREST_MAX_ROWS, trees_for_probes=arrays)
    if not classifier:
        return _Model(predict_kernel=averaged, predict_library=_library(forest, "predict"), **common)
    classes = forest.classes_
    return _Model(predict_kernel=lambda X, has_nan: classes.take(np.argmax(averaged(X, has_nan), axis=1), axis=0),
                  predict_library=_library(forest, "predict"),
                  proba_kernel=averaged, proba_library=_library(forest, "predict_proba"), **common)


def _decision_tree(estimator: Any, classifier: bool) -> _Model:
    """BaseDecisionTree.predict / predict_proba around the library's own `Tree.predict`."""
    tree = estimator.tree_

    def values(X: np.ndarray, has_nan: bool) -> np.ndarray:
        return tree.predict(X.astype(np.float32))

    common = dict(n_features=estimator.n_features_in_, nan_ok=_allows_nan(estimator), float32_input=True,
                  trees_for_probes=[_sklearn_tree_arrays(tree)])
    if not classifier:
        return _Model(predict_kernel=lambda X, has_nan: values(X, has_nan)[:, 0],
                      predict_library=_library(estimator, "predict"), **common)
    classes, n_classes = estimator.classes_, int(estimator.n_classes_)
    return _Model(predict_kernel=lambda X, has_nan: classes.take(np.argmax(values(X, has_nan), axis=1), axis=0),
                  predict_library=_library(estimator, "predict"),
                  proba_kernel=lambda X, has_nan: values(X, has_nan)[:, :n_classes],
                  proba_library=_library(estimator, "predict_proba"), **common)


def _gradient_boosting(estimator: Any, classifier: bool) -> _Model | None:
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
    trees = _Trees([_constant_tree() for _ in range(n_outputs)] + arrays, right_on_tie=False)
    leaf_value = np.zeros(len(trees.position))
    # The product the library computes per leaf: a double times a double, rounded once.
    leaf_value[trees.position] = np.concatenate([init_raw] + [estimator.learning_rate * e.tree_.value[:, 0, 0]
                                                              for e in stages.ravel()])
    loss = estimator._loss

    def decision(X: np.ndarray, has_nan: bool) -> np.ndarray:
        values = leaf_value.take(trees.leaves(_float32_values(X), has_nan)).reshape(len(X), n_stages + 1, n_outputs)
        raw = _sequential_sum(values, axis=1)
        return raw.ravel() if n_outputs == 1 else raw  # decision_function's shape

    common = dict(n_features=n_features, nan_ok=False, float32_input=True, max_rows=_BOOSTING_MAX_ROWS,
                  trees_for_probes=arrays)
    if not classifier:
        return _Model(predict_kernel=decision, predict_library=_library(estimator, "predict"), **common)
    classes = estimator.classes_

    def predict(X: np.ndarray, has_nan: bool) -> np.ndarray:
        raw = decision(X, has_nan)
        return classes[(raw >= 0).astype(int) if raw.ndim == 1 else np.argmax(raw, axis=1)]

    return _Model(predict_kernel=predict, predict_library=_library(estimator, "predict"),
                  proba_kernel=lambda X, has_nan: loss.predict_proba(decision(X, has_nan)),
                  proba_library=_library(estimator, "predict_proba"), **common)


def _logistic_regression(estimator: Any) -> _Model:
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

    return _Model(n_features=estimator.n_features_in_,
                  predict_kernel=predict, predict_library=_library(estimator, "predict"),
                  proba_kernel=proba, proba_library=_library(estimator, "predict_proba"))


def _linear_regression(estimator: Any) -> _Model:
    """LinearModel._decision_function for a dense input."""
    coef, intercept = estimator.coef_, estimator.intercept_
    if not isinstance(coef, np.ndarray):
        raise TypeError("sparse coefficients")
    coef_t = coef if coef.ndim == 1 else coef.T
    return _Model(n_features=estimator.n_features_in_, predict_kernel=lambda X, has_nan: X @ coef_t + intercept,
                  predict_library=_library(estimator, "predict"))


def _linear_probes(n_features: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    probes = rng.normal(size=(48, n_features)) * rng.choice([1e-3, 1, 30, 1e4], size=(48, 1))
    probes[::7] = 0.0
    return probes


# -- XGBoost ----------------------------------------------------------------------------------

def _compile_xgboost(booster: Any) -> _Model | None:
    """The gbtree predictor of XGBoost (src/predictor/cpu_predictor.cc), in float32 as it runs:
    a row starts at the base margin and adds each tree's leaf value in tree order (per output
    group); a value goes left when its float32 rounding is < the float32 threshold, NaN goes the
    node's default way. Then the objective's transform (`_XGBOOST_TRANSFORMS`)."""
    learner = json.loads(booster.save_raw(raw_format="json"))["learner"]
    objective = learner["objective"]["name"]
    gbm = learner["gradient_booster"]
    if gbm.get("name") != "gbtree" or objective not in _XGBOOST_TRANSFORMS:
        return None  # dart weights its trees, gblinear has none; other objectives, other transforms
    if any(t not in ("float", "int", "i", "q") for t in (booster.feature_types or [])):
        return None  # categorical features
    raw_trees = gbm["model"]["trees"]
    if not raw_trees or any(int(t["tree_param"].get("size_leaf_vector") or 1) > 1 or any(t.get("split_type", []))
                            for t in raw_trees):
        return None  # multi-target trees, categorical splits
    transform = _XGBOOST_TRANSFORMS[objective]
    if transform is not None:
        _load_expf()
    n_features = booster.num_features()
    arrays, leaf_values = [], []
    for t in raw_trees:
        left = np.array(t["left_children"], dtype=np.intp)
        conditions = np.array(t["split_conditions"], dtype=np.float32)  # a leaf keeps its value here
        arrays.append(_TreeArrays(np.array(t["split_indices"], dtype=np.intp), conditions.astype(np.float64), left,
                                  np.array(t["right_children"], dtype=np.intp),
                                  np.array(t["default_left"], dtype=bool)))
        leaf_values.append(np.where(left < 0, conditions, np.float32(0)))
    groups = np.array(gbm["model"]["tree_info"], dtype=np.intp)
    n_groups = int(groups.max()) + 1
    if len(set(np.bincount(groups, minlength=n_groups).tolist())) != 1:
        return None
    base = _xgboost_base_margin(booster, n_features)  # (n_groups,) float32
    if base.shape != (n_groups,):
        return None
    # Output by output: a constant tree holding the output's base margin, then its trees in order.
    members = [np.flatnonzero(groups == g) for g in range(n_groups)]
    trees = _Trees([tree for g in range(n_groups) for tree in [_constant_tree()] + [arrays[i] for i in members[g]]],
                   right_on_tie=True)
    leaf_value = np.zeros(len(trees.position), dtype=np.float32)
    leaf_value[trees.position] = np.concatenate([value for g in range(n_groups)
                                                 for value in [base[g:g + 1]] + [leaf_values[i] for i in members[g]]])

    def predict(X: np.ndarray, has_nan: bool) -> np.ndarray:
        values = leaf_value.take(trees.leaves(_float32_values(X), has_nan)).reshape(len(X), n_groups, -1)
        scores = _sequential_sum(values, axis=2)  # (rows, outputs), added in float32 as XGBoost adds
        if transform is not None:
            scores = transform(scores)
        return scores[:, 0] if scores.ndim == 2 and scores.shape[1] == 1 else scores

    def library(X: np.ndarray) -> np.ndarray:
        return np.array(booster.inplace_predict(X))  # a copy: the booster reuses its output buffer

    return _Model(n_features=n_features, predict_kernel=predict, predict_library=library, nan_ok=True,
                  float32_input=True, max_rows=_XGBOOST_MAX_ROWS, trees_for_probes=arrays)


def _xgboost_base_margin(booster: Any, n_features: int) -> np.ndarray:
    """The base margin exactly as the learner holds it (base_score through the objective's link,
    in float32): the margin the same model predicts with every leaf set to zero."""
    import xgboost

    model = json.loads(booster.save_raw(raw_format="json"))
    for t in model["learner"]["gradient_booster"]["model"]["trees"]:
        t["split_conditions"] = [0.0 if left < 0 else c for left, c in zip(t["left_children"], t["split_conditions"])]
    zeroed = xgboost.Booster(model_file=bytearray(json.dumps(model).encode()))
    margin = zeroed.inplace_predict(np.zeros((1, n_features)), predict_type="margin")
    return np.array(margin, dtype=np.float32).reshape(-1)


# XGBoost's float32 transforms call the C library's expf (src/common/math.h); numpy's float32 exp
# is its own SIMD code and can differ in the last bit, so the same expf is called here. Loaded on
# first use: finding the library by name may run ldconfig.
_expf: Callable[[float], float] | None = None


def _load_expf() -> None:
    global _expf
    if _expf is None:
        try:
            libm = ctypes.CDLL("libm.so.6")
        except OSError:
            libm = ctypes.CDLL(ctypes.util.find_library("m"))
        expf = libm.expf
        expf.restype, expf.argtypes = ctypes.c_float, [ctypes.c_float]
        _expf = expf


def _expf_each(values: np.ndarray) -> np.ndarray:
    return np.fromiter(map(_expf, values.ravel().tolist()), np.float32, values.size).reshape(values.shape)


def _xgboost_sigmoid(margin: np.ndarray) -> np.ndarray:
    """common::Sigmoid(float): 1 / (expf(min(-x, 88.7f)) + 1 + 1e-16f); the 1e-16f is below half
    an ulp of a sum >= 1, so it never changes it."""
    one = np.float32(1)
    denominator = _expf_each(np.minimum(-margin, np.float32(88.7)))
    denominator += one
    return np.divide(one, denominator, out=denominator)


def _xgboost_softmax(margin: np.ndarray) -> np.ndarray:
    """common::Softmax: expf(x - max) in float32, summed in a double in class order, each divided
    by that sum cast to float."""
    exps = _expf_each(margin - margin.max(axis=1, keepdims=True))
    total = _sequential_sum(exps.astype(np.float64), axis=1)
    return exps / total.astype(np.float32)[:, None]


def _xgboost_argmax(margin: np.ndarray) -> np.ndarray:
    """multi:softmax answers the class index (the first of equal maxima), as a float32."""
    return np.argmax(margin, axis=1).astype(np.float32)


# Objective -> the transform of its PredTransform, for the objectives whose transform is checked
# against XGBoost 3.2's source (regression_loss.h, regression_obj.cu, multiclass_obj.cu).
_XGBOOST_TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray] | None] = {
    "reg:squarederror": None, "reg:pseudohubererror": None, "reg:absoluteerror": None, "binary:logitraw": None,
    "binary:logistic": _xgboost_sigmoid, "reg:logistic": _xgboost_sigmoid,
    "multi:softprob": _xgboost_softmax, "multi:softmax": _xgboost_argmax,
    "count:poisson": lambda margin: _expf_each(margin), "reg:tweedie": lambda margin: _expf_each(margin),
    "reg:gamma": lambda margin: _expf_each(margin),
}


# -- LightGBM ---------------------------------------------------------------------------------

def _lightgbm_model(booster: Any) -> _Model:
    """Booster.predict through LightGBM's single-row C API: the library's own predictor on the
    library's own row reader (the one LGBM_BoosterPredictForMat uses), so it takes every value
    as the library does (NaN, Infinity). What it saves is the per-call Python and the per-call
    parsing of the prediction parameters in C. Several rows go to Booster.predict.

    The C handle serialises concurrent calls with its own mutex and each call writes its own
    buffer, so threads may share the function."""
    from lightgbm.basic import _LIB, _safe_call

    n_features, n_out = booster.num_feature(), booster.num_model_per_iteration()
    handle = _LightGBMRowHandle(booster, n_features)
    # Its own function object, so that its argument types (which skip ctypes' slow pointer
    # conversions) do not change the one lightgbm calls.
    predict_row = ctypes.CDLL(_LIB._name).LGBM_BoosterPredictForMatSingleRowFast
    predict_row.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int64),
                            ctypes.POINTER(ctypes.c_double)]
    predict_row.restype = ctypes.c_int
    out_type = ctypes.c_double * n_out

    def one_row(X: np.ndarray, has_nan: bool) -> np.ndarray:
        if len(X) != 1:
            return booster.predict(X)
        out, length = out_type(), ctypes.c_int64()
        _safe_call(predict_row(handle.value, X.tobytes(), length, out))  # tobytes: the row, C order
        if length.value != n_out:
            raise ValueError("unexpected prediction length")
        return np.array(out).reshape(1, n_out) if n_out > 1 else np.array(out)

    return _Model(n_features=n_features, predict_kernel=one_row, predict_library=booster.predict, nan_ok=True,
                  any_value=True, max_rows=1)


class _LightGBMRowHandle:
    """LightGBM's single-row prediction handle ("FastConfig"), freed with this object. It points
    into the booster, which this object keeps alive."""

    def __init__(self, booster: Any, n_features: int):
        from lightgbm.basic import _LIB, _c_str, _safe_call

        self.booster = booster
        handle = ctypes.c_void_p()
        _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle, ctypes.c_int(0),  # normal prediction (not raw, leaf or contributions)
            ctypes.c_int(0), ctypes.c_int(booster.best_iteration),  # what Booster.predict picks without num_iteration
            ctypes.c_int(1), ctypes.c_int32(n_features),  # float64 rows
            _c_str(""), ctypes.byref(handle)))
        self.value = handle.value
        weakref.finalize(self, _LIB.LGBM_FastConfigFree, handle).atexit = False
