"""Server configuration: every MIS_* environment variable is defined here and nowhere else."""

from __future__ import annotations

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
    "MIS_TIMEOUT_S": ("120", "Seconds a worker may spend on one request before gunicorn restarts it."),
    "MIS_DATA_DIR": ("var", "Directory of the embedded catalog (catalog/) and the model store (store/)."),
    "MIS_CATALOG": ("local", "Where model metadata and artifacts come from: `local` (the embedded directory catalog)."),
    "MIS_DEMO_MODELS": ("true", "Build the demo models into an empty local catalog on first start."),
    "MIS_PRELOAD": ("all", "Models to load at start: `all` catalog models, none (empty), or comma-separated ids."),
    "MIS_METADATA_TTL_S": ("30", "Longest time a loaded model's catalog metadata (its `env`) is trusted before re-reading."),
    "MIS_MAX_BODY_BYTES": (str(10 * MiB), "Largest accepted scoring request body."),
    "MIS_MAX_UPLOAD_BYTES": (str(512 * MiB), "Largest accepted upload request body."),
    "MIS_MAX_ARTIFACT_BYTES": (str(2048 * MiB), "Largest total uncompressed size of an uploaded artifact zip."),
    "MIS_LOG_LEVEL": ("info", "Log level of the server and gunicorn."),
}

_BIND = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(?P<port>\d{1,5})$")
_CATALOGS = ("local",)


class ConfigError(ValueError):
    """A MIS_* variable has a value the server cannot run with; the message names it."""


@dataclass(frozen=True)
class Config:
    env: str | None
    bind: str
    workers: int
    timeout_s: int
    data_dir: Path
    catalog: str
    demo_models: bool
    preload: tuple[str, ...] | None  # None: every catalog model
    metadata_ttl_s: float
    max_body_bytes: int
    max_upload_bytes: int
    max_artifact_bytes: int
    log_level: str

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
        preload = get("MIS_PRELOAD")
        return cls(
            env=get("MIS_ENV") or None,
            bind=bind,
            workers=_number(get, "MIS_WORKERS", int, minimum=1),
            timeout_s=_number(get, "MIS_TIMEOUT_S", int, minimum=1),
            data_dir=Path(get("MIS_DATA_DIR")),
            catalog=catalog,
            demo_models=_flag(get, "MIS_DEMO_MODELS"),
            preload=None if preload.lower() == "all" else tuple(i.strip() for i in preload.split(",") if i.strip()),
            metadata_ttl_s=_number(get, "MIS_METADATA_TTL_S", float, minimum=0),
            max_body_bytes=_number(get, "MIS_MAX_BODY_BYTES", int, minimum=1),
            max_upload_bytes=_number(get, "MIS_MAX_UPLOAD_BYTES", int, minimum=1),
            max_artifact_bytes=_number(get, "MIS_MAX_ARTIFACT_BYTES", int, minimum=1),
            log_level=get("MIS_LOG_LEVEL").lower(),
        )


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
