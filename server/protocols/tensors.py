"""The Open Inference Protocol's tensors, as its REST and gRPC forms share them: a request's input
tensors become the table the core scores, and what the model gives becomes output tensors.

A request's tensors become a table for the model: one tensor of shape [rows, features] (or
[features] for one row), or one tensor per feature, named as the model names its features, each of
shape [rows] or [rows, 1]. Outputs: `predict` (labels or values) and, for a classifier,
`predict_proba` (one probability per class). Numbers (labels included) are FP64, text is BYTES: one
datatype per output, whatever the framework, so metadata and answers agree. A prediction that is no
tensor (a score.py may answer anything JSON) is a BYTES tensor holding its JSON text.
"""

from __future__ import annotations

import struct
from math import prod
from typing import Any

import numpy as np

from ..core.models import Signature
from ..errors import BadRequest, InvalidInput
from .common import model_answer_json

MAX_DIMENSIONS = 8
MAX_NAME = 256  # characters of an input's name, as of a request's id

# V2 datatypes and the numpy types that carry them (little-endian in binary data, as the spec says).
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
# What JSON data of each kind of datatype may hold (numpy's kind of the parsed data).
_JSON_KINDS = {"b": "b", "i": "biu", "u": "biu", "f": "biuf", "O": "U"}
# An ADS schema's dtypes, as V2 datatypes.
_SCHEMA_DATATYPES = {"float64": "FP64", "float32": "FP32", "int64": "INT64", "int32": "INT32", "bool": "BOOL",
                     "object": "BYTES", "category": "BYTES", "string": "BYTES"}


# -- tensors in -------------------------------------------------------------------------------


def _parameters(owner: dict, where: str) -> dict:
    parameters = owner.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"{where}: parameters must be an object")
    return parameters


def _flag(parameters: dict, name: str, where: str, default: bool) -> bool:
    value = parameters.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{where}: parameters.{name} must be true or false")
    return value


def _tensor_head(tensor: Any, index: int) -> tuple[str, list[int], str]:
    if not isinstance(tensor, dict):
        raise BadRequest(f"inputs[{index}] must be an object with name, shape, datatype and data")
    name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        raise BadRequest(f"inputs[{index}]: name must be a string of 1 to {MAX_NAME} characters")
    if (not isinstance(shape, list) or len(shape) > MAX_DIMENSIONS
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in shape)):
        raise BadRequest(f"input {name!r}: shape must be a list of at most {MAX_DIMENSIONS} non-negative integers "
                         "below 2**31")
    if not isinstance(datatype, str) or datatype not in DATATYPES:  # a list or object is no dict key
        raise BadRequest(f"input {name!r}: datatype must be one of {', '.join(DATATYPES)}, not {datatype!r}")
    return name, shape, datatype


def _from_json(name: str, data: Any, datatype: str, count: int) -> np.ndarray:
    dtype = DATATYPES[datatype]
    try:
        values = np.asarray(data).reshape(-1)  # nested (row-major) or flat, as the spec allows
    except ValueError:
        raise BadRequest(f"input {name!r}: data is ragged or nested too deep; send it flat or as nested lists of "
                         "equal length") from None
    if values.size != count:
        raise BadRequest(f"input {name!r}: shape holds {count} elements, data has {values.size}")
    if values.size and values.dtype.kind not in _JSON_KINDS.get(dtype.kind, ""):
        raise BadRequest(f"input {name!r}: data does not fit datatype {datatype}")
    if dtype.kind in "iu" and values.size:
        limits = np.iinfo(dtype)
        if values.min() < limits.min or values.max() > limits.max:
            raise BadRequest(f"input {name!r}: a value is out of {datatype}'s range")
    return values.astype(dtype)


def _from_binary(name: str, raw: memoryview, datatype: str, count: int) -> np.ndarray:
    if datatype != "BYTES":
        dtype = DATATYPES[datatype]
        if len(raw) != count * dtype.itemsize:
            raise BadRequest(f"input {name!r}: {len(raw)} bytes of binary data for {count} {datatype} elements")
        return np.frombuffer(raw, dtype=dtype)
    items, offset = [], 0
    while offset < len(raw):  # each element: its length (4 bytes, little-endian), then its bytes
        if offset + 4 > len(raw):
            raise BadRequest(f"input {name!r}: binary BYTES data ends inside an element's length")
        (size,) = struct.unpack_from("<I", raw, offset)
        element = bytes(raw[offset + 4:offset + 4 + size])
        if len(element) != size:
            raise BadRequest(f"input {name!r}: binary BYTES data ends inside an element")
        try:
            items.append(element.decode())
        except UnicodeDecodeError:
            raise BadRequest(f"input {name!r}: a BYTES element is not UTF-8 text") from None
        offset += 4 + size
    if len(items) != count:
        raise BadRequest(f"input {name!r}: shape holds {count} elements, binary data has {len(items)}")
    return np.asarray(items, dtype=object)


def read_inputs(request: dict, binary: memoryview) -> list[tuple[str, np.ndarray]]:
    """The request's input tensors as (name, array of its shape)."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("the request needs `inputs`, a non-empty list of tensors")
    tensors, offset = [], 0
    for index, tensor in enumerate(inputs):
        name, shape, datatype = _tensor_head(tensor, index)
        count = prod(shape)
        size = _parameters(tensor, f"input {name!r}").get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise BadRequest(f"input {name!r}: binary_data_size {size!r} does not fit the binary data sent")
            values = _from_binary(name, binary[offset:offset + size], datatype, count)
            offset += size
        elif "data" in tensor:
            values = _from_json(name, tensor["data"], datatype, count)
        else:
            raise BadRequest(f"input {name!r} has neither data nor parameters.binary_data_size")
        try:
            tensors.append((name, values.reshape(shape)))
        except ValueError as exc:  # numpy's own limits on a shape's size
            raise BadRequest(f"input {name!r}: shape {shape} cannot be held: {exc}") from None
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data belong to no input")
    return tensors


def model_payload(tensors: list[tuple[str, np.ndarray]], feature_names: list[str] | None) -> Any:
    """The table the core scores: rows from one tensor, or a dict of columns from one tensor per
    feature (one tensor named as the model's feature is that feature's column)."""
    if len(tensors) == 1 and tensors[0][0] not in (feature_names or ()):
        name, values = tensors[0]
        if values.ndim not in (1, 2):
            raise InvalidInput(f"input {name!r} has shape {list(values.shape)}: send [rows, features], or [features] "
                               "for one row")
        return values.tolist()
    columns, rows = {}, None
    for name, values in tensors:
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1 or rows not in (None, len(values)):
            raise InvalidInput(f"input {name!r} has shape {list(values.shape)}: with one input per feature, each is "
                               "[rows] or [rows, 1], all with the same rows")
        rows = len(values)
        columns[name] = values.tolist()
    return columns


# -- tensors out ------------------------------------------------------------------------------


def output_tensor(model_id: str, name: str, prediction: Any) -> tuple[dict, np.ndarray]:
    try:
        values = np.asarray(prediction)
    except ValueError:  # ragged
        values = None
    if values is None or values.dtype.kind not in "biufU":
        values = np.asarray([model_answer_json(model_id, prediction).decode()], dtype=object)
    if values.dtype.kind in "biuf":  # labels too: what a model answers must match its metadata
        datatype, values = "FP64", values.astype("<f8")
    else:
        datatype, values = "BYTES", values.astype(object)
    return {"name": name, "datatype": datatype, "shape": list(values.shape)}, values


def binary_data(values: np.ndarray) -> bytes:
    if values.dtype != object:
        return values.tobytes()
    encoded = [str(v).encode() for v in values.reshape(-1)]
    return b"".join(struct.pack("<I", len(e)) + e for e in encoded)


def requested_outputs(request: dict, available: tuple[str, ...]) -> list[tuple[str, bool]]:
    """(output name, as binary data) for each output asked for; every output when none is, as the
    protocol says."""
    binary_default = _flag(_parameters(request, "the request"), "binary_data_output", "the request", False)
    asked = request.get("outputs")
    if asked is None:
        return [(name, binary_default) for name in available]
    if not isinstance(asked, list) or not asked or not all(isinstance(o, dict) for o in asked):
        raise BadRequest("`outputs` must be a non-empty list of objects with a name")
    wanted = {}
    for output in asked:
        name = output.get("name")
        if name not in available:
            raise BadRequest(f"this model gives the outputs {', '.join(available)}, not {name!r}")
        if name in wanted:
            raise BadRequest(f"output {name!r} is asked for twice")
        wanted[name] = _flag(_parameters(output, f"output {name!r}"), "binary_data", f"output {name!r}", binary_default)
    return list(wanted.items())


# -- metadata -------------------------------------------------------------------------------


def _datatype(dtype: str | None, default: str) -> str:
    return _SCHEMA_DATATYPES.get(dtype or "", default)


def model_metadata(name: str, versions: list[str], signature: Signature, platform: str,
                   aliases: list[str]) -> dict:
    """Inputs as the model takes them: one [rows, features] tensor when every feature is a number,
    else one tensor per feature."""
    types = {n: _datatype(signature.feature_types.get(n), "FP64") for n in signature.feature_names or []}
    if signature.feature_names and any(t == "BYTES" for t in types.values()):
        inputs = [{"name": n, "datatype": types[n], "shape": [-1]} for n in signature.feature_names]
    else:
        inputs = [{"name": "input-0", "datatype": "FP64", "shape": [-1, signature.n_features or -1]}]
    text = _datatype(signature.output_type, "FP64") == "BYTES"  # a number of any kind is sent as FP64
    outputs = [{"name": "predict", "datatype": "BYTES" if text else "FP64", "shape": [-1]}]
    if "predict_proba" in signature.outputs:
        outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, -1]})
    return {"name": name, "versions": versions, "platform": platform, "inputs": inputs, "outputs": outputs,
            "parameters": {"aliases": aliases}}
