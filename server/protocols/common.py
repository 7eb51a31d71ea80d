"""What every protocol shares: reading bodies, JSON in and out, the error body, and accounting for a
request once answered (its access line and its metrics), wherever it was answered."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import orjson

from .. import metrics
from ..auth import Caller
from ..errors import BadRequest, ModelPredictFailed, PayloadTooLarge, UnsupportedMediaType
from ..logs import log_request

if TYPE_CHECKING:  # the worker imports this module for its own answers: it must not load the core
    from ..core.routing import Target

JSON_TYPES = ("application/json", "text/json")


def error_document(message: str, code: str) -> dict:
    """The body of every error answer: {"error": what was wrong, "code": a machine code}."""
    return {"error": message, "code": code}


def account(*, request_id: str, method: str | None, path: str | None, status: int, started: float,
            client: str | None, caller: Caller | None, audit: str | None, route: str | None,
            model_id: str | None = None, model_version: str | None = None, counted: bool = True) -> None:
    """An answered request's access (and audit) line and, when `counted`, its metrics. Its model
    labels the metrics only once resolved (`model_version` known): before, it is what the caller typed."""
    log_request(request_id=request_id, method=method, path=path, status=status, started=started, client=client,
                caller=caller, model=model_id, audit=audit)
    if counted:
        resolved = model_version is not None
        metrics.request_done(metrics.protocol_of(path or ""), route or metrics.UNMATCHED,
                             model_id if resolved else "", model_version if resolved else "",
                             status, time.perf_counter() - started)


def to_json(value) -> bytes:
    """Strict JSON, fast: orjson writes numpy values natively and a model's NaN or +/-Infinity as
    null (JSON has neither); other numpy-likes go through tolist()."""
    return orjson.dumps(value, default=_tolist, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def model_answer_json(model_id: str, answer) -> bytes:
    """`answer` (holding what a model predicted) as JSON; a prediction that is no JSON is the
    model's failure, answered as such, not the server's."""
    try:
        return to_json(answer)
    except TypeError as exc:  # orjson.JSONEncodeError is one
        raise ModelPredictFailed(f"model {model_id!r} answered something that is not JSON", model_id=model_id,
                                 private=str(exc)) from None


def _tolist(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def resolve(req, registry, name: str, version: str | None) -> Target:
    """The loaded model a request for `name` (and a version or alias) goes to, named in the
    request's context for its log line and metrics labels."""
    target = registry.resolve(name, version)
    req.context.model_id, req.context.model_version = target.model_id, target.version
    return target


def check_length(req, limit: int, what: str) -> None:
    if req.content_length is not None and req.content_length > limit:
        raise PayloadTooLarge(f"{what} of {req.content_length} bytes is over the limit of {limit} bytes", limit=limit)


def read_body(req, limit: int, binary: bool = False) -> bytes:
    """The request body, read no further than `limit` bytes: JSON, or also binary data when
    `binary` (V2's binary tensor data extension)."""
    content_type = (req.content_type or "application/json").split(";")[0].strip().lower()
    json_type = content_type in JSON_TYPES or content_type.endswith("+json")
    if not json_type and not (binary and content_type == "application/octet-stream"):
        raise UnsupportedMediaType(f"the body must be application/json, not {content_type!r}")
    check_length(req, limit, "the body")
    raw = req.bounded_stream.read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLarge(f"the body is over the limit of {limit} bytes", limit=limit)
    return raw


def parse_json(raw: bytes | memoryview):
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass  # not strict JSON: the standard library also reads NaN and Infinity, and says what is wrong
    try:
        parsed = json.loads(bytes(raw))
        orjson.dumps(parsed)  # what orjson refused may hold a lone surrogate (\ud800), which no answer could echo
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    except TypeError:  # orjson.JSONEncodeError
        raise BadRequest("the body is not valid JSON: it has a string that is not Unicode text (a lone surrogate) "
                         "or nests deeper than 255 levels") from None
    return parsed


def read_json(req, limit: int):
    """The request body as JSON, read no further than `limit` bytes."""
    return parse_json(read_body(req, limit))
