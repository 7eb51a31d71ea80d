"""Adapters that turn a model on disk into something with `predict(payload)`.

- `ScoreModuleRuntime`: an OCI Data Science (ADS) artifact. Its score.py is imported once under a
  module name of its own, `load_model()` is called once, then `predict(data, model=...)` per request.
- `SklearnRuntime`, `XGBoostRuntime`, `LightGBMRuntime`: native model files scored on a numpy
  matrix, calling the booster directly where that gives the wrapper's output without its overhead.

Every body is read by one reader (`read_table`) and checked in one place (`check_features`), for
ADS artifacts and native models alike. Missing values: null and NaN mean "missing" and reach the
model as NaN; +/-Infinity is refused (422).
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import itertools
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import pandas as pd
import pandas.io.common as pandas_io  # what read_json opens rather than parses

from . import fastpaths
from .errors import InvalidInput

_module_numbers = itertools.count()


class Runtime(Protocol):
    n_features: int | None
    feature_names: list[str] | None

    def predict(self, payload: Any) -> Any: ...

    @property
    def predict_proba(self) -> Callable[[Any], Any] | None:
        """Class probabilities for a classifier; None for a model that has none."""

    def prepare(self) -> None:
        """Get ready to predict in this process (after a fork): compile fast paths and the like."""

    def close(self) -> None: ...


# Runtimes the gunicorn master opened before forking (`preopen`): each worker takes its inherited
# copy instead of loading the model again, so the model's memory is one copy shared by every worker
# (copy-on-write), not one per worker. Keyed by what was opened, so a changed artifact is reopened.
_preopened: dict[tuple, Runtime] = {}


def _opened_key(model_id: str, path: Path) -> tuple:
    stat = path.stat()
    return model_id, str(path), stat.st_mtime_ns, stat.st_ino


def preopen(model_id: str, path: Path) -> None:
    """In the master, before the fork: load, never predict (a model's thread pools, OpenMP's
    above all, do not survive a fork)."""
    _preopened[_opened_key(model_id, path)] = _open(model_id, path)


def open_runtime(model_id: str, path: Path) -> Runtime:
    """The master's preopened runtime for this artifact when there is one, else a fresh one."""
    with contextlib.suppress(OSError):
        runtime = _preopened.pop(_opened_key(model_id, path), None)
        if runtime is not None:
            return runtime
    return _open(model_id, path)


def _open(model_id: str, path: Path) -> Runtime:
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


# -- reading a scoring body ------------------------------------------------------------------
#
# One reader for every runtime. It reads a body as ADS's generated score.py deserializes it (see
# server/demo.py), so the table it yields is what score.py would hand the model: the width and
# column checks below then hold for ADS artifacts and native models alike.

_BODY_FORMS = ('a list of rows, one row, {"data": rows}, a dict of columns ({"name": [values]}), or ADS\'s '
              '{"data": ..., "data_type": ...}')


@dataclass(frozen=True)
class Table:
    values: np.ndarray  # 2-D; float64 when every value is a number or null (null -> NaN), else object
    columns: list[str] | None  # the names a column-shaped body gives its features, in the body's order
    form: str  # "rows", "columns" (a dict of columns), "frame_json" (a DataFrame's JSON) or "array" (numpy)
    source: Any  # the rows, the dict of columns, or the DataFrame's parsed JSON, as sent


def _ads_parts(payload: Any) -> tuple[Any, Any]:
    """(data_type, data) as ADS's score.py unwraps a body: a dict's "data" key when it has one."""
    if not isinstance(payload, dict):
        return "", payload
    data_type = payload.get("data_type", "")
    if not isinstance(data_type, str):
        raise InvalidInput("data_type must be a string such as \"<class 'pandas.core.frame.DataFrame'>\"")
    return data_type, payload.get("data", payload)


def read_table(payload: Any) -> Table:
    """The body as a table; InvalidInput when it is not one."""
    data_type, data = _ads_parts(payload)
    if "numpy.ndarray" in data_type:
        array = _numpy_from_base64(data)
        if array.ndim != 2:
            raise InvalidInput(f"the numpy array has shape {list(array.shape)}; models take rows: send a 2-D "
                               "array (shape (1, n) for one row)", received=list(array.shape))
        return Table(_values(array), None, "array", data)
    if "pandas.core.series.Series" in data_type:
        raise InvalidInput("a pandas Series is one-dimensional and models take rows: send a DataFrame, a 2-D "
                           "numpy array or rows")
    if "pandas.core.frame.DataFrame" in data_type or isinstance(data, str):
        # score.py runs pd.read_json on it, which takes a file path or URL as readily as JSON: only
        # JSON text is a table here.
        try:
            parsed = json.loads(data)
        except (TypeError, ValueError, RecursionError):
            raise InvalidInput("a DataFrame is sent as its JSON text (DataFrame.to_json()); this data is not "
                               "JSON text") from None
        return _frame_table(pd.DataFrame, parsed, "frame_json")
    if isinstance(data, dict):
        return _frame_table(pd.DataFrame.from_dict, data, "columns")
    return _rows_table(data)


def refuse_resource_names(payload: Any) -> None:
    """ADS's score.py hands a string body (or a string "data") to pd.read_json, which opens it when
    it names a file, a URL or an fsspec location: a caller could read the server's files or make it
    call internal addresses (the instance metadata service). pandas' own tests decide, so exactly
    what it would open is refused."""
    data = payload.get("data") if isinstance(payload, dict) else payload
    if isinstance(data, str) and (pandas_io.is_url(data) or pandas_io.is_fsspec_url(data) or pandas_io.file_exists(data)):
        raise InvalidInput("the data names a file or URL, which the model's score.py would open; send the "
                           "table itself")


def _rows_table(data: Any) -> Table:
    if not isinstance(data, list) or not data:
        raise InvalidInput(f"expected {_BODY_FORMS}")
    try:
        values = np.asarray(data, dtype=np.float64)  # the common case: numbers (and nulls) only
    except (ValueError, TypeError):  # ragged, nested, or with strings (category names)
        if not all(isinstance(row, list) and len(row) == len(data[0]) for row in data):
            raise InvalidInput("rows must be lists of values, all of the same length") from None
        values = np.asarray(data, dtype=object)
    if values.ndim == 1:  # one row of numbers
        values = values.reshape(1, -1)
    return Table(_values(values), None, "rows", data)


def _frame_table(make_frame, source: Any, form: str) -> Table:
    """What pandas makes of `source` (as score.py does) as a table, with its column names."""
    try:
        frame = make_frame(source)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"the data cannot be read as a table: {exc}") from None
    columns = None if isinstance(frame.columns, pd.RangeIndex) else [str(c) for c in frame.columns]
    return Table(_values(frame.to_numpy()), columns, form, source)


def _values(values: Any) -> np.ndarray:
    try:
        values = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        values = np.asarray(values, dtype=object)  # strings (category names) among the values
        if not all(isinstance(v, (str, int, float, type(None))) for v in values.flat):
            raise InvalidInput("values must be numbers, strings or null") from None
    if values.ndim != 2 or 0 in values.shape:
        raise InvalidInput(f"expected rows of values (a 2-D table), received an array of shape {list(values.shape)}",
                           received=list(values.shape))
    return values


def _numpy_from_base64(data: Any) -> np.ndarray:
    try:
        array = np.load(io.BytesIO(base64.b64decode(data)), allow_pickle=False)
    except (TypeError, ValueError, EOFError, OSError):  # binascii.Error is a ValueError
        array = None
    if not isinstance(array, np.ndarray):  # an .npz archive loads as something else
        raise InvalidInput("data_type numpy.ndarray needs data to be the base64 text of numpy.save's output")
    return array


def check_features(table: Table, n_features: int | None, feature_names: list[str] | None) -> None:
    """InvalidInput unless the table's columns are the model's features and its values are finite."""
    if table.columns is not None and feature_names is not None:
        sent, known = set(table.columns), set(feature_names)
        missing = [name for name in feature_names if name not in sent]
        unexpected = [name for name in table.columns if name not in known]
        if missing or unexpected:
            raise InvalidInput(f"the columns are not the model's features: missing {missing}, unexpected {unexpected}",
                               missing=missing, unexpected=unexpected)
    width = table.values.shape[1]
    if n_features is not None and width != n_features:
        raise InvalidInput(f"expected {n_features} features per row, received {width}",
                           expected=n_features, received=width)
    if _has_infinity(table.values):
        raise InvalidInput("the input has non-finite values (Infinity); send null or NaN for a missing value")


def _has_infinity(values: np.ndarray) -> bool:
    if values.dtype == np.float64:
        return bool(np.isinf(values).any())
    return any(isinstance(v, float) and math.isinf(v) for v in values.flat)


def _native_matrix(payload: Any, runtime: Runtime) -> np.ndarray:
    """The float matrix a native model scores, its columns in the model's order."""
    table = read_table(payload)
    check_features(table, runtime.n_features, runtime.feature_names)
    if table.columns is not None and runtime.feature_names is None:
        raise InvalidInput("this model does not name its features: send rows, with the values in the order it was "
                           "trained on")
    if table.values.dtype != np.float64:
        raise InvalidInput("this model takes numbers (or null for a missing value) only")
    return _in_model_order(table, runtime.feature_names)


def _in_model_order(table: Table, feature_names: list[str] | None) -> np.ndarray:
    """The table's values with the columns in the model's feature order (rows are already)."""
    if table.columns is None or table.columns == feature_names:
        return table.values
    position = {name: i for i, name in enumerate(table.columns)}
    return table.values[:, [position[name] for name in feature_names]]


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
        self.feature_names = _schema_names(artifact_dir / "input_schema.json")
        self.n_features = len(self.feature_names) if self.feature_names else None

    def predict(self, payload: Any) -> Any:
        result = self._predict(self._checked(payload), model=self._model)
        if isinstance(result, dict) and set(result) == {"prediction"}:
            return result["prediction"]
        return result

    def _checked(self, payload: Any) -> Any:
        """The body for score.py, once checked against the input schema.

        It goes as sent, but for what the checks settle: one row becomes a list of one row (as for
        native models); named columns (a dict of columns, a DataFrame's JSON) are put in the
        schema's order, because score.py hands the model a DataFrame and a model fitted on arrays
        takes its columns by position; and nulls in a dict of numeric columns become NaN, because
        pandas makes an all-null column (one row with a missing value) an object column, which
        XGBoost and LightGBM refuse.
        """
        try:
            table = read_table(payload)
        except InvalidInput:
            if self.n_features is not None:
                raise
            refuse_resource_names(payload)
            return payload  # no input schema: a body that is not a table may be this score.py's own format
        check_features(table, self.n_features, self.feature_names)
        names = self.feature_names or table.columns
        if table.form == "rows" and not isinstance(table.source[0], list):
            data = [table.source]
        elif table.form == "columns" and table.values.dtype == np.float64 and np.isnan(table.values).any():
            data = dict(zip(names, _in_model_order(table, names).T.tolist()))
        elif table.columns is not None and table.columns != names:
            data = _in_order(table.source, names)
            if table.form == "frame_json":
                data = json.dumps(data)
        else:
            return payload
        return {**payload, "data": data} if isinstance(payload, dict) and "data" in payload else data

    @property
    def predict_proba(self) -> Callable[[Any], list] | None:
        """score.py defines predict only: probabilities come from the model load_model() gave, when
        it is a classifier, on the checked table in the schema's column order."""
        if not callable(getattr(self._model, "predict_proba", None)):
            return None

        def probabilities(payload: Any) -> list:
            table = read_table(payload)
            check_features(table, self.n_features, self.feature_names)
            matrix = _in_model_order(table, self.feature_names)
            if getattr(self._model, "feature_names_in_", None) is not None:  # fitted on a DataFrame
                matrix = pd.DataFrame(matrix, columns=self.feature_names)
            return np.asarray(self._model.predict_proba(matrix)).tolist()

        return probabilities

    def prepare(self) -> None:
        pass  # the artifact's score.py is foreign code: it predicts as it was written

    def close(self) -> None:
        sys.modules.pop(self.module_name, None)


def _in_order(columns: Any, names: list[str]) -> Any:
    """A dict of columns, or a DataFrame's records, with the columns in the order of `names`."""
    if isinstance(columns, dict):
        return {name: columns[name] for name in names}
    return [{name: record.get(name) for name in names} for record in columns]


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


def _schema_names(schema_file: Path) -> list[str] | None:
    """The input feature names in an ADS input_schema.json, when the artifact has one."""
    try:
        schema = json.loads(schema_file.read_text()).get("schema")
        return [str(column["name"]) for column in schema] or None
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return None


class SklearnRuntime:
    def __init__(self, path: Path):
        import joblib

        self._model = joblib.load(path)
        self.n_features = getattr(self._model, "n_features_in_", None)
        names = getattr(self._model, "feature_names_in_", None)  # set when fitted on a DataFrame
        self.feature_names = None if names is None else [str(name) for name in names]
        self._fast: Callable | None = None

    def prepare(self) -> None:
        """In the process that will predict (compiling checks itself by predicting; the gunicorn
        master only loads): the exact fast path, when the model has one."""
        self._fast = fastpaths.compile_sklearn(self._model)

    def predict(self, payload: Any) -> list:
        matrix = _native_matrix(payload, self)
        if self._fast is not None:
            return self._fast(matrix).tolist()
        if self.feature_names is not None:  # fitted on a DataFrame: else scikit-learn warns on every call
            matrix = pd.DataFrame(matrix, columns=self.feature_names)
        return self._model.predict(matrix).tolist()

    @property
    def predict_proba(self) -> Callable[[Any], list] | None:
        """Class probabilities, for a classifier (None otherwise: the core says so to the client)."""
        if not hasattr(self._model, "predict_proba"):
            return None

        def probabilities(payload: Any) -> list:
            matrix = _native_matrix(payload, self)
            if self.feature_names is not None:
                matrix = pd.DataFrame(matrix, columns=self.feature_names)
            return self._model.predict_proba(matrix).tolist()

        return probabilities

    def close(self) -> None:
        pass


class _BoosterRuntime:
    """A booster's raw scores, turned into class labels as the scikit-learn wrapper's predict does:
    binary classifiers compare with a threshold, multiclass ones take the argmax."""

    n_features: int | None
    feature_names: list[str] | None
    binary_threshold: float | None = None
    multiclass: bool = False

    _fast: Callable | None = None

    def library_scores(self, matrix: np.ndarray) -> np.ndarray: ...

    def compile(self) -> Callable | None: ...

    def prepare(self) -> None:
        """See SklearnRuntime.prepare."""
        self._fast = self.compile()

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        return self._fast(matrix) if self._fast is not None else self.library_scores(matrix)

    def predict(self, payload: Any) -> list:
        scores = self.scores(_native_matrix(payload, self))
        if self.binary_threshold is not None:
            return (scores > self.binary_threshold).astype(np.int64).tolist()
        if self.multiclass:
            return np.argmax(scores, axis=1).tolist()
        return scores.tolist()

    @property
    def predict_proba(self) -> Callable[[Any], list] | None:
        """Class probabilities of a classifier, as the scikit-learn wrapper's predict_proba gives
        them: a binary booster's score is the positive class's."""
        if self.binary_threshold is None and not self.multiclass:
            return None

        def probabilities(payload: Any) -> list:
            scores = self.scores(_native_matrix(payload, self))
            if self.multiclass:
                return scores.tolist()
            positive = self.binary_probability(scores)
            return np.column_stack([1 - positive, positive]).tolist()

        return probabilities

    def binary_probability(self, scores: np.ndarray) -> np.ndarray:
        return scores

    def close(self) -> None:
        pass


class XGBoostRuntime(_BoosterRuntime):
    """Booster.inplace_predict, labelled exactly as XGBClassifier.predict does."""

    def __init__(self, path: Path):
        import xgboost

        self._booster = xgboost.Booster(model_file=str(path))
        self.n_features = self._booster.num_features() or None
        self.feature_names = self._booster.feature_names  # None when fitted on an array
        objective = json.loads(self._booster.save_config())["learner"]["objective"]["name"]
        self.binary_threshold = {"binary:logistic": 0.5, "binary:logitraw": 0.0}.get(objective)
        self.multiclass = objective == "multi:softprob"

    def library_scores(self, matrix: np.ndarray) -> np.ndarray:
        return self._booster.inplace_predict(matrix)

    def compile(self) -> Callable | None:
        return fastpaths.compile_booster_xgboost(self._booster)

    def binary_probability(self, scores: np.ndarray) -> np.ndarray:
        if self.binary_threshold == 0.0:  # binary:logitraw scores are margins
            return 1 / (1 + np.exp(-scores))
        return scores


class LightGBMRuntime(_BoosterRuntime):
    """Booster.predict; classifiers answer the class index, as LGBMClassifier does for 0..k-1 labels."""

    def __init__(self, path: Path):
        import lightgbm

        self._booster = lightgbm.Booster(model_file=str(path))
        self.n_features = self._booster.num_feature() or None
        self.feature_names = self._booster.feature_name()  # Column_0... when fitted on an array
        objective = str(self._booster.params.get("objective", ""))
        self.binary_threshold = 0.5 if objective in ("binary", "cross_entropy") else None
        self.multiclass = objective in ("multiclass", "softmax", "multiclassova")

    def library_scores(self, matrix: np.ndarray) -> np.ndarray:
        return self._booster.predict(matrix)

    def compile(self) -> Callable | None:
        return fastpaths.compile_booster_lightgbm(self._booster)
