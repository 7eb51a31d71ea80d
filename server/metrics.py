"""Prometheus metrics (`GET /metrics`, scope `metrics`), correct across gunicorn's workers.

prometheus_client decides once, when it is first imported, where samples live. Under gunicorn
(gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before that import) every process writes its own
memory-mapped files in the master's private run directory, and a scrape answered by any worker
sums every process's files; the master deletes a dead worker's live gauges (gunicorn.conf.py
`child_exit`). Outside gunicorn (tests, another WSGI server) samples live in this process's default registry.

Label values are bounded: a route's template, never its path; a model and version only once a
responder resolved a real model (`req.context.model_version` set), never what a caller typed, so
unknown names cannot grow the series without bound.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder

from .auth import METRICS

if TYPE_CHECKING:
    from .core.registry import Registry

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable, set by gunicorn.conf.py
UNMATCHED = "unmatched"  # the endpoint of a request no route matched

# 0.5 ms (an empty answer) to 30 s (a predict at its default deadline).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

_REQUEST = ("protocol", "endpoint", "model", "version")
REQUESTS = Counter("mis_requests", "HTTP requests answered.", (*_REQUEST, "code"))
REQUEST_DURATION = Histogram("mis_request_duration_seconds", "Time from the request reaching the app to its answer.",
                             _REQUEST, buckets=LATENCY_BUCKETS)
IN_FLIGHT = Gauge("mis_requests_in_flight", "Requests the app is working on.", multiprocess_mode="livesum")
MODEL_LOAD_DURATION = Histogram("mis_model_load_duration_seconds", "Time to load a model into a worker.", ("model",),
                                buckets=LOAD_BUCKETS)
MODEL_LOAD_FAILURES = Counter("mis_model_load_failures", "Model loads that failed.", ("model",))
# The server's loaded set lives in the shared store and every worker sees all of it, so summing the
# workers would count each model once per worker. The worker answering a scrape reads the set then
# (`Metrics.on_get`): its value is the most recent one written, and a dead worker's is dropped.
MODELS_LOADED = Gauge("mis_models_loaded", "Models loaded on this server (every worker serves each).",
                      multiprocess_mode="livemostrecent")
MODEL_EVICTIONS = Counter("mis_model_evictions", "Models a worker unloaded to stay within MIS_MAX_LOADED_MODELS.",
                          ("model",))
MODEL_QUARANTINES = Counter("mis_model_quarantines", "Models quarantined (timeouts or worker deaths).", ("model",))
PREDICT_DURATION = Histogram("mis_predict_duration_seconds", "Time in a model's predict, for the predicts that answered.",
                             ("model", "version"), buckets=LATENCY_BUCKETS)
ENV_MISMATCHES = Counter("mis_model_env_mismatches", "Loads of a model whose artifact does not match this server's "
                         "environment (MIS_ENV_COMPAT=warn).", ("model",))
SHADOW_REQUESTS = Counter("mis_shadow_requests", "Mirrored (shadow) calls by outcome.", ("model", "version", "outcome"))
SHADOW_DURATION = Histogram("mis_shadow_duration_seconds", "Time of a mirrored (shadow) call.", ("model", "version"),
                            buckets=LATENCY_BUCKETS)

# Label children by label values: `labels()` validates and takes a lock on every call, a dict
# lookup does not. The keys are bounded (see above); a race only builds the same child twice.
_request_children: dict[tuple, tuple] = {}
_predict_children: dict[tuple, object] = {}


def protocol_of(path: str) -> str:
    if path.startswith("/api/v1/") or path == "/api/v1":
        return "v1"
    if path.startswith("/v2/") or path == "/v2":
        return "v2"
    return "other"


def request_done(protocol: str, endpoint: str, model: str, version: str, code: int, seconds: float) -> None:
    key = (protocol, endpoint, model, version, code)
    children = _request_children.get(key)
    if children is None:
        children = _request_children[key] = (REQUESTS.labels(*key), REQUEST_DURATION.labels(*key[:4]))
    children[0].inc()
    children[1].observe(seconds)


def predicted(model: str, version: str, seconds: float) -> None:
    key = (model, version)
    child = _predict_children.get(key)
    if child is None:
        child = _predict_children[key] = PREDICT_DURATION.labels(model, version)
    child.observe(seconds)


def model_loaded(model: str, seconds: float) -> None:
    MODEL_LOAD_DURATION.labels(model).observe(seconds)


def model_load_failed(model: str) -> None:
    MODEL_LOAD_FAILURES.labels(model).inc()


def model_evicted(model: str) -> None:
    MODEL_EVICTIONS.labels(model).inc()


def model_quarantined(model: str) -> None:
    MODEL_QUARANTINES.labels(model).inc()


def env_mismatch(model: str) -> None:
    """A model loaded although its artifact does not match this server's environment (MIS_ENV_COMPAT=warn)."""
    ENV_MISMATCHES.labels(model).inc()


def shadow(model: str, version: str, outcome: str, seconds: float | None) -> None:
    """One mirrored call: `outcome` is "ok", "error", "dropped" or an error code; `seconds` None
    for one that never ran (dropped)."""
    SHADOW_REQUESTS.labels(model, version, outcome).inc()
    if seconds is not None:
        SHADOW_DURATION.labels(model, version).observe(seconds)


class Metrics:
    """GET /metrics: every worker's samples, summed, in the format the scraper asks for."""

    scope = METRICS

    def __init__(self, registry: Registry):
        self.registry = registry
        if os.environ.get(MULTIPROC_DIR):
            self.collectors = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.collectors)  # reads the files at each scrape
        else:
            self.collectors = REGISTRY

    def on_get(self, req, resp):
        MODELS_LOADED.set(len(self.registry.loaded_ids()))
        encode, content_type = choose_encoder(req.get_header("Accept"))
        resp.content_type = content_type
        resp.data = encode(self.collectors)
