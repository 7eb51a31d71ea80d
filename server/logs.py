"""The JSON lines for a log shipper: `access` (one per request), `audit` (one per state change,
asked for by a caller or made by the server itself) and `shadow` (what a shadow model answered to a
mirrored request). Written to stdout apart from the diagnostic log (stderr); never a body, a header
value or a key, only a key's name.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from .auth import Caller

access_log = logging.getLogger("mis.access")
audit_log = logging.getLogger("mis.audit")
shadow_log = logging.getLogger("mis.shadow")

PATH_LOGGED = 512  # characters of a request path the logs keep
PREDICTION_LOGGED = 1024  # characters of a shadow model's answer the logs keep (one line stays one write)


class _JsonLines(logging.Handler):
    """A record's message is a finished JSON line: one write(2) on stdout, which a line under
    PIPE_BUF makes whole even with several threads and processes writing, and nothing to flush."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            os.write(1, record.msg.encode() + b"\n")
        except OSError:
            self.handleError(record)


def configure_json_logs() -> None:
    """Access and audit lines go to stdout as bare JSON, not through the diagnostic format."""
    for logger in (access_log, audit_log, shadow_log):
        if not logger.handlers:
            logger.addHandler(_JsonLines())
            logger.setLevel(logging.INFO)
            logger.propagate = False


def log_request(*, request_id: str, method: str | None, path: str | None, status: int, started: float, client: str | None,
                caller: Caller | None, model: str | None, audit: str | None) -> None:
    """One access line per request, and an audit line when the request asked for a state change
    (refused or not: a denied attempt is as worth keeping as a done one)."""
    who = caller.name if caller else None
    access_log.info(_line("access", request_id=request_id, method=method, path=path and path[:PATH_LOGGED], status=status,
                          latency_ms=round(1000 * (time.perf_counter() - started), 3), key=who, client=client,
                          model=model))
    if audit:
        result = "ok" if status < 400 else ("denied" if status in (401, 403) else "failed")
        audit_log.info(_line("audit", request_id=request_id, action=audit, key=who, client=client, model=model,
                             result=result, status=status))


def _line(kind: str, **fields) -> str:
    now = time.time()
    stamp = f"{_second(int(now))}.{int(now % 1 * 1000):03d}Z"
    return orjson.dumps({"time": stamp, "log": kind, **fields}, default=str).decode()


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def audit_server_change(action: str, model: str, **details) -> None:
    """A state change the server made on its own (a quarantine): no caller, no request."""
    audit_log.info(_line("audit", request_id=None, action=action, key=None, client=None, model=model, result="ok",
                         **details))


def log_shadow(*, request_id: str | None, model: str, outcome: str, primary: str, prediction=None, **details) -> None:
    """What a shadow model answered to a mirrored request (its caller got the primary's answer)."""
    fields = {"prediction": orjson.dumps(prediction, default=str).decode()[:PREDICTION_LOGGED]} if outcome == "ok" else {}
    shadow_log.info(_line("shadow", request_id=request_id, model=model, primary=primary, outcome=outcome,
                          **details, **fields))
