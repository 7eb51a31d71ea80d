"""Cross-cutting concerns of every route, once: request ids, authentication, access and audit lines
(server/logs.py writes them), request metrics (server/metrics.py keeps them).

A resource says what it needs with two class attributes: `scope` (None: open to everyone, e.g.
health; otherwise the API key scope its operations need) and `audit` (the name of the state change
it makes, e.g. "upload"; absent for reads). Nothing else decides who may do what, or what is
audited.
"""

from __future__ import annotations

import time

from . import metrics
from .auth import Gate
from .errors import Forbidden
from .hosting import ADMISSION_ENVIRON, ANSWERED_ENVIRON, REQUEST_ID_ENVIRON, REQUEST_ID_HEADER, choose_request_id
from .protocols.common import account


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
        metrics.IN_FLIGHT.dec()
        account(request_id=context.request_id, method=req.method, path=req.path, status=resp.status_code,
                started=context.started, client=req.remote_addr, caller=context.caller,
                audit=getattr(resource, "audit", None), route=req.uri_template, model_id=context.model_id,
                model_version=context.model_version, counted=ANSWERED_ENVIRON not in req.env)


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
