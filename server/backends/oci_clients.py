"""Talking to OCI: credentials (MIS_OCI_AUTH), one SDK client per service, and calls that never hang.

Every SDK call goes through `Service.call`: the client's own timeout bounds each attempt, transient
failures (throttling, 5xx, timeouts, refused connections) are retried a bounded number of times with
jittered exponential backoff, and no retry starts that could end past the operation's budget (which
stays inside the request's own MIS_TIMEOUT_S). What still fails is a `ServiceUnavailable` (503 with
Retry-After) naming the service. The SDK's own retries and circuit breaker are off: one policy, here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable

import oci
from oci._vendor.requests.exceptions import RequestException

from ..config import ConfigError
from ..errors import MISError, ServiceUnavailable

log = logging.getLogger(__name__)

DATA_SCIENCE = "OCI Data Science"
OBJECT_STORAGE = "OCI Object Storage"
CONNECT_TIMEOUT_S = 5.0
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 4.0
RETRY_AFTER_S = 5  # what a 503 tells clients when the service gave no hint of its own
_CHUNK = 1024 * 1024  # one read of a download
AUTH_MODES = ("workload_identity", "instance_principal", "resource_principal", "api_key")


@dataclass(frozen=True)
class OciSettings:
    auth: str
    config_file: str | None  # api_key only; None: the SDK's default (~/.oci/config)
    profile: str
    region: str | None  # None: the signer's or the config file's
    data_science_endpoint: str | None
    object_storage_endpoint: str | None
    timeout_s: float  # read timeout of one attempt
    attempts: int  # per call, the first included
    budget_s: float  # longest one call may take, retries and waits included


def credentials(settings: OciSettings) -> tuple[dict, Any]:
    """(SDK client config, signer) for the configured auth mode. Raises ConfigError naming what to
    set: credentials that cannot work stop the server at start, not at its first request."""
    mode = settings.auth
    try:
        if mode == "api_key":
            return _api_key(settings)
        if mode == "workload_identity":
            if not os.environ.get("KUBERNETES_SERVICE_HOST"):
                raise ConfigError("MIS_OCI_AUTH=workload_identity works only in a pod of an OKE enhanced cluster "
                                  "(KUBERNETES_SERVICE_HOST is unset): set MIS_OCI_AUTH=api_key (with "
                                  "MIS_OCI_CONFIG_FILE and MIS_OCI_PROFILE), instance_principal or resource_principal")
            os.environ.setdefault("OCI_RESOURCE_PRINCIPAL_VERSION", "2.2")  # for other SDKs in the process
            signer = oci.auth.signers.get_oke_workload_identity_resource_principal_signer()
        elif mode == "instance_principal":
            signer = oci.auth.signers.InstancePrincipalsSecurityTokenSigner()
        elif mode == "resource_principal":
            signer = oci.auth.signers.get_resource_principals_signer()
        else:
            raise ConfigError(f"MIS_OCI_AUTH must be one of {', '.join(AUTH_MODES)}, got {mode!r}")
    except ConfigError:
        raise
    except Exception as exc:  # the SDK raises many kinds: any of them means no credentials
        raise ConfigError(f"MIS_OCI_AUTH={mode}: no OCI credentials could be obtained ({type(exc).__name__}: "
                          f"{str(exc)[:200]}); set MIS_OCI_AUTH to a mode that works here") from None
    region = settings.region or getattr(signer, "region", None)
    if not region:
        raise ConfigError(f"MIS_OCI_AUTH={mode} gave no region: set MIS_OCI_REGION")
    return {"region": region}, signer


def _api_key(settings: OciSettings) -> tuple[dict, Any]:
    path = settings.config_file or oci.config.DEFAULT_LOCATION
    try:
        config = oci.config.from_file(path, settings.profile)
        if settings.region:
            config["region"] = settings.region
        oci.config.validate_config(config)
        signer = oci.signer.Signer(config["tenancy"], config["user"], config["fingerprint"],
                                   config.get("key_file"), config.get("pass_phrase"), config.get("key_content"))
    except oci.exceptions.ConfigFileNotFound:
        raise ConfigError(f"MIS_OCI_AUTH=api_key: the OCI config file {path} does not exist: set "
                          "MIS_OCI_CONFIG_FILE") from None
    except oci.exceptions.ProfileNotFound:
        raise ConfigError(f"MIS_OCI_AUTH=api_key: the OCI config file {path} has no profile "
                          f"{settings.profile!r}: set MIS_OCI_PROFILE") from None
    except (oci.exceptions.ClientError, OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"MIS_OCI_AUTH=api_key: profile {settings.profile!r} of {path} cannot sign requests "
                          f"({type(exc).__name__}: {str(exc)[:200]}): fix it, or set MIS_OCI_CONFIG_FILE / "
                          "MIS_OCI_PROFILE") from None
    return config, signer


def client(kind: type, settings: OciSettings, endpoint: str | None, creds: tuple[dict, Any]):
    config, signer = creds
    extra = {"service_endpoint": endpoint} if endpoint else {}
    return kind(config, signer=signer, timeout=(CONNECT_TIMEOUT_S, settings.timeout_s),
                retry_strategy=oci.retry.NoneRetryStrategy(),
                circuit_breaker_strategy=oci.circuit_breaker.NoCircuitBreakerStrategy(), **extra)


class Service:
    """One OCI service's client under the call policy (module docstring)."""

    def __init__(self, name: str, sdk_client, settings: OciSettings):
        self.name = name
        self.client = sdk_client
        self.settings = settings

    def call(self, operation: str, *args, passthrough: tuple[int, ...] = (404,), **kwargs):
        """`self.client.<operation>(*args, **kwargs)`. A ServiceError whose status is in
        `passthrough` (404: absent, 412: a conditional write lost) reaches the caller as it is."""
        settings = self.settings
        deadline = self.deadline()
        attempt_s = CONNECT_TIMEOUT_S + settings.timeout_s
        for attempt in range(settings.attempts):
            try:
                return getattr(self.client, operation)(*args, **kwargs)
            except oci.exceptions.ServiceError as exc:
                if exc.status in passthrough:
                    raise
                if not transient(exc.status):
                    raise self.unavailable(f"answered {exc.status} {exc.code} to {operation}", exc) from None
                failure, hint = f"answered {exc.status} {exc.code}", _retry_after(exc)
            except (RequestException, oci.exceptions.RequestException, ConnectionError) as exc:
                failure, hint = f"did not answer ({type(exc).__name__})", None
            delay = hint if hint is not None else min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**attempt)
            delay *= random.uniform(0.8, 1.2)  # replicas that failed together retry apart
            if attempt + 1 == settings.attempts or time.monotonic() + delay + attempt_s > deadline:
                break
            log.info("%s %s to %s; retrying in %.2f s", self.name, failure, operation, delay)
            time.sleep(delay)
        raise self.unavailable(f"{failure} to {operation} ({attempt + 1} attempts)")

    def deadline(self) -> float:
        """When a call started now must be done by (time.monotonic()): within the request's own."""
        return time.monotonic() + self.settings.budget_s

    def download(self, answer, target: Path, *, deadline: float, limit: int, too_large: Callable[[], MISError],
                 md5: str | None, damaged: Callable[[], MISError]) -> None:
        """Stream an answer's body to a file beside `target`, checked, then renamed into place:
        another worker never reads half of it, and two downloading at once both end with one file.
        No more than `limit` bytes are read, whatever the answer's head said (`too_large()`), and
        not past `deadline` (taken before the call that got `answer`); a body that breaks off is
        this service's failure, one whose MD5 differs from `md5` (base64, as OCI sends it) is
        `damaged()`. Nothing is left on failure."""
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=".download-")
        digest, written = hashlib.md5(usedforsecurity=False), 0
        try:
            with os.fdopen(handle, "wb") as out:
                try:
                    for chunk in answer.data.iter_content(_CHUNK):
                        written += len(chunk)
                        if written > limit:
                            raise too_large()
                        if time.monotonic() > deadline:
                            raise self.unavailable("sent the artifact too slowly")
                        digest.update(chunk)
                        out.write(chunk)
                except MISError:
                    raise
                except Exception as exc:  # the connection broke mid-stream
                    raise self.unavailable(f"broke off the artifact download ({type(exc).__name__})") from None
                finally:
                    answer.data.close()
            if md5 and base64.b64decode(md5) != digest.digest():
                raise damaged()
            os.replace(name, target)
        except BaseException:
            os.unlink(name)
            raise

    def unavailable(self, what: str, exc: Exception | None = None) -> ServiceUnavailable:
        hint = _retry_after(exc) if isinstance(exc, oci.exceptions.ServiceError) else None
        return ServiceUnavailable(f"{self.name} is unavailable: it {what}; retry later", service=self.name,
                                  retry_after_s=max(1, round(hint or RETRY_AFTER_S)))


def transient(status: int) -> bool:
    return status in (408, 429) or status >= 500 or status == -1  # -1: the SDK's own timeouts


def _retry_after(exc: oci.exceptions.ServiceError) -> float | None:
    try:
        return min(BACKOFF_MAX_S, float((exc.headers or {}).get("retry-after")))
    except (TypeError, ValueError):
        return None


def check_start(service: Service, probe: Callable[[], Any], what_to_set: str) -> None:
    """Run one cheap call at start: credentials the service refuses, or a resource it does not
    know, stop the server (ConfigError); a service that is only down does not (it may come back)."""
    try:
        probe()
    except oci.exceptions.ServiceError as exc:
        if exc.status == 401:
            raise ConfigError(f"{service.name} refused the credentials (401 {exc.code}): check MIS_OCI_AUTH "
                              "and, for api_key, the key and fingerprint in MIS_OCI_CONFIG_FILE / MIS_OCI_PROFILE") from None
        if exc.status in (403, 404):
            raise ConfigError(f"{service.name} answered {exc.status} {exc.code}: {what_to_set}") from None
        log.warning("%s answered %s at start; going on: %s", service.name, exc.status, exc.message)
    except ServiceUnavailable as exc:
        if "401" in exc.message:
            raise ConfigError(f"{exc.message}: check MIS_OCI_AUTH and its credentials") from None
        log.warning("%s; starting anyway, requests that need it answer 503 until it is back", exc.message)


def dumps(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True).encode()


class Refreshing:
    """Values fetched once and then served from memory, re-fetched in the background every
    `period_s` while someone asks for them: a reader never waits on the service unless the value is
    new to this process (or older than twice the period because refreshing failed). A refresh that
    fails keeps the last value: a service outage never takes away what was known."""

    KEEP_S = 600.0  # values nobody asked for in this long stop being refreshed

    def __init__(self, fetch: Callable[[Hashable], Any], period_s: float, name: str, background: bool = True):
        """`background=False` (the gunicorn master, which must not fork with threads running):
        a value older than the period is fetched again by the reader instead."""
        self.fetch = fetch
        self.background = background
        self.period_s = max(period_s, 0.05)
        self.name = name
        self._values: dict[Hashable, tuple[Any, float, float]] = {}  # key -> (value, fetched, asked)
        self._lock = threading.Lock()
        self._thread_pid: int | None = None

    def get(self, key: Hashable):
        self._ensure_thread()
        now = time.monotonic()
        entry = self._values.get(key)
        if entry is not None and now - entry[1] < (2 if self.background else 1) * self.period_s:
            self._values[key] = (entry[0], entry[1], now)
            return entry[0]
        try:
            value = self.fetch(key)
        except ServiceUnavailable:
            if entry is None:
                raise
            log.warning("%s: %s could not be refreshed; keeping what was known", self.name, key)
            return entry[0]
        self.put(key, value)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        now = time.monotonic()
        self._values[key] = (value, now, now)

    def _ensure_thread(self) -> None:
        """One refresher per process, started on first use: a thread does not survive a fork."""
        if self._thread_pid == os.getpid() or not self.background:
            return
        with self._lock:
            if self._thread_pid != os.getpid():
                self._thread_pid = os.getpid()
                threading.Thread(target=self._refresh_forever, name=f"mis-refresh-{self.name}", daemon=True).start()

    def _refresh_forever(self) -> None:
        while True:
            time.sleep(self.period_s / 4)  # a value is at most a period old, re-read about once a period
            now = time.monotonic()
            for key, (_, fetched, asked) in list(self._values.items()):
                if now - asked > self.KEEP_S:
                    self._values.pop(key, None)
                elif now - fetched >= 0.75 * self.period_s:
                    try:
                        value = self.fetch(key)
                    except MISError as exc:
                        log.warning("%s: could not refresh %s: %s", self.name, key, exc.message)
                        continue
                    except Exception:  # never let the refresher die: the next round tries again
                        log.exception("%s: refreshing %s failed", self.name, key)
                        continue
                    if key in self._values:
                        self._values[key] = (value, time.monotonic(), self._values[key][2])
