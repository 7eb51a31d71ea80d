"""Cross-cutting concerns of every route, once: request ids, authentication, access and audit lines
(server/logs.py writes them), request metrics (server/metrics.py keeps them).

A resource says what it needs with two class attributes: `scope` (None: open to everyone, e.g.
health; otherwise the API key scope its operations need) and `audit` (the name of the state change
it makes, e.g. "upload"; absent for reads). Nothing else decides who may do what, or what is
audited.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from . import metrics
from .auth import Caller, Gate
from .errors import Forbidden
from .logs import log_request

REQUEST_ID_HEADER = "X-Request-ID"
# Set by our worker (server/worker.py), which reads every request's head before the app runs.
REQUEST_ID_ENVIRON = "mis.request_id"
ADMISSION_ENVIRON = "mis.admission"
# Set by our worker when it answered for the app (504, 500): that answer is the one counted.
ANSWERED_ENVIRON = "mis.answered"


@dataclass(frozen=True)
class Admission:
    """What a request's head settles before its body is read (App.admit): how many body bytes it
    may send, who sent it, and the state change it asks for (for the worker's own refusals' logs)."""

    body_limit: int
    caller: Caller | None = None
    audit: str | None = None
    resource: object = None  # the route it was admitted to
    route: str | None = None  # that route's URI template (a metrics label)


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # a client's own id is kept only if it is this tame


def choose_request_id(header: str | None) -> str:
    return header if header and _REQUEST_ID.match(header) else os.urandom(16).hex()


class Observe:
    """Gives each request an id (the client's X-Request-ID when sane), then logs and counts it once
    answered."""

    def process_request(self, req, resp):
        req.context.started = time.perf_counter()
        req.context.request_id = req.env.get(REQUEST_ID_ENVIRON) or choose_request_id(req.get_header(REQUEST_ID_HEADER))
        req.context.caller = None
        req.context.model_id = None
        req.context.model_version = None  # set with model_id by a responder that resolved a real model
        resp.set_header(REQUEST_ID_HEADER, req.context.request_id)
        metrics.IN_FLIGHT.inc()

    def process_resource(self, req, resp, resource, params):
        req.context.model_id = params.get("model_id") or req.get_param("model_id")

    def process_response(self, req, resp, resource, req_succeeded):
        context = req.context
        log_request(request_id=context.request_id, method=req.method, path=req.path, status=resp.status_code,
                    started=context.started, client=req.remote_addr, caller=context.caller,
                    model=context.model_id, audit=getattr(resource, "audit", None))
        metrics.IN_FLIGHT.dec()
        if ANSWERED_ENVIRON in req.env:
            return
        # model_id alone may still be what the caller typed: it labels nothing until resolved
        resolved = context.model_version is not None
        metrics.request_done(metrics.protocol_of(req.path), req.uri_template or metrics.UNMATCHED,
                             context.model_id if resolved else "", context.model_version if resolved else "",
                             resp.status_code, time.perf_counter() - context.started)


class Authenticate:
    """Admits a request to its resource only with a key holding the resource's scope."""

    def __init__(self, gate: Gate):
        self.gate = gate

    def process_resource(self, req, resp, resource, params):
        admitted = req.env.get(ADMISSION_ENVIRON)
        if admitted is not None and admitted.resource is resource:  # the worker admitted it to this very route
            req.context.caller = admitted.caller
            return
        try:
            req.context.caller = self.gate.admit(getattr(resource, "scope", None), req.get_header("Authorization"))
        except Forbidden as exc:
            req.context.caller = exc.caller  # known, if not allowed: the logs name it
            raise
