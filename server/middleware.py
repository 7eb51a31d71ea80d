"""Cross-cutting concerns of every route, once: request ids, authentication, access and audit logs.

A resource says what it needs with two class attributes: `scope` (None: open to everyone, e.g.
health; otherwise the API key scope its operations need) and `audit` (the name of the state change
it makes, e.g. "upload"; absent for reads). Nothing else decides who may do what, or what is
audited.

Access and audit lines are single JSON objects, written to stdout apart from the diagnostic log
(stderr), for a log shipper to parse. They never hold a body, a header value or a key: only the
key's name.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid

from .auth import Caller, Gate
from .errors import Forbidden

access_log = logging.getLogger("mis.access")
audit_log = logging.getLogger("mis.audit")

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_ENVIRON = "mis.request_id"  # set by our worker (server/worker.py), which logs what it answers itself
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # a client's own id is kept only if it is this tame
PATH_LOGGED = 512  # characters of a request path the logs keep


def configure_json_logs() -> None:
    """Access and audit lines go to stdout as bare JSON, not through the diagnostic format."""
    for logger in (access_log, audit_log):
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False


def choose_request_id(header: str | None) -> str:
    return header if header and _REQUEST_ID.match(header) else uuid.uuid4().hex


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
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    return json.dumps({"time": stamp, "log": kind, **fields}, default=str)


class Observe:
    """Gives each request an id (the client's X-Request-ID when sane), then logs it once answered."""

    def process_request(self, req, resp):
        req.context.started = time.perf_counter()
        req.context.request_id = req.env.get(REQUEST_ID_ENVIRON) or choose_request_id(req.get_header(REQUEST_ID_HEADER))
        req.context.caller = None
        req.context.model_id = None
        resp.set_header(REQUEST_ID_HEADER, req.context.request_id)

    def process_resource(self, req, resp, resource, params):
        req.context.model_id = params.get("model_id") or req.get_param("model_id")

    def process_response(self, req, resp, resource, req_succeeded):
        log_request(request_id=req.context.request_id, method=req.method, path=req.path, status=resp.status_code,
                    started=req.context.started, client=req.remote_addr, caller=req.context.caller,
                    model=req.context.model_id, audit=getattr(resource, "audit", None))


class Authenticate:
    """Admits a request to its resource only with a key holding the resource's scope."""

    def __init__(self, gate: Gate):
        self.gate = gate

    def process_resource(self, req, resp, resource, params):
        try:
            req.context.caller = self.gate.admit(getattr(resource, "scope", None), req.get_header("Authorization"))
        except Forbidden as exc:
            req.context.caller = exc.caller  # known, if not allowed: the logs name it
            raise
