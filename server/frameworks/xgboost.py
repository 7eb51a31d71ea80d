"""XGBoost: a Booster saved as JSON or UBJSON, scored with `Booster.inplace_predict` and labelled
exactly as XGBClassifier.predict labels, through the exact fast path where it has one: every tree
stepped together (`trees.Trees`) in float32 as XGBoost runs, with its own transforms. `FRAMEWORK`,
at the end, is what the framework registry reads."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .base import Framework
from .boosters import BoosterRuntime
from .trees import Compiled, Scorer, TreeArrays, Trees, constant_tree, float32_values, sequential_sum, tree_probes

# Past these many rows the tree-stepping kernel loses to the library's compiled loops. Measured on 2
# cores with a 100-tree model (library / fast): 284 / 213 us at 32 rows, 321 / 355 at 64.
_XGBOOST_MAX_ROWS = 32


class XGBoostRuntime(BoosterRuntime):
    """Booster.inplace_predict, labelled exactly as XGBClassifier.predict does."""

    def __init__(self, booster: Any):
        self._booster = booster
        self.n_features = booster.num_features() or None
        self.feature_names = booster.feature_names  # None when fitted on an array
        objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
        self.binary_threshold = {"binary:logistic": 0.5, "binary:logitraw": 0.0}.get(objective)
        self.multiclass = objective == "multi:softprob"

    def library_scores(self, matrix: np.ndarray) -> np.ndarray:
        return self._booster.inplace_predict(matrix)

    def compile(self) -> Scorer | None:
        return compile_xgboost(self._booster)

    def binary_probability(self, scores: np.ndarray) -> np.ndarray:
        if self.binary_threshold == 0.0:  # binary:logitraw scores are margins
            return 1 / (1 + np.exp(-scores))
        return scores


# -- the fast path ----------------------------------------------------------------------------

def compile_xgboost(booster: Any) -> Scorer | None:
    """`booster.inplace_predict(X)` (all trees, default output), or None."""
    try:
        model = _compile_xgboost(booster)
    except (KeyError, TypeError, ValueError, IndexError, OSError):  # a layout this code does not know; no libm
        return None
    if model is None:
        return None
    return model.checked(tree_probes(model.trees_for_probes, model.n_features, nan=True)).predict


def _compile_xgboost(booster: Any) -> Compiled | None:
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
        arrays.append(TreeArrays(np.array(t["split_indices"], dtype=np.intp), conditions.astype(np.float64), left,
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
    trees = Trees([tree for g in range(n_groups) for tree in [constant_tree()] + [arrays[i] for i in members[g]]],
                   right_on_tie=True)
    leaf_value = np.zeros(len(trees.position), dtype=np.float32)
    leaf_value[trees.position] = np.concatenate([value for g in range(n_groups)
                                                 for value in [base[g:g + 1]] + [leaf_values[i] for i in members[g]]])

    def predict(X: np.ndarray, has_nan: bool) -> np.ndarray:
        values = leaf_value.take(trees.leaves(float32_values(X), has_nan)).reshape(len(X), n_groups, -1)
        scores = sequential_sum(values, axis=2)  # (rows, outputs), added in float32 as XGBoost adds
        if transform is not None:
            scores = transform(scores)
        return scores[:, 0] if scores.ndim == 2 and scores.shape[1] == 1 else scores

    def library(X: np.ndarray) -> np.ndarray:
        return np.array(booster.inplace_predict(X))  # a copy: the booster reuses its output buffer

    return Compiled(n_features=n_features, predict_kernel=predict, predict_library=library, nan_ok=True,
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
    total = sequential_sum(exps.astype(np.float64), axis=1)
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


# -- the declaration ---------------------------------------------------------------------------

def _read(path: Path) -> Any:
    import xgboost

    return xgboost.Booster(model_file=str(path))


def _feature_names(model: Any) -> list[str] | None:
    """A Booster's own names, else x0, x1, ... for its width."""
    if not hasattr(model, "num_features"):
        return None
    return model.feature_names or [f"x{i}" for i in range(model.num_features())]


FRAMEWORK = Framework(
    name="xgboost",
    aliases=(),
    module="xgboost",
    suffixes=(".json", ".ubj"),
    read=_read,
    runtime=XGBoostRuntime,
    packages={".json": "model.json", ".ubj": "model.ubj"},
    reads_as="XGBoost Booster",
    score_load="""\
import xgboost

booster = xgboost.Booster()
booster.load_model(path)
return booster""",
    score_predict="""\
if type(model).__module__.startswith("xgboost") and hasattr(model, "num_features"):  # a Booster
    import xgboost

    table = xgboost.DMatrix(table, feature_names=model.feature_names)""",
    feature_names=_feature_names,
    ads_model="ads.model.framework.xgboost_model.XGBoostModel",
)
