"""Server configuration: every MIS_* environment variable is declared here, once, and nowhere else.

Each field of `Config` declares the variable that sets it: its name, its default as the environment
spells it, how a value is read and checked (type, bounds or choices) and the line README.md's
configuration tables give it (`python -m server.config --markdown` prints the tables; a test holds
README to them). `from_env` reads every declaration, then checks the rules that tie variables together.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

MiB = 1024 * 1024

_BIND = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(?P<port>\d{1,5})$")
OCI_AUTH_MODES = ("workload_identity", "instance_principal", "resource_principal", "api_key")
_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(/\S*)?$")
ENV_COMPAT_POLICIES = ("strict", "warn", "off")


class ConfigError(ValueError):
    """A MIS_* variable has a value the server cannot run with; the message names it."""


@dataclass(frozen=True)
class Setting:
    """One MIS_* variable."""

    name: str
    default: str  # as the environment spells it
    read: Callable[[str, str], Any]  # (name, stripped value) -> the Config value; raises ConfigError
    doc: str  # its meaning, one line of Markdown: README's table shows it as written
    shown: str = ""  # README's Default column where it is not the default itself, e.g. "(unset)"

    @property
    def oci(self) -> bool:
        """A setting of the OCI backends: read only where one is on, and listed in README's "On OCI" table."""
        return self.name.startswith("MIS_OCI_")

    def row(self) -> str:
        return f"| `{self.name}` | {self.shown or f'`{self.default}`'} | {self.doc} |"


def setting(name: str, default: str, read: Callable[[str, str], Any], doc: str, shown: str = "") -> Any:
    """The Config field that the variable `name` sets."""
    return field(metadata={"setting": Setting(name, default, read, doc, shown)})


# -- how values are read: each takes the variable's name (for its message) and its stripped value --

def _text(name: str, raw: str) -> str | None:
    return raw or None


def _path(name: str, raw: str) -> Path:
    return Path(raw)


def _optional_path(name: str, raw: str) -> Path | None:
    return Path(raw) if raw else None


def _number(kind: type, minimum: float) -> Callable[[str, str], Any]:
    def read(name: str, raw: str):
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a {kind.__name__}, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
        return value
    return read


def _choice(*choices: str, spelled: str = "") -> Callable[[str, str], str]:
    def read(name: str, raw: str) -> str:
        if raw.lower() not in choices:
            raise ConfigError(f"{name} must be {spelled or 'one of ' + ', '.join(choices)}, got {raw.lower()!r}")
        return raw.lower()
    return read


def _flag(name: str, raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw.lower()!r}")


_on_or_off = _choice("on", "off", spelled="on or off")


def _on(name: str, raw: str) -> bool:
    return _on_or_off(name, raw) == "on"


_levels = _choice("debug", "info", "warning", "warn", "error", "critical")


def _log_level(name: str, raw: str) -> str:
    """One of logging's levels; `warn` (which logging also takes) is spelled `warning`, as gunicorn knows it."""
    level = _levels(name, raw)
    return "warning" if level == "warn" else level


def _bind(name: str, raw: str) -> str:
    if not _BIND.match(raw) or not 0 < int(_BIND.match(raw)["port"]) < 65536:
        raise ConfigError(f"{name} must be host:port, got {raw!r}")
    return raw


def _url(name: str, raw: str) -> str | None:
    if raw and not _URL.match(raw):
        raise ConfigError(f"{name} must be an http(s) URL, got {raw!r}")
    return raw.rstrip("/") or None


def _names(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _preload(name: str, raw: str) -> tuple[str, ...] | None:
    return None if raw.lower() == "all" else _names(raw)


def _envs(name: str, raw: str) -> frozenset[str] | None:
    return None if raw == "*" else frozenset(_names(raw))


@dataclass(frozen=True)
class Config:
    env: str | None = setting(
        "MIS_ENV", "", _text, shown="(unset)",
        doc="Server environment (dev, qa, prod). When set, a model scores only if its `env` metadata equals it.")
    bind: str = setting("MIS_BIND", "127.0.0.1:8080", _bind,
                        "host:port gunicorn listens on. An address another process already listens on stops the start.")
    instance_id: str | None = setting(
        "MIS_INSTANCE_ID", "", _text, shown="(unset)",
        doc="A name for this server, which readiness reports (`instance`): whoever started it can tell its own "
            "server from another on the same address. `mis serve` sets a fresh one.")
    workers: int = setting(
        "MIS_WORKERS", str(max(2, os.cpu_count() or 1)), _number(int, minimum=1),
        "Number of gunicorn worker processes.", shown="max(2, CPU count)")
    threads: int = setting(
        "MIS_THREADS", "8", _number(int, minimum=1),
        "Threads per worker that run requests; reading and writing sockets needs none.")
    timeout_s: int = setting(
        "MIS_TIMEOUT_S", "120", _number(int, minimum=1),
        "Seconds any request may take before it is answered 504 (its thread is abandoned); also gunicorn's "
        "heartbeat limit for a frozen worker.")
    predict_timeout_s: float = setting(
        "MIS_PREDICT_TIMEOUT_S", "30", _number(float, minimum=0.01),
        "Seconds one predict may take before the request is answered 504 naming the model.")
    quarantine_strikes: int = setting(
        "MIS_QUARANTINE_STRIKES", "3", _number(int, minimum=1),
        "Predict timeouts or worker deaths of one model, within the window, that quarantine it.")
    quarantine_window_s: float = setting(
        "MIS_QUARANTINE_WINDOW_S", "300", _number(float, minimum=1),
        "The window, in seconds, for `MIS_QUARANTINE_STRIKES`.")
    model_output_bytes: int = setting(
        "MIS_MODEL_OUTPUT_BYTES", "4096", _number(int, minimum=0),
        "Most characters of what a model prints (stdout/stderr) logged per predict or load.")
    header_timeout_s: float = setting(
        "MIS_HEADER_TIMEOUT_S", "10", _number(float, minimum=0.1),
        "Seconds a client has to send a request's headers; then 408 and the connection is closed.")
    body_timeout_s: float = setting(
        "MIS_BODY_TIMEOUT_S", "30", _number(float, minimum=0.1),
        "Seconds a request body may stall (no byte at all); then 408 and the connection is closed.")
    keepalive_s: int = setting(
        "MIS_KEEPALIVE_S", "5", _number(int, minimum=0), "Seconds an idle keep-alive connection stays open.")
    graceful_timeout_s: int = setting(
        "MIS_GRACEFUL_TIMEOUT_S", "30", _number(int, minimum=1),
        "Seconds a worker told to stop (SIGTERM) has to answer what it was sent; then it is killed. Keep the "
        "pod's `terminationGracePeriodSeconds` above its preStop pause plus this.")
    data_dir: Path = setting(
        "MIS_DATA_DIR", "var", _path,
        "Directory of the embedded catalog (`catalog/`) and the model store (`store/`).")
    catalog: str = setting(
        "MIS_CATALOG", "local", _choice("local", "oci"),
        "Where model metadata and artifacts come from: `local`, the embedded directory catalog "
        "(`<id>/metadata.json` + artifact), or `oci`, the OCI Data Science Model Catalog (see "
        "[On OCI](#on-oci-model-catalog-and-object-storage)).")
    store: str = setting(
        "MIS_STORE", "local", _choice("local", "oci"),
        "Where uploads and the shared model state (loaded models, aliases) live: `local` (under `MIS_DATA_DIR`: "
        "one replica) or `oci` (the bucket `MIS_OCI_BUCKET`, shared by every replica).")
    state_ttl_s: float = setting(
        "MIS_STATE_TTL_S", "5", _number(float, minimum=0.1),
        "`MIS_STORE=oci`: longest time before every replica sees a load, upload, removal or alias change made "
        "on another (each worker re-reads the bucket's state this often, in the background).")
    demo_models: bool = setting(
        "MIS_DEMO_MODELS", "true", _flag,
        "Build the demo models into an empty local catalog on first start (needs the `demo` dependency set).")
    preload: tuple[str, ...] | None = setting(  # None: every catalog model
        "MIS_PRELOAD", "all", _preload,
        "Models to load at start: `all` catalog models, none (empty), or comma-separated ids. Readiness waits "
        "for them.")
    max_loaded_models: int = setting(  # per worker; 0: no limit
        "MIS_MAX_LOADED_MODELS", "0", _number(int, minimum=0),
        "Most models one worker keeps in memory (0: no limit). Beyond it the least recently used is unloaded "
        "from that worker but stays loaded for the server; its next request loads it again (`timing.load_ms` "
        "says so) and `serverinfo.memory` counts evictions. Models named in `MIS_PRELOAD` are never unloaded.")
    metadata_ttl_s: float = setting(
        "MIS_METADATA_TTL_S", "30", _number(float, minimum=0),
        "Longest time a loaded model's catalog metadata (its `env`) is trusted before re-reading.")
    max_body_bytes: int = setting(
        "MIS_MAX_BODY_BYTES", str(10 * MiB), _number(int, minimum=1),
        "Largest accepted scoring request body (413 above).")
    max_upload_bytes: int = setting(
        "MIS_MAX_UPLOAD_BYTES", str(512 * MiB), _number(int, minimum=1),
        "Largest accepted upload request body (413 above).")
    max_artifact_bytes: int = setting(
        "MIS_MAX_ARTIFACT_BYTES", str(2048 * MiB), _number(int, minimum=1),
        "Largest total uncompressed size of an uploaded artifact zip (413 above).")
    log_level: str = setting("MIS_LOG_LEVEL", "info", _log_level,
                             "Log level of the server and gunicorn: `debug`, `info`, `warning` (or `warn`), `error` or "
                             "`critical`.")
    api_keys_file: Path | None = setting(  # None: authentication is off (only ever on a loopback bind)
        "MIS_API_KEYS_FILE", "", _optional_path, shown="(unset)",
        doc="The API keys file, `{\"keys\": [{\"name\", \"scopes\", \"key\"}]}` (the stacks mount it from the "
            "Vault). Re-read when it changes. Required unless `MIS_AUTH=off`.")
    auth: bool = setting(
        "MIS_AUTH", "on", _on,
        "`off` turns authentication off; allowed only with a loopback `MIS_BIND` and no keys file (`make run` "
        "does it).")
    upload_envs: frozenset[str] | None = setting(  # None: any env
        "MIS_UPLOAD_ENVS", "", _envs, shown="(unset)",
        doc="Envs an upload may claim, comma-separated, or `*`. Unset: on a gated server (`MIS_ENV` set) an "
            "upload claims none (403 `upload_env_refused`) and an admin promotes it; ungated, any env is only a "
            "label.")
    env_compat: str = setting(
        "MIS_ENV_COMPAT", "warn", _choice(*ENV_COMPAT_POLICIES),
        "What to do with an artifact made for another environment (see [Runtime environments]"
        "(#runtime-environments)): `strict` refuses it (409 `env_incompatible`, naming both sides), `warn` loads "
        "it and reports the mismatch in `getmodelinfo` and `serverinfo` (`env_mismatches`) and the metric "
        "`mis_model_env_mismatches_total`, `off` does not look.")
    conda_slug: str | None = setting(  # None: not set; the environment module may detect it
        "MIS_CONDA_SLUG", "", _text, shown="(empty)",
        doc="The Conda environment slug the server runs in, as OCI Data Science names packs (e.g. "
            "`generalml_p311_cpu_x86_64_v1`), compared case-insensitively with each artifact's "
            "`INFERENCE_ENV_SLUG`; empty: the active Conda environment's name, if any, else unknown (slugs are "
            "then not compared).")
    error_detail: str = setting(
        "MIS_ERROR_DETAIL", "admin", _choice("admin", "all", "none"),
        "Who sees a model's own exception text in error answers (`detail`): `admin` keys (everyone when "
        "`MIS_AUTH=off`), `all` or `none`. The log always has it, with the request id.")
    # The OCI backends' settings (README's "On OCI" table): read and checked only where a backend is on OCI.
    oci_auth: str = setting(
        "MIS_OCI_AUTH", "workload_identity", _choice(*OCI_AUTH_MODES),
        "`workload_identity` (a pod of an OKE enhanced cluster), `instance_principal`, `resource_principal`, or "
        "`api_key` (an OCI config file).")
    oci_config_file: str | None = setting(
        "MIS_OCI_CONFIG_FILE", "", _text, "`api_key`: the OCI config file.", shown="`~/.oci/config`")
    oci_profile: str = setting(
        "MIS_OCI_PROFILE", "DEFAULT", lambda name, raw: raw or "DEFAULT", "`api_key`: its profile.")
    oci_region: str | None = setting(
        "MIS_OCI_REGION", "", _text, shown="(the signer's)",
        doc="Region of the services; unset: the signer's (`OCI_RESOURCE_PRINCIPAL_REGION` on OKE) or the config "
            "file's.")
    oci_compartment_id: str | None = setting(
        "MIS_OCI_COMPARTMENT_ID", "", _text, shown="(required)",
        doc="`MIS_CATALOG=oci`: the compartment whose ACTIVE models are served (`listmodels?compartment_id=` can "
            "only narrow it).")
    oci_project_id: str | None = setting(
        "MIS_OCI_PROJECT_ID", "", _text, "`MIS_CATALOG=oci`: only this project's models.", shown="(all)")
    oci_bucket: str | None = setting(
        "MIS_OCI_BUCKET", "", _text, shown="(required)",
        doc="`MIS_STORE=oci`: the bucket (`uploads/<id>/artifact.zip` and `metadata.json`, `state.json`).")
    oci_namespace: str | None = setting(
        "MIS_OCI_NAMESPACE", "", _text, "`MIS_STORE=oci`: the Object Storage namespace.", shown="(looked up)")
    oci_data_science_endpoint: str | None = setting(
        "MIS_OCI_DATA_SCIENCE_ENDPOINT", "", _url, shown="(the region's)",
        doc="Data Science endpoint URL: a private endpoint, or an emulator.")
    oci_object_storage_endpoint: str | None = setting(
        "MIS_OCI_OBJECT_STORAGE_ENDPOINT", "", _url, "Object Storage endpoint URL.", shown="(the region's)")
    oci_timeout_s: float = setting(
        "MIS_OCI_TIMEOUT_S", "10", _number(float, minimum=0.1), "Seconds one OCI call waits for an answer.")
    oci_attempts: int = setting(
        "MIS_OCI_ATTEMPTS", "3", _number(int, minimum=1),
        "Attempts per OCI call on 429, 5xx and timeouts (jittered exponential backoff, honouring `Retry-After`); "
        "no retry starts that could end past the request's `MIS_TIMEOUT_S`.")

    @property
    def catalog_dir(self) -> Path:
        return self.data_dir / "catalog"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Config":
        environ = os.environ if environ is None else environ
        raw = {name: environ.get(name, s.default).strip() for name, s in SETTINGS.items()}
        declared = [(f.name, f.metadata["setting"]) for f in fields(cls)]
        values = {attr: s.read(s.name, raw[s.name]) for attr, s in declared if not s.oci}
        # The OCI backends' settings are read, and checked, only where a backend is on OCI; elsewhere their defaults.
        on_oci = "oci" in (values["catalog"], values["store"])
        values |= {attr: s.read(s.name, raw[s.name] if on_oci else s.default) for attr, s in declared if s.oci}
        _check_oci(values)
        _check_auth(values)
        if not raw["MIS_UPLOAD_ENVS"] and values["env"] is None:
            values["upload_envs"] = None  # ungated: the env an upload claims is only a label
        return cls(**values)


# name -> declaration, in README's order.
SETTINGS: dict[str, Setting] = {s.name: s for s in (f.metadata["setting"] for f in fields(Config))}


def _check_oci(values: dict[str, Any]) -> None:
    """A backend on OCI needs to know where its models are."""
    if values["catalog"] == "oci" and not values["oci_compartment_id"]:
        raise ConfigError("MIS_CATALOG=oci needs MIS_OCI_COMPARTMENT_ID: the OCID of the compartment whose models to serve")
    if values["store"] == "oci" and not values["oci_bucket"]:
        raise ConfigError("MIS_STORE=oci needs MIS_OCI_BUCKET: the Object Storage bucket for uploads and shared state")


def _check_auth(values: dict[str, Any]) -> None:
    """Authentication is on unless explicitly turned off, and never off beyond this machine."""
    if not values["auth"]:
        if values["api_keys_file"]:
            raise ConfigError("MIS_AUTH=off and MIS_API_KEYS_FILE are both set: unset one of them")
        if not is_loopback(values["bind"]):
            raise ConfigError(f"MIS_AUTH=off is allowed only on a loopback MIS_BIND, not {values['bind']!r}: "
                              "set MIS_API_KEYS_FILE to an API keys file")
    elif not values["api_keys_file"]:
        raise ConfigError("MIS_API_KEYS_FILE is not set: point it at an API keys file "
                          "({\"keys\": [{\"name\", \"scopes\", \"key\"}]}), or, on a loopback MIS_BIND only, "
                          "set MIS_AUTH=off")


def is_loopback(bind: str) -> bool:
    host = _BIND.match(bind)["host"].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def markdown_table(oci: bool) -> str:
    """README.md's table of the server's variables (oci=False) or of the OCI backends' (oci=True)."""
    rows = [s.row() for s in SETTINGS.values() if s.oci == oci]
    return "\n".join(["| Variable | Default | Meaning |", "|---|---|---|", *rows])


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m server.config --markdown   (README.md's two configuration tables)")
    print(markdown_table(oci=False), markdown_table(oci=True), sep="\n\n")
