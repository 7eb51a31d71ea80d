"""Reading a scoring body, for every runtime: one reader (`read_table`) and one check
(`check_features`), for ADS artifacts and native models alike, and the float matrix a native
model scores (`native_matrix`). Missing values: null and NaN mean "missing" and reach the model as
NaN; +/-Infinity is refused (422).

The reader reads a body as ADS's generated score.py deserializes it (see server/ads_builder.py), so
the table it yields is what score.py would hand the model: the width and column checks then hold
for ADS artifacts and native models alike.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pandas.io.common as pandas_io  # what read_json opens rather than parses

from ..errors import InvalidInput
from .base import Runtime

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


def native_matrix(payload: Any, runtime: Runtime) -> np.ndarray:
    """The float matrix a native model scores, its columns in the model's order."""
    table = read_table(payload)
    check_features(table, runtime.n_features, runtime.feature_names)
    if table.columns is not None and runtime.feature_names is None:
        raise InvalidInput("this model does not name its features: send rows, with the values in the order it was "
                           "trained on")
    if table.values.dtype != np.float64:
        raise InvalidInput("this model takes numbers (or null for a missing value) only")
    return in_model_order(table, runtime.feature_names)


def in_model_order(table: Table, feature_names: list[str] | None) -> np.ndarray:
    """The table's values with the columns in the model's feature order (rows are already)."""
    if table.columns is None or table.columns == feature_names:
        return table.values
    position = {name: i for i, name in enumerate(table.columns)}
    return table.values[:, [position[name] for name in feature_names]]
