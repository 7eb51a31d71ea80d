"""Fast paths for native models: the library's own answer, without the library's per-call overhead.

A one-row request spends almost all its time in the library's wrapper, not in arithmetic:
input validation, joblib dispatch of one task per tree (scikit-learn forests), JSON-configured C
calls (XGBoost). Each framework's compiler (in its module) builds a `Compiled` model: kernels that
compute the same output from a 2-D float64 matrix (columns in the model's order, NaN for a missing
value), and the library calls they replace. Its scorers answer the library's own call for whatever
the kernel does not take (other widths or dtypes, large batches, values the library refuses such
as Infinity), so a scorer can replace the library call outright.

"The same output" means: labels equal, numbers equal to 1e-9 relative. Most paths are
bit-for-bit: they repeat the library's floating-point operations in its order. Every compile
ends with a self-check against the library (`Compiled.checked`) on probe rows built from the model
itself (values at and beside every split threshold that a sample of tree paths meets, NaN where
the model takes it), each output (predict, predict_proba) on its own: an output whose fast path
disagrees anywhere gets None, so a model nobody foresaw falls back to the library instead of
answering differently.

This module holds what several frameworks share: that frame, and the tree kernel (`Trees`), which
steps every tree of an ensemble one level per numpy operation, so a row costs a few numpy calls
per level rather than one Python dispatch (forests) or one Cython call per tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

Scorer = Callable[[np.ndarray], np.ndarray]

RTOL = 1e-9
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT64_MAX = float(np.finfo(np.float64).max)


class FastPaths(NamedTuple):
    """A model's checked fast paths: each None where there is none, or it disagreed with the library."""

    predict: Scorer | None
    predict_proba: Scorer | None = None


NO_FAST_PATHS = FastPaths(None, None)


# -- the common frame: when the fast kernel answers, and the self-check ---------------------------

@dataclass
class Compiled:
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

    def checked(self, probes: np.ndarray) -> FastPaths:
        """The scorers whose kernel gives the library's output on the probe rows, each output on its
        own (a probability kernel that disagrees leaves predict's fast path standing): in batches
        of the largest size the kernel takes, and one row at a time (the case that matters, and a
        separate code path in the tree kernels)."""
        if not self.nan_ok:
            probes = probes[~np.isnan(probes).any(axis=1)]
        probes = np.clip(probes, -1e30, 1e30)  # finite in float32, so every probe reaches the kernel
        predict = self._checked(self.predict_kernel, self.predict_library, probes)
        proba = None if self.proba_kernel is None else self._checked(self.proba_kernel, self.proba_library, probes)
        return FastPaths(predict, proba)

    def _checked(self, kernel, library: Scorer, probes: np.ndarray) -> Scorer | None:
        scorer = self._scorer(kernel, library)
        step = int(min(self.max_rows, len(probes)))
        singles = list(range(0, len(probes), max(1, len(probes) // 12)))
        try:
            expected = library(probes)
            got = [kernel(chunk, bool(np.isnan(chunk).any())) for chunk in
                   (probes[i:i + step] for i in range(0, len(probes), step))]
            agrees = _same(np.concatenate(got), expected) and all(
                _same(scorer(probes[i:i + 1]), library(probes[i:i + 1])) for i in singles)
        except Exception:  # noqa: BLE001 - a fast path that breaks on the probes is no fast path
            return None
        return scorer if agrees else None

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
class TreeArrays:
    """One binary tree as its library stores it: node arrays, a leaf where `left` is -1."""

    feature: np.ndarray
    threshold: np.ndarray  # float64; a value goes right when above it (or at it, with right_on_tie)
    left: np.ndarray
    right: np.ndarray
    nan_left: np.ndarray  # where a missing value (NaN) goes


class Trees:
    """All trees of an ensemble as flat node arrays, walked one level per numpy call.

    Nodes are renumbered breadth-first with each node's two children side by side, so the next
    node is `child[node] + goes_right`, and every leaf is its own child with a NaN threshold, so a
    tree that reached its leaf stays there while deeper trees go on. A row then costs ~6 numpy
    calls per level of the deepest tree, whatever the number of trees. For one row of a model
    with few nodes per level it is cheaper still to decide every node at once (3 calls over all
    nodes) and then only follow the pointers (1 call per level).
    """

    def __init__(self, trees: list[TreeArrays], right_on_tie: bool):
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


def float32_values(X: np.ndarray) -> np.ndarray:
    """The values as scikit-learn trees and XGBoost compare them: rounded to float32. As float64,
    which holds them exactly, so they compare exactly with float64 thresholds."""
    return X.astype(np.float32).astype(np.float64)


def sequential_sum(values: np.ndarray, axis: int) -> np.ndarray:
    """The sum along `axis` added left to right, as the libraries accumulate trees. np.sum adds
    pairwise, which can differ in the last bit; that moves an exact tie between two classes."""
    return np.cumsum(values, axis=axis).take(-1, axis=axis)


def constant_tree() -> TreeArrays:
    """A tree that is one leaf. Put first among the trees of an output, with the start value as
    its leaf value, it makes a boosted model's sum `start + tree 1 + tree 2 + ...` one cumsum."""
    return TreeArrays(np.zeros(1, dtype=np.intp), np.full(1, np.nan), np.full(1, -1), np.full(1, -1), np.ones(1, bool))


def tree_probes(trees: list[TreeArrays], n_features: int, nan: bool, max_nodes: int = 300,
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


def _parents(tree: TreeArrays) -> tuple[np.ndarray, np.ndarray]:
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
