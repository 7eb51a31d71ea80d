"""API keys: who may call which operation.

The keys file (MIS_API_KEYS_FILE) is what the stacks mount from the Vault as a Kubernetes Secret:
`{"keys": [{"name": "scoring", "scopes": ["score"], "key": "..."}]}`. A Secret update swaps a
symlink under the mount, so the file is re-read whenever what its path resolves to changes; a file
that no longer parses keeps the last good keys (and says why in the log) instead of locking
everyone out.

Only SHA-256 digests of the keys are kept, and a presented key is compared with every one of them
in constant time, so neither the time an answer takes nor a memory dump tells a key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import Forbidden, Unauthorized

log = logging.getLogger(__name__)

SCORE, ADMIN, METRICS = "score", "admin", "metrics"
# What each scope lets a key do; `admin` can do everything the others can. `metrics` reads /metrics
# only: a monitoring system's key scores nothing.
SCOPES = {SCORE: frozenset({SCORE}), ADMIN: frozenset({SCORE, ADMIN, METRICS}), METRICS: frozenset({METRICS})}
MIN_KEY_LENGTH = 16  # shorter keys can be guessed; the stacks generate 48 characters
RECHECK_S = 1.0  # how often the keys file is looked at for a change


class KeysFileError(ValueError):
    """The keys file cannot be used; the message says what is wrong (never a key)."""


@dataclass(frozen=True)
class Caller:
    """Who is calling: a key's name and what it may do. `name` is None when authentication is off."""

    name: str | None
    scopes: frozenset[str]

    def may(self, scope: str) -> bool:
        return scope in self.scopes


ANONYMOUS_ADMIN = Caller(None, SCOPES[ADMIN])  # authentication off: the loopback demo trusts its caller


@dataclass(frozen=True)
class _Key:
    name: str
    scopes: frozenset[str]
    digest: bytes


def parse_keys(raw: bytes | str) -> tuple[_Key, ...]:
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise KeysFileError(f"not JSON ({exc.msg} at line {exc.lineno})") from None
    except (ValueError, RecursionError):  # not UTF-8, or nested beyond reason
        raise KeysFileError("not JSON text") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise KeysFileError('expected {"keys": [{"name": ..., "scopes": [...], "key": ...}, ...]}')
    keys: list[_Key] = []
    for number, entry in enumerate(entries, 1):
        where = f"key #{number}"
        if not isinstance(entry, dict):
            raise KeysFileError(f"{where} is not an object")
        name, scopes, key = entry.get("name"), entry.get("scopes"), entry.get("key")
        if not isinstance(name, str) or not name.strip() or not name.isprintable() or len(name) > 64:
            raise KeysFileError(f"{where} needs a `name` of 1 to 64 printable characters")
        where = f"key {name!r}"
        if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) and s in SCOPES for s in scopes):
            raise KeysFileError(f"{where} needs `scopes`, a non-empty list of {', '.join(SCOPES)}")
        if not isinstance(key, str) or len(key) < MIN_KEY_LENGTH or not key.isascii() or not key.isprintable() \
                or " " in key:
            raise KeysFileError(f"{where} needs a `key` of at least {MIN_KEY_LENGTH} printable ASCII characters "
                                "without spaces")
        digest = hashlib.sha256(key.encode()).digest()
        if any(k.name == name for k in keys) or any(hmac.compare_digest(k.digest, digest) for k in keys):
            raise KeysFileError(f"{where} repeats a name or a key of an earlier entry")
        keys.append(_Key(name, frozenset().union(*(SCOPES[s] for s in scopes)), digest))
    return tuple(keys)


class ApiKeys:
    """The keys of MIS_API_KEYS_FILE, kept current. Construction fails on a bad file (the server
    must not start with keys it cannot read); a later bad version only logs."""

    def __init__(self, path: Path, recheck_s: float = RECHECK_S):
        self.path = path
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._version, self._keys = self._read()
        self._checked = time.monotonic()

    def _read(self) -> tuple[tuple, tuple[_Key, ...]]:
        try:
            version = self._version_of()
            return version, parse_keys(self.path.read_bytes())
        except OSError as exc:
            raise KeysFileError(f"cannot read {self.path}: {exc.strerror}") from None
        except KeysFileError as exc:
            raise KeysFileError(f"{self.path}: {exc}") from None

    def _version_of(self) -> tuple:
        # The resolved path changes when Kubernetes swaps its `..data` symlink; mtime and size when
        # someone edits the file in place.
        stat = os.stat(self.path)
        return os.path.realpath(self.path), stat.st_ino, stat.st_mtime_ns, stat.st_size

    def refresh(self, force: bool = False) -> None:
        """Take a changed file's keys (at most every `recheck_s`, unless forced)."""
        now = time.monotonic()
        if (now - self._checked < self.recheck_s and not force) or not self._lock.acquire(blocking=False):
            return  # another thread is already looking
        try:
            self._checked = now
            try:
                version = self._version_of()
            except OSError as exc:  # gone or unreadable: one more version, logged once like a bad one
                version = ("unreadable", exc.errno)
            if version == self._version:
                return
            self._version = version
            try:
                self._keys = self._read()[1]
                log.warning("API keys reloaded from %s: %d keys", self.path, len(self._keys))
            except KeysFileError as exc:
                log.error("API keys file unusable, keeping the last good keys: %s", exc)
        finally:
            self._lock.release()

    def caller(self, authorization: str | None) -> Caller:
        """The caller an `Authorization` header names; Unauthorized when it names none."""
        self.refresh()
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("this operation needs an API key: send `Authorization: Bearer <key>`", invalid=False)
        digest = hashlib.sha256(token.strip().encode()).digest()
        found = None
        for key in self._keys:  # every key is compared, so the time taken says nothing about which matched
            if hmac.compare_digest(key.digest, digest):
                found = key
        if found is None:
            raise Unauthorized("the API key is not valid", invalid=True)
        return Caller(found.name, found.scopes)


class Gate:
    """Decides whether a request may run an operation that needs `scope` (None: open to all)."""

    def __init__(self, keys: ApiKeys | None):
        self.keys = keys

    @property
    def enabled(self) -> bool:
        return self.keys is not None

    def admit(self, scope: str | None, authorization: str | None) -> Caller | None:
        if self.keys is None:
            return ANONYMOUS_ADMIN
        if scope is None:
            return None  # open operations do not look at keys at all
        caller = self.keys.caller(authorization)
        if not caller.may(scope):
            raise Forbidden(f"the API key {caller.name!r} lacks the {scope!r} scope this operation needs", scope,
                            caller)
        return caller
