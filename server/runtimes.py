"""Adapters that turn a model on disk into something with `predict(payload)`.

- `ScoreModuleRuntime`: an OCI Data Science (ADS) artifact. Its score.py is imported once under a
  module name of its own, `load_model()` is called once, then `predict(data, model=...)` per request.
- `SklearnRuntime`, `XGBoostRuntime`, `LightGBMRuntime`: native model files scored on a numpy
  matrix, calling the booster directly where that gives the wrapper's output without its overhead.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import re
import sys
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np

from .errors import InvalidInput

_module_numbers = itertools.count()


class Runtime(Protocol):
    n_features: int | None

    def predict(self, payload: Any) -> Any: ...

    def close(self) -> None: ...


def open_runtime(model_id: str, path: Path) -> Runtime:
    """Pick the adapter from what is on disk: an unpacked artifact directory or a native model file."""
    if path.is_dir():
        return ScoreModuleRuntime(model_id, path)
    suffix = path.suffix.lower()
    if suffix in (".joblib", ".pkl"):
        return SklearnRuntime(path)
    if suffix in (".json", ".ubj"):
        return XGBoostRuntime(path)
    if suffix == ".txt":
        return LightGBMRuntime(path)
    raise ValueError(f"no runtime for a model file named {path.name!r}")


def rows_of(payload: Any) -> Any:
    """The rows of a scoring body: a list of rows, one row, or {"data": rows}."""
    if isinstance(payload, dict):
        if "data" not in payload:
            raise InvalidInput('expected a list of rows, one row, or {"data": rows}')
        return payload["data"]
    return payload


def check_width(width: int, n_features: int | None) -> None:
    if n_features is not None and width != n_features:
        raise InvalidInput(
            f"expected {n_features} features per row, received {width}", expected=n_features, received=width
        )


def to_matrix(payload: Any, n_features: int | None) -> np.ndarray:
    rows = rows_of(payload)
    try:
        matrix = np.asarray(rows, dtype=np.float64)
    except (ValueError, TypeError):
        raise InvalidInput("rows must be lists of numbers, all of the same length", expected=n_features) from None
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise InvalidInput(
            f"expected rows of {n_features or 'n'} numbers (a 2-D array), received an array of shape "
            f"{list(np.shape(rows))}",
            expected=n_features,
            received=list(np.shape(rows)),
        )
    check_width(matrix.shape[1], n_features)
    return matrix


class ScoreModuleRuntime:
    def __init__(self, model_id: str, artifact_dir: Path):
        self.module_name = f"mis_score_{re.sub(r'[^0-9A-Za-z_]', '_', model_id)}_{next(_module_numbers)}"
        spec = importlib.util.spec_from_file_location(self.module_name, artifact_dir / "score.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[self.module_name] = module  # pickled objects may refer to their module by name
        try:
            with _artifact_imports(artifact_dir):
                spec.loader.exec_module(module)
                self._model = module.load_model()
        except BaseException:
            sys.modules.pop(self.module_name, None)
            raise
        self._predict = module.predict
        self.n_features = _schema_width(artifact_dir / "input_schema.json")

    def predict(self, payload: Any) -> Any:
        # The body goes to score.py as-is, but for two conveniences: one row of numbers becomes a
        # list of one row (as for native models), and a wrong row width is caught up front so the
        # client hears what was expected rather than the framework's message.
        if _is_one_row(payload):
            payload = [payload]
        rows = payload.get("data") if isinstance(payload, dict) else payload
        if isinstance(rows, list) and rows and all(isinstance(r, list) for r in rows):
            for row in rows:
                check_width(len(row), self.n_features)
        result = self._predict(payload, model=self._model)
        if isinstance(result, dict) and set(result) == {"prediction"}:
            return result["prediction"]
        return result

    def close(self) -> None:
        sys.modules.pop(self.module_name, None)


def _is_one_row(payload: Any) -> bool:
    return isinstance(payload, list) and bool(payload) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in payload
    )


@contextlib.contextmanager
def _artifact_imports(artifact_dir: Path) -> Iterator[None]:
    """Make the artifact's own modules importable, without sharing them with any other artifact.

    Two artifacts may both ship e.g. `features.py`. Modules of those names are set aside while this
    score.py imports its own, and this artifact's are dropped from sys.modules afterwards (score.py
    keeps its references), so the next artifact's `import features` finds its own file.
    """
    local = {p.stem for p in artifact_dir.glob("*.py")} | {
        p.parent.name for p in artifact_dir.glob("*/__init__.py")
    }
    local.discard("score")

    def ours(name: str) -> bool:
        return name.split(".")[0] in local

    set_aside = {name: sys.modules.pop(name) for name in list(sys.modules) if ours(name)}
    saved_path = list(sys.path)  # ADS's score.py adds its folder to sys.path too: undo that as well
    sys.path.insert(0, str(artifact_dir))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path[:] = saved_path
        for name in [n for n in sys.modules if ours(n)]:
            del sys.modules[name]
        sys.modules.update(set_aside)


def _schema_width(schema_file: Path) -> int | None:
    """Number of input features in an ADS input_schema.json, when the artifact has one."""
    try:
        schema = json.loads(schema_file.read_text()).get("schema")
    except (OSError, ValueError, AttributeError):
        return None
    return len(schema) if isinstance(schema, list) and schema else None


class SklearnRuntime:
    def __init__(self, path: Path):
        import joblib

        self._model = joblib.load(path)
        self.n_features = getattr(self._model, "n_features_in_", None)

    def predict(self, payload: Any) -> list:
        return self._model.predict(to_matrix(payload, self.n_features)).tolist()

    def close(self) -> None:
        pass


class _BoosterRuntime:
    """A booster's raw scores, turned into class labels as the scikit-learn wrapper's predict does:
    binary classifiers compare with a threshold, multiclass ones take the argmax."""

    n_features: int | None
    binary_threshold: float | None = None
    multiclass: bool = False

    def scores(self, matrix: np.ndarray) -> np.ndarray: ...

    def predict(self, payload: Any) -> list:
        scores = self.scores(to_matrix(payload, self.n_features))
        if self.binary_threshold is not None:
            return (scores > self.binary_threshold).astype(np.int64).tolist()
        if self.multiclass:
            return np.argmax(scores, axis=1).tolist()
        return scores.tolist()

    def close(self) -> None:
        pass


class XGBoostRuntime(_BoosterRuntime):
    """Booster.inplace_predict, labelled exactly as XGBClassifier.predict does."""

    def __init__(self, path: Path):
        import xgboost

        self._booster = xgboost.Booster(model_file=str(path))
        self.n_features = self._booster.num_features() or None
        objective = json.loads(self._booster.save_config())["learner"]["objective"]["name"]
        self.binary_threshold = {"binary:logistic": 0.5, "binary:logitraw": 0.0}.get(objective)
        self.multiclass = objective == "multi:softprob"

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        return self._booster.inplace_predict(matrix)


class LightGBMRuntime(_BoosterRuntime):
    """Booster.predict; classifiers answer the class index, as LGBMClassifier does for 0..k-1 labels."""

    def __init__(self, path: Path):
        import lightgbm

        self._booster = lightgbm.Booster(model_file=str(path))
        self.n_features = self._booster.num_feature() or None
        objective = str(self._booster.params.get("objective", ""))
        self.binary_threshold = 0.5 if objective in ("binary", "cross_entropy") else None
        self.multiclass = objective in ("multiclass", "softmax", "multiclassova")

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        return self._booster.predict(matrix)
