"""Composition root: builds the catalog, storage and registry from the config and routes /api/v1 and
the Open Inference Protocol (/v2) to the same core."""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import falcon
import falcon.media

from . import __version__, metrics
from .auth import ADMIN, ApiKeys, Gate
from .backends.local_catalog import LocalCatalog
from .backends.local_store import LocalQuarantine, local_storage
from .backends.store_dir import StoreDir
from .catalog import Catalog
from .config import Config
from .core.registry import Policy, Registry
from .environment import ServerEnvironment
from .errors import MISError
from .guard import PredictGuard, inflight_path, models_in_flight
from .hosting import Admission, choose_request_id
from .logs import audit_server_change, configure_json_logs
from .middleware import Authenticate, Observe
from .openapi import add_docs_routes
from .protocols import v1, v2
from .protocols.common import account, error_document, to_json
from .storage import Storage
from .warmup import Warmup

log = logging.getLogger(__name__)


def build_backends(config: Config, background: bool = True) -> tuple[Catalog, Storage]:
    """The catalog and the storage the config names. On OCI they share one set of credentials, and
    building them raises ConfigError when there are none. `background=False` (the gunicorn master)
    starts no refresher threads: the master forks."""
    storage = local_storage(config.store_dir, config.max_artifact_bytes)
    catalog: Catalog = LocalCatalog(config.catalog_dir)
    if "oci" not in (config.catalog, config.store):
        return catalog, storage
    import oci  # only where a backend is on OCI: the SDK takes a while to import

    from .backends.oci_catalog import OciCatalog
    from .backends.oci_clients import DATA_SCIENCE, OBJECT_STORAGE, OciSettings, Service, client, credentials
    from .backends.oci_store import Bucket, OciState, OciUploads

    settings = OciSettings(
        auth=config.oci_auth, config_file=config.oci_config_file, profile=config.oci_profile,
        region=config.oci_region, data_science_endpoint=config.oci_data_science_endpoint,
        object_storage_endpoint=config.oci_object_storage_endpoint, timeout_s=config.oci_timeout_s,
        attempts=config.oci_attempts, budget_s=max(1.0, config.timeout_s - 1.0),  # inside the request's deadline
    )
    creds = credentials(settings)
    refresh_s = metadata_trust_s(config)
    if config.catalog == "oci":
        sdk = client(oci.data_science.DataScienceClient, settings, settings.data_science_endpoint, creds)
        catalog = OciCatalog(Service(DATA_SCIENCE, sdk, settings), config.oci_compartment_id, config.oci_project_id,
                             config.data_dir / "cache" / "catalog", config.max_artifact_bytes, refresh_s, background)
    if config.store == "oci":
        sdk = client(oci.object_storage.ObjectStorageClient, settings, settings.object_storage_endpoint, creds)
        bucket = Bucket(Service(OBJECT_STORAGE, sdk, settings), config.oci_namespace, config.oci_bucket)
        # The bucket holds the uploads and the shared state; the workspace and the quarantine stay
        # this replica's own (server/backends/oci_store.py says why), as do its copies of artifacts.
        uploads = OciUploads(bucket, storage.uploads, config.max_artifact_bytes, refresh_s, background)
        storage = replace(storage, uploads=uploads, state=OciState(bucket, config.state_ttl_s, background))
    return catalog, storage


def metadata_trust_s(config: Config) -> float:
    """How long a worker trusts a loaded model's metadata. A remote backend's copy is itself up to
    as old as it re-reads it (it does so every half TTL): each trusts half, so an `env` edit gates
    within MIS_METADATA_TTL_S in all."""
    remote = "oci" in (config.catalog, config.store)
    return config.metadata_ttl_s / 2 if remote else config.metadata_ttl_s


def check_backends(config: Config) -> None:
    """Once, at start: credentials that cannot work, or a compartment or bucket they cannot reach,
    stop the server (ConfigError naming what to set). A service that is only down does not."""
    catalog, storage = build_backends(config, background=False)
    if config.catalog == config.store == "local":
        return
    from .backends.oci_clients import check_start

    if config.catalog == "oci":
        check_start(catalog.service, catalog.probe,
                    f"set MIS_OCI_COMPARTMENT_ID to a compartment these credentials may read models of "
                    f"(now {config.oci_compartment_id})")
    if config.store == "oci":
        bucket = storage.state.bucket
        check_start(bucket.service, bucket.probe,
                    f"set MIS_OCI_BUCKET (and MIS_OCI_NAMESPACE) to a bucket these credentials may use "
                    f"(now {config.oci_bucket})")


def build_registry(config: Config, inflight_file: Path | None = None, on_stuck=None,
                   background: bool = True) -> Registry:
    """The core from the config; under gunicorn, `inflight_file` lets the master blame a model for a
    worker's death and `on_stuck` recycles a worker whose predict threads are stuck."""
    guard = PredictGuard(timeout_s=config.predict_timeout_s, threads=config.threads,
                         output_bytes=config.model_output_bytes, recycle_after_s=config.timeout_s,
                         inflight_file=inflight_file, on_stuck=on_stuck)
    policy = Policy(
        env=config.env,
        metadata_ttl_s=metadata_trust_s(config),
        max_upload_bytes=config.max_upload_bytes,
        quarantine_strikes=config.quarantine_strikes,
        quarantine_window_s=config.quarantine_window_s,
        environment=ServerEnvironment.detect(config.conda_slug),
        env_compat=config.env_compat,
        upload_envs=config.upload_envs,
        max_in_memory=config.max_loaded_models,
        pinned=frozenset(config.preload or ()),
    )
    return Registry(*build_backends(config, background), guard, policy)


def build_gate(config: Config) -> Gate:
    """Raises KeysFileError when the keys file cannot be used: the server must not start so."""
    return Gate(ApiKeys(config.api_keys_file) if config.api_keys_file else None)


# Built by the gunicorn master before it forks (gunicorn.conf.py), and brought up to date before
# each fork: a worker starts from the keys the master last read, so a keys file that broke after
# the start (keeping the last good keys, as running workers do) cannot stop a new worker booting.
_master_gate: Gate | None = None


def build_master_gate(config: Config) -> Gate:
    global _master_gate
    _master_gate = build_gate(config)
    return _master_gate


# Each protocol's wording of what a client can do about an error (errors.Remedy), by metrics.protocol_of.
HINTS = {"v1": v1.HINTS, "v2": v2.HINTS}


class App(falcon.App):
    """falcon.App that also answers the worker (server/worker.py, through server/hosting.py), from a
    request's head alone, how large a body it may send and whether its caller may call the route at
    all: an oversized body is refused while it streams in, and a caller without the route's scope
    before a byte of the body is stored."""

    def __init__(self, config: Config, gate: Gate):
        super().__init__(middleware=[Observe(), Authenticate(gate)])
        self.gate = gate
        self.error_detail = config.error_detail
        self.max_body_bytes = config.max_body_bytes
        self.on_drain = lambda: None  # the worker calls it first when told to leave (readiness turns false)
        self.on_shutdown = lambda: None  # the worker calls it when it leaves in order
        self.add_error_handler(Exception, self._unexpected)
        self.add_error_handler(falcon.HTTPError, self._http_error)
        self.add_error_handler(MISError, self._mis_error)

    def admit(self, path: str, *, method: str = "POST", authorization: str | None = None,
              request_id: str | None = None, client: str | None = None) -> Admission:
        """Raises the MISError to answer instead (401, 403), having logged and counted it."""
        if len(path) > 1 and path.endswith("/"):  # as Falcon does with strip_url_path_trailing_slash
            path = path[:-1]
        route = self._router.find(path)  # Falcon's own lookup: what routes here is what is checked
        resource = route[0] if route else None
        scope, audit = getattr(resource, "scope", None), getattr(resource, "audit", None)
        try:
            caller = self.gate.admit(scope, authorization)
        except MISError as exc:
            account(request_id=request_id or choose_request_id(None), method=method, path=path, status=exc.status,
                    started=time.perf_counter(), client=client, caller=getattr(exc, "caller", None), audit=audit,
                    route=route[3] if route else None)
            raise
        return Admission(getattr(resource, "limit", self.max_body_bytes), caller, audit, resource,
                         route[3] if route else None)

    def _mis_error(self, req, resp, exc: MISError, params):
        caller = getattr(req.context, "caller", None)
        shown = self.error_detail == "all" or (self.error_detail == "admin" and caller is not None and caller.may(ADMIN))
        if exc.private:  # %r: a model's words may quote its input, and must not start a log line of their own
            log.warning("request %s: %s: %r", getattr(req.context, "request_id", "-"), exc.message, exc.private)
        resp.status = exc.status
        resp.media = exc.to_dict(with_private=shown, hints=HINTS.get(metrics.protocol_of(req.path)))
        for name, value in exc.headers.items():
            resp.set_header(name, value)

    @staticmethod
    def _http_error(req, resp, exc: falcon.HTTPError, params):
        """Falcon's own errors (unknown route, bad query parameter, malformed form) in our error shape."""
        reason = falcon.code_to_http_status(exc.status).split(" ", 1)[1]
        resp.status = exc.status
        resp.media = error_document(exc.description or f"{reason}: {req.method} {req.path}",
                                    reason.lower().replace(" ", "_").replace("-", "_"))
        for name, value in (exc.headers or {}).items():
            resp.set_header(name, value)

    @staticmethod
    def _unexpected(req, resp, exc: Exception, params):
        log.exception("request %s: unexpected error on %s %s", getattr(req.context, "request_id", "-"),
                      req.method, req.path)
        resp.status = falcon.HTTP_500
        resp.media = error_document("internal server error; the server log has the details", "internal_error")


def create_app(config: Config, registry: Registry | None = None, warmup: Warmup | None = None,
               gate: Gate | None = None) -> App:
    registry = registry or build_registry(config)
    warmup = warmup or Warmup(registry, config.preload).start()
    gate = gate or build_gate(config)

    app = App(config, gate)
    app.on_drain = warmup.drain
    app.req_options.strip_url_path_trailing_slash = True  # the original API's paths end in '/'
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = falcon.media.JSONHandler(dumps=to_json)
    v1.add_routes(app, registry, config, warmup, gate)
    v2.add_routes(app, registry, config, warmup)
    app.add_route("/metrics", metrics.Metrics(registry))
    add_docs_routes(app, __version__)
    return app


def get_app() -> App:
    """gunicorn's entry point (`server.app:get_app()`), called in each worker: configuration from
    MIS_* variables."""
    config = Config.from_env()
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    configure_json_logs()
    registry = build_registry(config, inflight_file=inflight_path(os.getpid()),
                              on_stuck=lambda: os.kill(os.getpid(), signal.SIGTERM))  # gunicorn's graceful exit
    app = create_app(config, registry, gate=_master_gate)
    app.on_shutdown = registry.guard.close
    return app


def blame_dead_worker(config: Config, worker_pid: int) -> list[str]:
    """In the gunicorn master, once a worker has died: a strike for the model it was running (a
    worker that left in order removed its records). When several models were running, none is
    struck: an innocent busy model must not be quarantined for a neighbour's crash. Returns them."""
    models = models_in_flight(inflight_path(worker_pid))
    if len(models) == 1:
        quarantine = LocalQuarantine(StoreDir(config.store_dir))  # each replica's own, whatever MIS_STORE is
        quarantined = quarantine.record_strike(models[0], "its worker died while it predicted",
                                               limit=config.quarantine_strikes, window_s=config.quarantine_window_s,
                                               lock_timeout_s=1.0)
        if quarantined:
            audit_server_change("quarantine", models[0], reason=quarantined)
            metrics.model_quarantined(models[0])
    return models
