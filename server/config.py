"""Server configuration: every MIS_* environment variable is defined here and nowhere else."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

MiB = 1024 * 1024

# name -> (default, meaning): the only place a variable's name and default are written.
VARIABLES: dict[str, tuple[str, str]] = {
    "MIS_ENV": ("", "Server environment (dev, qa, prod). When set, a model scores only if its `env` metadata equals it."),
    "MIS_BIND": ("127.0.0.1:8080", "host:port gunicorn listens on."),
    "MIS_WORKERS": (str(max(2, os.cpu_count() or 1)), "Number of gunicorn worker processes."),
    "MIS_THREADS": ("8", "Threads per worker that run requests (reading and writing sockets needs none)."),
    "MIS_TIMEOUT_S": ("120", "Seconds any request may take before it is answered 504; also gunicorn's worker heartbeat limit."),
    "MIS_PREDICT_TIMEOUT_S": ("30", "Seconds one predict may take before the request is answered 504 naming the model."),
    "MIS_QUARANTINE_STRIKES": ("3", "Timeouts or worker crashes of one model, within the window, that quarantine it."),
    "MIS_QUARANTINE_WINDOW_S": ("300", "Window, in seconds, in which MIS_QUARANTINE_STRIKES quarantine a model."),
    "MIS_MODEL_OUTPUT_BYTES": ("4096", "Most bytes of a model's stdout/stderr logged per request or load."),
    "MIS_HEADER_TIMEOUT_S": ("10", "Seconds a client has to send a request's headers (408 and closed after)."),
    "MIS_BODY_TIMEOUT_S": ("30", "Seconds a request body may stall (no bytes at all) before 408 and close."),
    "MIS_KEEPALIVE_S": ("5", "Seconds an idle keep-alive connection stays open."),
    "MIS_GRACEFUL_TIMEOUT_S": ("30", "Seconds a worker told to stop (SIGTERM) has to answer what it was sent; then it is killed. Keep the pod's terminationGracePeriodSeconds above its preStop pause plus this."),
    "MIS_DATA_DIR": ("var", "Directory of the embedded catalog (catalog/) and the model store (store/)."),
    "MIS_CATALOG": ("local", "Where model metadata and artifacts come from: `local` (the embedded directory catalog) or `oci` (the OCI Data Science Model Catalog of MIS_OCI_COMPARTMENT_ID)."),
    "MIS_STORE": ("local", "Where uploaded models and the shared model state (loaded models, aliases) live: `local` (under MIS_DATA_DIR, one replica) or `oci` (the Object Storage bucket MIS_OCI_BUCKET, shared by every replica)."),
    "MIS_STATE_TTL_S": ("5", "MIS_STORE=oci: longest time a replica takes to see a load, upload, removal or alias change made on another (each worker re-reads the bucket's state this often, in the background)."),
    "MIS_OCI_AUTH": ("workload_identity", "How the OCI backends authenticate: `workload_identity` (OKE pods), `instance_principal`, `resource_principal` or `api_key` (MIS_OCI_CONFIG_FILE, MIS_OCI_PROFILE)."),
    "MIS_OCI_CONFIG_FILE": ("", "MIS_OCI_AUTH=api_key: the OCI config file; empty: ~/.oci/config."),
    "MIS_OCI_PROFILE": ("DEFAULT", "MIS_OCI_AUTH=api_key: the profile of the OCI config file."),
    "MIS_OCI_REGION": ("", "OCI region of the services (e.g. us-phoenix-1); empty: the signer's or the config file's."),
    "MIS_OCI_COMPARTMENT_ID": ("", "MIS_CATALOG=oci: the compartment whose ACTIVE models the server serves (required)."),
    "MIS_OCI_PROJECT_ID": ("", "MIS_CATALOG=oci: only this Data Science project's models; empty: every project of the compartment."),
    "MIS_OCI_BUCKET": ("", "MIS_STORE=oci: the Object Storage bucket of uploads and shared state (required)."),
    "MIS_OCI_NAMESPACE": ("", "MIS_STORE=oci: the Object Storage namespace; empty: looked up once at start."),
    "MIS_OCI_DATA_SCIENCE_ENDPOINT": ("", "Data Science endpoint URL (a private endpoint, an emulator); empty: the region's."),
    "MIS_OCI_OBJECT_STORAGE_ENDPOINT": ("", "Object Storage endpoint URL (a private endpoint, an emulator); empty: the region's."),
    "MIS_OCI_TIMEOUT_S": ("10", "Seconds one OCI call waits for an answer before it counts as failed."),
    "MIS_OCI_ATTEMPTS": ("3", "Attempts per OCI call on throttling (429), 5xx and timeouts, with backoff; never past the request's MIS_TIMEOUT_S."),
    "MIS_DEMO_MODELS": ("true", "Build the demo models into an empty local catalog on first start."),
    "MIS_PRELOAD": ("all", "Models to load at start: `all` catalog models, none (empty), or comma-separated ids."),
    "MIS_MAX_LOADED_MODELS": ("0", "Most models one worker keeps in memory (0: no limit). Beyond it the least recently used is unloaded there, stays loaded for the server, and is loaded again by its next request. Models named in MIS_PRELOAD are never unloaded."),
    "MIS_METADATA_TTL_S": ("30", "Longest time a loaded model's catalog metadata (its `env`) is trusted before re-reading."),
    "MIS_MAX_BODY_BYTES": (str(10 * MiB), "Largest accepted scoring request body."),
    "MIS_MAX_UPLOAD_BYTES": (str(512 * MiB), "Largest accepted upload request body."),
    "MIS_MAX_ARTIFACT_BYTES": (str(2048 * MiB), "Largest total uncompressed size of an uploaded artifact zip."),
    "MIS_LOG_LEVEL": ("info", "Log level of the server and gunicorn."),
    "MIS_API_KEYS_FILE": ("", "JSON file of API keys (`{\"keys\": [{\"name\", \"scopes\", \"key\"}]}`), re-read when it changes. Required unless MIS_AUTH=off."),
    "MIS_AUTH": ("on", "`on`: every model operation needs an API key from MIS_API_KEYS_FILE. `off`: no authentication, allowed only on a loopback MIS_BIND."),
    "MIS_UPLOAD_ENVS": ("", "Envs an upload may claim, comma-separated, or `*`. Empty: on a gated server (MIS_ENV set) uploads start with no env and an admin promotes them; on an ungated one any env."),
    "MIS_ENV_COMPAT": ("warn", "What to do with an artifact whose runtime.yaml or taxonomy does not match this server's environment (Conda slug, Python minor version, the framework's major version): `strict` refuses it (409), `warn` loads it and reports the mismatch (getmodelinfo, serverinfo, metrics), `off` does not look."),
    "MIS_CONDA_SLUG": ("", "The Conda environment slug this server runs in (as OCI Data Science names packs, e.g. generalml_p311_cpu_x86_64_v1); empty: the active Conda environment's name, if any. Compared case-insensitively with each artifact's INFERENCE_ENV_SLUG."),
    "MIS_ERROR_DETAIL": ("admin", "Who sees a model's own exception text in error answers: `admin` keys (everyone when MIS_AUTH=off), `all` or `none`. The log always has it."),
}

_BIND = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(?P<port>\d{1,5})$")
_CATALOGS = ("local", "oci")
_STORES = ("local", "oci")
OCI_AUTH_MODES = ("workload_identity", "instance_principal", "resource_principal", "api_key")
_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(/\S*)?$")
_ERROR_DETAIL = ("admin", "all", "none")
ENV_COMPAT_POLICIES = ("strict", "warn", "off")


class ConfigError(ValueError):
    """A MIS_* variable has a value the server cannot run with; the message names it."""


@dataclass(frozen=True)
class Config:
    env: str | None
    bind: str
    workers: int
    threads: int
    timeout_s: int
    predict_timeout_s: float
    quarantine_strikes: int
    quarantine_window_s: float
    model_output_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    keepalive_s: int
    graceful_timeout_s: int
    data_dir: Path
    catalog: str
    demo_models: bool
    preload: tuple[str, ...] | None  # None: every catalog model
    metadata_ttl_s: float
    max_loaded_models: int  # per worker; 0: no limit
    max_body_bytes: int
    max_upload_bytes: int
    max_artifact_bytes: int
    log_level: str
    api_keys_file: Path | None  # None: authentication is off (only ever on a loopback bind)
    upload_envs: frozenset[str] | None  # None: any env
    error_detail: str
    env_compat: str = "warn"
    conda_slug: str | None = None  # None: not set; the environment module may detect it
    store: str = "local"
    state_ttl_s: float = 5.0
    oci_auth: str = "workload_identity"
    oci_config_file: str | None = None
    oci_profile: str = "DEFAULT"
    oci_region: str | None = None
    oci_compartment_id: str | None = None
    oci_project_id: str | None = None
    oci_bucket: str | None = None
    oci_namespace: str | None = None
    oci_data_science_endpoint: str | None = None
    oci_object_storage_endpoint: str | None = None
    oci_timeout_s: float = 10.0
    oci_attempts: int = 3

    @property
    def catalog_dir(self) -> Path:
        return self.data_dir / "catalog"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Config":
        environ = os.environ if environ is None else environ

        def get(name: str) -> str:
            return environ.get(name, VARIABLES[name][0]).strip()

        bind = get("MIS_BIND")
        if not _BIND.match(bind) or not 0 < int(_BIND.match(bind)["port"]) < 65536:
            raise ConfigError(f"MIS_BIND must be host:port, got {bind!r}")
        catalog = get("MIS_CATALOG").lower()
        if catalog not in _CATALOGS:
            raise ConfigError(f"MIS_CATALOG must be one of {', '.join(_CATALOGS)}, got {catalog!r}")
        store = get("MIS_STORE").lower()
        if store not in _STORES:
            raise ConfigError(f"MIS_STORE must be one of {', '.join(_STORES)}, got {store!r}")
        oci = _oci_settings(get, catalog, store)
        preload = get("MIS_PRELOAD")
        env = get("MIS_ENV") or None
        error_detail = get("MIS_ERROR_DETAIL").lower()
        if error_detail not in _ERROR_DETAIL:
            raise ConfigError(f"MIS_ERROR_DETAIL must be one of {', '.join(_ERROR_DETAIL)}, got {error_detail!r}")
        upload_envs = get("MIS_UPLOAD_ENVS")
        env_compat = get("MIS_ENV_COMPAT").lower()
        if env_compat not in ENV_COMPAT_POLICIES:
            raise ConfigError(f"MIS_ENV_COMPAT must be one of {', '.join(ENV_COMPAT_POLICIES)}, got {env_compat!r}")
        return cls(
            env=env,
            bind=bind,
            workers=_number(get, "MIS_WORKERS", int, minimum=1),
            threads=_number(get, "MIS_THREADS", int, minimum=1),
            timeout_s=_number(get, "MIS_TIMEOUT_S", int, minimum=1),
            predict_timeout_s=_number(get, "MIS_PREDICT_TIMEOUT_S", float, minimum=0.01),
            quarantine_strikes=_number(get, "MIS_QUARANTINE_STRIKES", int, minimum=1),
            quarantine_window_s=_number(get, "MIS_QUARANTINE_WINDOW_S", float, minimum=1),
            model_output_bytes=_number(get, "MIS_MODEL_OUTPUT_BYTES", int, minimum=0),
            header_timeout_s=_number(get, "MIS_HEADER_TIMEOUT_S", float, minimum=0.1),
            body_timeout_s=_number(get, "MIS_BODY_TIMEOUT_S", float, minimum=0.1),
            keepalive_s=_number(get, "MIS_KEEPALIVE_S", int, minimum=0),
            graceful_timeout_s=_number(get, "MIS_GRACEFUL_TIMEOUT_S", int, minimum=1),
            data_dir=Path(get("MIS_DATA_DIR")),
            catalog=catalog,
            demo_models=_flag(get, "MIS_DEMO_MODELS"),
            preload=None if preload.lower() == "all" else tuple(i.strip() for i in preload.split(",") if i.strip()),
            metadata_ttl_s=_number(get, "MIS_METADATA_TTL_S", float, minimum=0),
            max_loaded_models=_number(get, "MIS_MAX_LOADED_MODELS", int, minimum=0),
            max_body_bytes=_number(get, "MIS_MAX_BODY_BYTES", int, minimum=1),
            max_upload_bytes=_number(get, "MIS_MAX_UPLOAD_BYTES", int, minimum=1),
            max_artifact_bytes=_number(get, "MIS_MAX_ARTIFACT_BYTES", int, minimum=1),
            log_level=get("MIS_LOG_LEVEL").lower(),
            api_keys_file=_api_keys_file(get, bind),
            upload_envs=(None if upload_envs == "*" or (not upload_envs and env is None)
                         else frozenset(e.strip() for e in upload_envs.split(",") if e.strip())),
            error_detail=error_detail,
            env_compat=env_compat,
            conda_slug=get("MIS_CONDA_SLUG") or None,
            store=store,
            state_ttl_s=_number(get, "MIS_STATE_TTL_S", float, minimum=0.1),
            **oci,
        )


def _oci_settings(get, catalog: str, store: str) -> dict:
    """The OCI backends' settings, checked only where a backend is on OCI."""
    if "oci" not in (catalog, store):
        return {}
    auth = get("MIS_OCI_AUTH").lower()
    if auth not in OCI_AUTH_MODES:
        raise ConfigError(f"MIS_OCI_AUTH must be one of {', '.join(OCI_AUTH_MODES)}, got {auth!r}")
    if catalog == "oci" and not get("MIS_OCI_COMPARTMENT_ID"):
        raise ConfigError("MIS_CATALOG=oci needs MIS_OCI_COMPARTMENT_ID: the OCID of the compartment whose models to serve")
    if store == "oci" and not get("MIS_OCI_BUCKET"):
        raise ConfigError("MIS_STORE=oci needs MIS_OCI_BUCKET: the Object Storage bucket for uploads and shared state")
    for name in ("MIS_OCI_DATA_SCIENCE_ENDPOINT", "MIS_OCI_OBJECT_STORAGE_ENDPOINT"):
        if get(name) and not _URL.match(get(name)):
            raise ConfigError(f"{name} must be an http(s) URL, got {get(name)!r}")
    return dict(
        oci_auth=auth,
        oci_config_file=get("MIS_OCI_CONFIG_FILE") or None,
        oci_profile=get("MIS_OCI_PROFILE") or "DEFAULT",
        oci_region=get("MIS_OCI_REGION") or None,
        oci_compartment_id=get("MIS_OCI_COMPARTMENT_ID") or None,
        oci_project_id=get("MIS_OCI_PROJECT_ID") or None,
        oci_bucket=get("MIS_OCI_BUCKET") or None,
        oci_namespace=get("MIS_OCI_NAMESPACE") or None,
        oci_data_science_endpoint=get("MIS_OCI_DATA_SCIENCE_ENDPOINT").rstrip("/") or None,
        oci_object_storage_endpoint=get("MIS_OCI_OBJECT_STORAGE_ENDPOINT").rstrip("/") or None,
        oci_timeout_s=_number(get, "MIS_OCI_TIMEOUT_S", float, minimum=0.1),
        oci_attempts=_number(get, "MIS_OCI_ATTEMPTS", int, minimum=1),
    )


def _api_keys_file(get, bind: str) -> Path | None:
    """Authentication is on unless explicitly turned off, and never off beyond this machine."""
    auth, keys_file = get("MIS_AUTH").lower(), get("MIS_API_KEYS_FILE")
    if auth not in ("on", "off"):
        raise ConfigError(f"MIS_AUTH must be on or off, got {auth!r}")
    if auth == "off":
        if keys_file:
            raise ConfigError("MIS_AUTH=off and MIS_API_KEYS_FILE are both set: unset one of them")
        if not is_loopback(bind):
            raise ConfigError(f"MIS_AUTH=off is allowed only on a loopback MIS_BIND, not {bind!r}: "
                              "set MIS_API_KEYS_FILE to an API keys file")
        return None
    if not keys_file:
        raise ConfigError("MIS_API_KEYS_FILE is not set: point it at an API keys file "
                          "({\"keys\": [{\"name\", \"scopes\", \"key\"}]}), or, on a loopback MIS_BIND only, "
                          "set MIS_AUTH=off")
    return Path(keys_file)


def is_loopback(bind: str) -> bool:
    host = _BIND.match(bind)["host"].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def _number(get, name: str, kind: type, minimum: float):
    raw = get(name)
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a {kind.__name__}, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _flag(get, name: str) -> bool:
    raw = get(name).lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")
