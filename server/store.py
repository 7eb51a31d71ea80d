"""Where artifacts live once uploaded or fetched, and the model state every worker shares.

`LocalStore` keeps everything under one directory:

    uploads/<id>/       metadata.json + artifact.zip of each uploaded model (survive restarts)
    artifacts/<id>/     each model's unpacked artifact, extracted once and shared by all workers
    state.json          ids of the models this server has loaded, and the aliases of model names;
                        workers reconcile with it
    quarantine.json     models refused until an admin reloads them, and strikes counting towards it
    tmp/                staging for uploads and extraction, then renamed into place

Every write is staged and renamed so a reader in another process never sees half of it, and a
write that fails removes what it staged, so a full or read-only disk leaves nothing half-saved.
Storage faults reach callers as typed errors (`storage_fault`): a full store is 507, a read-only,
absent or failing one 503.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import json
import logging
import os
import shutil
import stat
import tempfile
import time
import uuid
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator, Protocol

from .catalog import ModelInfo, read_entry, validate_model_id, write_entry
from .errors import InsufficientStorage, InvalidArtifact, MISError, PayloadTooLarge, StoreUnavailable

log = logging.getLogger(__name__)

REQUIRED_MEMBERS = ("score.py", "runtime.yaml")
MAX_MEMBERS = 10_000
_CHUNK = 1024 * 1024

# A staging entry nothing has written to for this long belongs to a process that died (killed
# mid-upload, crashed): far longer than any upload, extraction or model load takes.
STALE_STAGING_S = 3600.0

# What the errno of a failed store operation means for the client; any other errno is a bug (500).
_FULL = {errno.ENOSPC, errno.EDQUOT}
_UNAVAILABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOENT, errno.ESTALE, errno.ENOTCONN,
                errno.ETIMEDOUT, errno.EHOSTDOWN, errno.EHOSTUNREACH}


def storage_fault(exc: OSError, action: str) -> MISError | None:
    """The typed error for a store operation (`action`, e.g. "save the upload") that failed with
    `exc`, or None when `exc` is no storage fault. The message says what failed, not where."""
    if exc.errno in _FULL:
        return InsufficientStorage(f"the model store is full: could not {action} ({exc.strerror})")
    if exc.errno in _UNAVAILABLE:
        return StoreUnavailable(f"the model store is unavailable: could not {action} ({exc.strerror})")
    return None


class Store(Protocol):
    """What the registry needs of a model store: `LocalStore` below (one machine), or
    server/backends/oci_store.py (an Object Storage bucket every replica shares)."""

    max_artifact_bytes: int

    def list_uploads(self) -> list[ModelInfo]: ...
    def get_upload(self, model_id: str) -> ModelInfo | None: ...
    def upload_artifact(self, model_id: str) -> Path:
        """The upload's artifact as a local file."""
    def save_upload(self, info: ModelInfo, artifact_zip: Path) -> None:
        """Store an upload (moving `artifact_zip` in): it appears whole, or not at all."""
    def set_upload_env(self, model_id: str, env: str | None) -> ModelInfo | None: ...
    def delete_upload(self, model_id: str) -> None: ...
    def receive(self, stream: BinaryIO, limit: int) -> Path: ...
    def unpack(self, model_id: str, artifact_zip: Path) -> Path: ...
    def discard_unpacked(self, model_id: str) -> None: ...
    def state_signature(self) -> tuple:
        """Changes whenever the shared state changes; asked on every request, so it must be cheap."""
    def loaded_ids(self) -> frozenset[str]: ...
    def aliases(self) -> dict[str, dict[str, dict]]: ...
    def mark_loaded(self, model_id: str) -> None: ...
    def mark_removed(self, model_id: str) -> None: ...
    def set_alias(self, name: str, alias: str, spec: dict | None) -> bool: ...
    def quarantined(self) -> dict[str, str]: ...
    def record_strike(self, model_id: str, reason: str, *, limit: int, window_s: float,
                      lock_timeout_s: float | None = None) -> str | None: ...
    def release(self, model_id: str) -> bool: ...


class LocalStore:
    def __init__(self, root: Path, max_artifact_bytes: int):
        self.root = root
        self.max_artifact_bytes = max_artifact_bytes
        self.uploads = root / "uploads"
        self.artifacts = root / "artifacts"
        self.tmp = root / "tmp"
        self.state_file = root / "state.json"
        self.quarantine_file = root / "quarantine.json"
        self._state_path, self._quarantine_path = str(self.state_file), str(self.quarantine_file)  # stat()ed per request
        try:
            self._make_layout()
        except OSError as exc:
            # A read-only or absent store must not stop the worker: its operations answer 503
            # until the store is back, and the first write then lays it out.
            if storage_fault(exc, "prepare the store") is None:
                raise
            log.warning("the model store cannot be prepared yet: %s", exc)
        sweep_staging(root)

    def _make_layout(self) -> None:
        for directory in (self.uploads, self.artifacts, self.tmp):
            directory.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _io(self, action: str) -> Iterator[None]:
        """Runs one store operation: an OSError that is a storage fault leaves as a typed error."""
        try:
            yield
        except OSError as exc:
            fault = storage_fault(exc, action)
            if fault is None:
                raise
            log.warning("could not %s: %s", action, exc)  # the operator's log keeps the path
            raise fault from exc

    def _new_staging_dir(self) -> Path:
        self._make_layout()  # the store may have been read-only when this process started
        return Path(tempfile.mkdtemp(dir=self.tmp))

    # -- uploaded models -------------------------------------------------------------------

    def list_uploads(self) -> list[ModelInfo]:
        with self._io("list the uploaded models"):
            if not self.uploads.is_dir():  # never laid out: the store was read-only from the start
                return []
            found = [read_entry(d, "upload") for d in sorted(self.uploads.iterdir()) if not d.name.startswith(".")]
        return [info for info in found if info is not None]

    def get_upload(self, model_id: str) -> ModelInfo | None:
        return read_entry(self.uploads / validate_model_id(model_id), "upload")

    def upload_artifact(self, model_id: str) -> Path:
        return self.uploads / validate_model_id(model_id) / "artifact.zip"

    def save_upload(self, info: ModelInfo, artifact_zip: Path) -> None:
        """Store an upload (moving `artifact_zip` in): it appears whole, or not at all."""
        with self._io("save the upload"):
            staging = self._new_staging_dir()
            try:
                shutil.move(artifact_zip, staging / "artifact.zip")
                write_entry(staging, info)
                os.rename(staging, self.uploads / validate_model_id(info.id))
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise

    def set_upload_env(self, model_id: str, env: str | None) -> ModelInfo | None:
        """Promote an upload; None when there is no such upload (any more)."""
        with self._io("promote the upload"), self._locked():
            info = self.get_upload(model_id)
            if info is None:
                return None
            info = info.with_env(env)
            try:
                write_entry(self.uploads / model_id, info)
            except FileNotFoundError:  # removed meanwhile
                return None
            return info

    def delete_upload(self, model_id: str) -> None:
        with self._io("delete the upload"):
            self._remove_tree(self.uploads / validate_model_id(model_id))

    def receive(self, stream: BinaryIO, limit: int) -> Path:
        """Copy an incoming artifact to a staging file, refusing more than `limit` bytes."""
        with self._io("receive the upload"):
            self._make_layout()
            handle, name = tempfile.mkstemp(dir=self.tmp, suffix=".zip")
            written = 0
            try:
                with os.fdopen(handle, "wb") as out:
                    while chunk := stream.read(_CHUNK):
                        written += len(chunk)
                        if written > limit:
                            raise PayloadTooLarge(f"upload is larger than the limit of {limit} bytes", limit=limit)
                        out.write(chunk)
            except BaseException:
                os.unlink(name)
                raise
        return Path(name)

    # -- unpacked artifacts ----------------------------------------------------------------

    def unpack(self, model_id: str, artifact_zip: Path) -> Path:
        """The model's artifact extracted once (validated first); reused when already there."""
        target = self.artifacts / validate_model_id(model_id)
        with self._io("unpack the model's artifact"):
            if target.is_dir():  # reused as it is: no write, so this works on a read-only store
                return target
            staging = self._new_staging_dir()
            try:
                extract_artifact(artifact_zip, staging, self.max_artifact_bytes)
                os.rename(staging, target)
            except OSError:
                if not target.is_dir():  # a rename lost to another worker's identical extraction is fine
                    raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return target

    def discard_unpacked(self, model_id: str) -> None:
        with self._io("delete the unpacked artifact"):
            self._remove_tree(self.artifacts / validate_model_id(model_id))

    def _remove_tree(self, path: Path) -> None:
        """Rename out of sight first so no reader sees a half-deleted directory. Renamed to a new
        name in tmp/ rather than into a new folder there: a full disk may have no room for one."""
        if not path.exists():
            return
        doomed = self.tmp / f"deleted-{uuid.uuid4().hex}"
        os.rename(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    # -- shared state ----------------------------------------------------------------------

    def state_signature(self) -> tuple:
        """Changes whenever state.json or quarantine.json is replaced: a worker then reconciles.
        Every request asks, so the common case is two plain stat() calls."""
        try:
            return _file_signature(self._state_path), _file_signature(self._quarantine_path)
        except OSError:
            with self._io("read the model state"):
                raise

    def loaded_ids(self) -> frozenset[str]:
        return frozenset(self._read_state().get("loaded", []))

    def aliases(self) -> dict[str, dict[str, dict]]:
        """{model name: {alias: {"versions": {version: weight}, "shadow": {...} or None}}}."""
        return self._read_state().get("aliases", {})

    def mark_loaded(self, model_id: str) -> None:
        if model_id in self.loaded_ids():
            return  # nothing to write, so an idempotent load answers on a read-only store too
        with self._state() as state:
            state["loaded"] = sorted({*state.get("loaded", []), model_id})

    def mark_removed(self, model_id: str) -> None:
        if model_id not in self.loaded_ids():
            return
        with self._state() as state:
            state["loaded"] = sorted(set(state.get("loaded", [])) - {model_id})

    def set_alias(self, name: str, alias: str, spec: dict | None) -> bool:
        """Set (or, with None, drop) one alias of a model name; False when there was none to drop."""
        with self._state() as state:
            aliases = state.setdefault("aliases", {})
            if spec is not None:
                aliases.setdefault(name, {})[alias] = spec
                return True
            found = aliases.get(name, {}).pop(alias, None) is not None
            if not aliases.get(name, True):
                del aliases[name]
            return found

    def _read_state(self) -> dict:
        return self._read_shared(self.state_file, "read the model state")

    def _read_shared(self, path: Path, action: str) -> dict:
        """One of the shared JSON files (state, quarantine); empty before its first write."""
        with self._io(action):
            try:
                return json.loads(path.read_text())
            except FileNotFoundError:
                return {}

    @contextlib.contextmanager
    def _state(self) -> Iterator[dict]:
        """state.json, read and then written back under the lock when the block changed it.
        Every worker's sync() sees a change by one stat(), so aliases live here too."""
        with self._io("save the model state"), self._locked():
            state = self._read_state()
            before = copy.deepcopy(state)
            yield state
            if state != before:
                self._replace_json(self.state_file, state)

    @contextlib.contextmanager
    def _locked(self, timeout_s: float | None = None) -> Iterator[None]:
        """Every writer of the shared files (state.json, quarantine.json) holds this lock."""
        self._make_layout()  # the store may have been read-only when this process started
        with open(self.root / "state.lock", "a") as lock:
            if timeout_s is None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            else:
                _flock_within(lock, timeout_s)
            yield

    def _replace_json(self, path: Path, data: dict) -> None:
        """Written aside, then renamed over: a reader in another process never sees half of it."""
        handle, name = tempfile.mkstemp(dir=self.tmp)
        try:
            with os.fdopen(handle, "w") as out:
                json.dump(data, out)
            os.replace(name, path)
        except BaseException:
            os.unlink(name)  # a full disk leaves no half-written copy behind
            raise

    # -- quarantine ------------------------------------------------------------------------
    # quarantine.json: {"quarantined": {id: reason}, "strikes": {id: [unix times]}}. Strikes come
    # from any worker (a predict timeout) or from the gunicorn master (a worker died in predict).

    def quarantined(self) -> dict[str, str]:
        return self._quarantine().get("quarantined", {})

    def record_strike(self, model_id: str, reason: str, *, limit: int, window_s: float,
                      lock_timeout_s: float | None = None) -> str | None:
        """Count one strike; at `limit` strikes within `window_s` the model is quarantined (the reason
        recorded is returned). gunicorn's master passes `lock_timeout_s`: it must never block on the
        lock for long."""
        now = time.time()
        with self._io("record a strike against the model"), self._locked(lock_timeout_s):
            data = self._quarantine()
            if model_id in data.get("quarantined", {}):
                return None  # already out of service (two workers died of it at once): one quarantine
            strikes = [t for t in data.setdefault("strikes", {}).get(model_id, []) if now - t < window_s] + [now]
            data["strikes"][model_id] = strikes
            quarantined = None
            if len(strikes) >= limit:
                quarantined = f"{reason} ({len(strikes)} times in {window_s:g} s)"
                data.setdefault("quarantined", {})[model_id] = quarantined
                del data["strikes"][model_id]
            self._replace_json(self.quarantine_file, data)
        return quarantined

    def release(self, model_id: str) -> bool:
        """Lift a model's quarantine and forget its strikes; False when there was nothing to lift."""
        known = self._quarantine()
        if model_id not in known.get("quarantined", {}) and model_id not in known.get("strikes", {}):
            return False
        with self._io("lift the model's quarantine"), self._locked():
            data = self._quarantine()
            data.get("quarantined", {}).pop(model_id, None)
            data.get("strikes", {}).pop(model_id, None)
            self._replace_json(self.quarantine_file, data)
        return True

    def _quarantine(self) -> dict:
        return self._read_shared(self.quarantine_file, "read the quarantine")


def extract_artifact(artifact_zip: Path, dest: Path, max_bytes: int) -> None:
    """Extract an OCI Data Science artifact zip after checking it cannot escape `dest` or explode."""
    if not zipfile.is_zipfile(artifact_zip):
        raise InvalidArtifact("the artifact is not a zip file")
    try:
        with zipfile.ZipFile(artifact_zip) as archive:
            members = archive.infolist()
            _check_members(members, max_bytes)
            budget = max_bytes
            for member in members:
                path = dest.joinpath(*PurePosixPath(member.filename).parts)
                if member.is_dir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                # Sizes in the zip directory can lie; count what actually comes out.
                with archive.open(member) as src, open(path, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        budget -= len(chunk)
                        if budget < 0:
                            raise _too_large(max_bytes)
                        out.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
        raise InvalidArtifact(f"the artifact zip cannot be read: {exc}") from None


def _check_members(members: list[zipfile.ZipInfo], max_bytes: int) -> None:
    if len(members) > MAX_MEMBERS:
        raise InvalidArtifact(f"the artifact has {len(members)} members; at most {MAX_MEMBERS} are allowed")
    for member in members:
        name = member.filename
        parts = PurePosixPath(name).parts
        if name.startswith(("/", "\\")) or "\\" in name or ".." in parts or ":" in name or not parts:
            raise InvalidArtifact(f"the artifact has an unsafe member path {name!r}", member=name)
        if stat.S_ISLNK(member.external_attr >> 16):
            raise InvalidArtifact(f"the artifact has a symbolic link {name!r}", member=name)
    if sum(m.file_size for m in members) > max_bytes:
        raise _too_large(max_bytes)
    top_level = {m.filename for m in members if not m.is_dir() and "/" not in m.filename}
    missing = [name for name in REQUIRED_MEMBERS if name not in top_level]
    if missing:
        raise InvalidArtifact(
            f"the artifact lacks {' and '.join(missing)} at the top level of the zip", missing=missing
        )


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the artifact expands past the limit of {max_bytes} bytes", limit=max_bytes)


def _flock_within(lock, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the store's state lock was held for over {timeout_s} s") from None
            time.sleep(0.01)


def _file_signature(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def sweep_staging(root: Path, older_than_s: float = STALE_STAGING_S) -> None:
    """Delete what uploads, extractions and state writes killed midway left in the store's tmp/.

    Workers start (and are restarted) while others are mid-upload, so by default only entries
    nothing has written to for `older_than_s` go. gunicorn's master, before it forks the workers,
    passes a much shorter age.
    """
    deadline = time.time() - older_than_s
    tmp = root / "tmp"
    try:
        for entry in list(tmp.iterdir()) if tmp.is_dir() else []:
            try:
                if _last_written(entry) > deadline:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except FileNotFoundError:
                continue  # another worker swept it first
    except OSError as exc:  # a read-only or failing store: a later start sweeps
        log.warning("could not sweep the store's staging leftovers: %s", exc)


def _last_written(path: Path) -> float:
    """The newest mtime in a staging entry: an extraction in progress keeps writing its files."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, files in os.walk(path):
            for name in dirs + files:
                newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
    return newest
