"""The storage roles on this machine's disk: all four with MIS_STORE=local, the workspace and the
quarantine of every replica otherwise. One directory (MIS_DATA_DIR/store) holds them:

    uploads/<id>/       metadata.json + artifact.zip of each uploaded model (survive restarts)
    artifacts/<id>/     each model's unpacked artifact, extracted once and shared by all workers
    state.json          ids of the models this server has loaded, and the aliases of model names;
                        workers reconcile with it
    quarantine.json     models refused until an admin reloads them, and strikes counting towards it
    tmp/                staging for uploads and extraction, then renamed into place

Every write is staged and renamed so a reader in another process never sees half of it, and a
write that fails removes what it staged, so a full or read-only disk leaves nothing half-saved.
Storage faults reach callers as typed errors (`store_dir.storage_fault`): a full store is 507, a
read-only, absent or failing one 503.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

from ..catalog import ModelInfo, read_entry, validate_model_id, write_entry
from ..errors import PayloadTooLarge
from ..storage import Storage
from .extract import extract_artifact
from .store_dir import StoreDir, typed_faults

_CHUNK = 1024 * 1024
T = TypeVar("T")


def local_storage(root: Path, max_artifact_bytes: int) -> Storage:
    """The four roles on one directory, prepared (`StoreDir.prepare`)."""
    directory = StoreDir(root)
    directory.prepare()
    return Storage(LocalUploads(directory), LocalWorkspace(directory, max_artifact_bytes), LocalState(directory),
                   LocalQuarantine(directory))


class LocalUploads:
    def __init__(self, directory: StoreDir):
        self.directory = directory

    def list(self) -> list[ModelInfo]:
        uploads = self.directory.uploads
        with typed_faults("list the uploaded models"):
            if not uploads.is_dir():  # never laid out: the store was read-only from the start
                return []
            found = [read_entry(d, "upload") for d in sorted(uploads.iterdir()) if not d.name.startswith(".")]
        return [info for info in found if info is not None]

    def get(self, model_id: str) -> ModelInfo | None:
        return read_entry(self.directory.uploads / validate_model_id(model_id), "upload")

    def artifact(self, model_id: str) -> Path:
        return self.directory.uploads / validate_model_id(model_id) / "artifact.zip"

    def save(self, info: ModelInfo, artifact_zip: Path) -> None:
        """Store an upload (moving `artifact_zip` in): it appears whole, or not at all."""
        with typed_faults("save the upload"):
            staging = self.directory.new_staging_dir()
            try:
                shutil.move(artifact_zip, staging / "artifact.zip")
                write_entry(staging, info)
                os.rename(staging, self.directory.uploads / validate_model_id(info.id))
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise

    def set_env(self, model_id: str, env: str | None) -> ModelInfo | None:
        """Promote an upload; None when there is no such upload (any more)."""
        with typed_faults("promote the upload"), self.directory.locked():
            info = self.get(model_id)
            if info is None:
                return None
            info = info.with_env(env)
            try:
                write_entry(self.directory.uploads / model_id, info)
            except FileNotFoundError:  # removed meanwhile
                return None
            return info

    def delete(self, model_id: str) -> None:
        with typed_faults("delete the upload"):
            self.directory.remove_tree(self.directory.uploads / validate_model_id(model_id))


class LocalWorkspace:
    def __init__(self, directory: StoreDir, max_artifact_bytes: int):
        self.directory = directory
        self.max_artifact_bytes = max_artifact_bytes

    def receive(self, stream: BinaryIO, limit: int) -> Path:
        """Copy an incoming artifact to a staging file, refusing more than `limit` bytes."""
        with typed_faults("receive the upload"):
            self.directory.make_layout()
            handle, name = tempfile.mkstemp(dir=self.directory.tmp, suffix=".zip")
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

    def unpack(self, model_id: str, artifact_zip: Path) -> Path:
        """The model's artifact extracted once (validated first); reused when already there."""
        target = self.directory.artifacts / validate_model_id(model_id)
        with typed_faults("unpack the model's artifact"):
            if target.is_dir():  # reused as it is: no write, so this works on a read-only store
                return target
            staging = self.directory.new_staging_dir()
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
        with typed_faults("delete the unpacked artifact"):
            self.directory.remove_tree(self.directory.artifacts / validate_model_id(model_id))


# -- the shared state's document, {"loaded": [ids], "aliases": {...}}, as every backend keeps it --

def add_loaded(state: dict, model_id: str) -> None:
    state["loaded"] = sorted({*state.get("loaded", []), model_id})


def drop_loaded(state: dict, model_id: str) -> None:
    state["loaded"] = sorted(set(state.get("loaded", [])) - {model_id})


def change_alias(state: dict, name: str, alias: str, spec: dict | None) -> bool:
    """Set (or, with None, drop) one alias of a model name; False when there was none to drop."""
    aliases = state.setdefault("aliases", {})
    if spec is not None:
        aliases.setdefault(name, {})[alias] = spec
        return True
    found = aliases.get(name, {}).pop(alias, None) is not None
    if not aliases.get(name, True):
        del aliases[name]
    return found


class LocalState:
    """state.json. Every worker's sync() sees a change by one stat(), so aliases live here too."""

    def __init__(self, directory: StoreDir):
        self.directory = directory
        self._path = str(directory.state_file)  # stat()ed per request

    def signature(self) -> tuple | None:
        return _file_signature(self._path)

    def loaded_ids(self) -> frozenset[str]:
        return frozenset(self._read().get("loaded", []))

    def aliases(self) -> dict[str, dict[str, dict]]:
        return self._read().get("aliases", {})

    def mark_loaded(self, model_id: str) -> None:
        if model_id in self.loaded_ids():
            return  # nothing to write, so an idempotent load answers on a read-only store too
        self._update(lambda state: add_loaded(state, model_id))

    def mark_removed(self, model_id: str) -> None:
        if model_id not in self.loaded_ids():
            return
        self._update(lambda state: drop_loaded(state, model_id))

    def set_alias(self, name: str, alias: str, spec: dict | None) -> bool:
        return self._update(lambda state: change_alias(state, name, alias, spec))

    def _read(self) -> dict:
        return _read_json(self.directory.state_file, "read the model state")

    def _update(self, change: Callable[[dict], T]) -> T:
        """Read, change and (when the change changed it) write back state.json, under the lock."""
        with typed_faults("save the model state"), self.directory.locked():
            state = self._read()
            before = copy.deepcopy(state)
            result = change(state)
            if state != before:
                _replace_json(self.directory, self.directory.state_file, state)
        return result


class LocalQuarantine:
    """quarantine.json: {"quarantined": {id: reason}, "strikes": {id: [unix times]}}. Strikes come
    from any worker (a predict timeout) or from the gunicorn master (a worker died in predict)."""

    def __init__(self, directory: StoreDir):
        self.directory = directory
        self._path = str(directory.quarantine_file)  # stat()ed per request

    def signature(self) -> tuple | None:
        return _file_signature(self._path)

    def quarantined(self) -> dict[str, str]:
        return self._read().get("quarantined", {})

    def record_strike(self, model_id: str, reason: str, *, limit: int, window_s: float,
                      lock_timeout_s: float | None = None) -> str | None:
        """Count one strike; at `limit` strikes within `window_s` the model is quarantined (the reason
        recorded is returned). gunicorn's master passes `lock_timeout_s`: it must never block on the
        lock for long."""
        now = time.time()
        with typed_faults("record a strike against the model"), self.directory.locked(lock_timeout_s):
            data = self._read()
            if model_id in data.get("quarantined", {}):
                return None  # already out of service (two workers died of it at once): one quarantine
            strikes = [t for t in data.setdefault("strikes", {}).get(model_id, []) if now - t < window_s] + [now]
            data["strikes"][model_id] = strikes
            quarantined = None
            if len(strikes) >= limit:
                quarantined = f"{reason} ({len(strikes)} times in {window_s:g} s)"
                data.setdefault("quarantined", {})[model_id] = quarantined
                del data["strikes"][model_id]
            _replace_json(self.directory, self.directory.quarantine_file, data)
        return quarantined

    def release(self, model_id: str) -> bool:
        """Lift a model's quarantine and forget its strikes; False when there was nothing to lift."""
        known = self._read()
        if model_id not in known.get("quarantined", {}) and model_id not in known.get("strikes", {}):
            return False
        with typed_faults("lift the model's quarantine"), self.directory.locked():
            data = self._read()
            data.get("quarantined", {}).pop(model_id, None)
            data.get("strikes", {}).pop(model_id, None)
            _replace_json(self.directory, self.directory.quarantine_file, data)
        return True

    def _read(self) -> dict:
        return _read_json(self.directory.quarantine_file, "read the quarantine")


def _file_signature(path: str) -> tuple | None:
    """Changes whenever the file is replaced; None before its first write. Every request asks, so
    it is one plain stat()."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError:
        with typed_faults("read the model state"):
            raise
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _read_json(path: Path, action: str) -> dict:
    """One of the shared JSON files (state, quarantine); empty before its first write."""
    with typed_faults(action):
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return {}


def _replace_json(directory: StoreDir, path: Path, data: dict) -> None:
    """Written aside, then renamed over: a reader in another process never sees half of it."""
    handle, name = tempfile.mkstemp(dir=directory.tmp)
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(data, out)
        os.replace(name, path)
    except BaseException:
        os.unlink(name)  # a full disk leaves no half-written copy behind
        raise
