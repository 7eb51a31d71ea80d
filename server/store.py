"""Where artifacts live once uploaded or fetched, and the model state every worker shares.

`LocalStore` keeps everything under one directory:

    uploads/<id>/       metadata.json + artifact.zip of each uploaded model (survive restarts)
    artifacts/<id>/     each model's unpacked artifact, extracted once and shared by all workers
    state.json          ids of the models this server has loaded; workers reconcile with it
    quarantine.json     models refused until an admin reloads them, and strikes counting towards it
    tmp/                staging for uploads and extraction, then renamed into place

Every write is staged and renamed so a reader in another process never sees half of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

from .catalog import ModelInfo, read_entry, validate_model_id, write_entry
from .errors import InvalidArtifact, PayloadTooLarge

REQUIRED_MEMBERS = ("score.py", "runtime.yaml")
MAX_MEMBERS = 10_000
_CHUNK = 1024 * 1024


class LocalStore:
    def __init__(self, root: Path, max_artifact_bytes: int):
        self.root = root
        self.max_artifact_bytes = max_artifact_bytes
        self.uploads = root / "uploads"
        self.artifacts = root / "artifacts"
        self.tmp = root / "tmp"
        self.state_file = root / "state.json"
        self.quarantine_file = root / "quarantine.json"
        for directory in (self.uploads, self.artifacts, self.tmp):
            directory.mkdir(parents=True, exist_ok=True)

    # -- uploaded models -------------------------------------------------------------------

    def list_uploads(self) -> list[ModelInfo]:
        found = (read_entry(d, "upload") for d in sorted(self.uploads.iterdir()) if not d.name.startswith("."))
        return [info for info in found if info is not None]

    def get_upload(self, model_id: str) -> ModelInfo | None:
        return read_entry(self.uploads / validate_model_id(model_id), "upload")

    def upload_artifact(self, model_id: str) -> Path:
        return self.uploads / validate_model_id(model_id) / "artifact.zip"

    def save_upload(self, info: ModelInfo, artifact_zip: Path) -> None:
        staging = Path(tempfile.mkdtemp(dir=self.tmp))
        shutil.move(artifact_zip, staging / "artifact.zip")
        write_entry(staging, info)
        os.rename(staging, self.uploads / validate_model_id(info.id))

    def delete_upload(self, model_id: str) -> None:
        _remove_tree(self.uploads / validate_model_id(model_id), self.tmp)

    def receive(self, stream: BinaryIO, limit: int) -> Path:
        """Copy an incoming artifact to a staging file, refusing more than `limit` bytes."""
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
        if target.is_dir():
            return target
        staging = Path(tempfile.mkdtemp(dir=self.tmp))
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
        _remove_tree(self.artifacts / validate_model_id(model_id), self.tmp)

    # -- shared state ----------------------------------------------------------------------

    def state_signature(self) -> tuple:
        """Changes whenever state.json or quarantine.json is replaced: a worker then reconciles."""
        return _file_signature(self.state_file), _file_signature(self.quarantine_file)

    def loaded_ids(self) -> frozenset[str]:
        try:
            return frozenset(json.loads(self.state_file.read_text()).get("loaded", []))
        except FileNotFoundError:
            return frozenset()

    def mark_loaded(self, model_id: str) -> None:
        with self._state() as loaded:
            loaded.add(model_id)

    def mark_removed(self, model_id: str) -> None:
        with self._state() as loaded:
            loaded.discard(model_id)

    @contextlib.contextmanager
    def _state(self) -> Iterator[set[str]]:
        with self._locked():
            loaded = set(self.loaded_ids())
            before = set(loaded)
            yield loaded
            if loaded != before:
                self._replace_json(self.state_file, {"loaded": sorted(loaded)})

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Every writer of the shared files (state.json, quarantine.json) holds this lock."""
        with open(self.root / "state.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _replace_json(self, path: Path, data: dict) -> None:
        """Written aside, then renamed over: a reader in another process never sees half of it."""
        handle, name = tempfile.mkstemp(dir=self.tmp)
        with os.fdopen(handle, "w") as out:
            json.dump(data, out)
        os.replace(name, path)

    # -- quarantine ------------------------------------------------------------------------
    # quarantine.json: {"quarantined": {id: reason}, "strikes": {id: [unix times]}}. Strikes come
    # from any worker (a predict timeout) or from the gunicorn master (a worker died in predict).

    def quarantined(self) -> dict[str, str]:
        return self._quarantine().get("quarantined", {})

    def record_strike(self, model_id: str, reason: str, *, limit: int, window_s: float) -> bool:
        """Count one strike; at `limit` strikes within `window_s` the model is quarantined (True)."""
        now = time.time()
        with self._locked():
            data = self._quarantine()
            strikes = [t for t in data.setdefault("strikes", {}).get(model_id, []) if now - t < window_s] + [now]
            data["strikes"][model_id] = strikes
            quarantine = len(strikes) >= limit
            if quarantine:
                data.setdefault("quarantined", {})[model_id] = f"{reason} ({len(strikes)} times in {window_s:g} s)"
                del data["strikes"][model_id]
            self._replace_json(self.quarantine_file, data)
        return quarantine

    def release(self, model_id: str) -> bool:
        """Lift a model's quarantine and forget its strikes; False when there was nothing to lift."""
        if model_id not in self.quarantined() and model_id not in self._quarantine().get("strikes", {}):
            return False
        with self._locked():
            data = self._quarantine()
            data.get("quarantined", {}).pop(model_id, None)
            data.get("strikes", {}).pop(model_id, None)
            self._replace_json(self.quarantine_file, data)
        return True

    def _quarantine(self) -> dict:
        try:
            return json.loads(self.quarantine_file.read_text())
        except FileNotFoundError:
            return {}


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


def _file_signature(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _remove_tree(path: Path, tmp: Path) -> None:
    """Rename out of sight first so no reader sees a half-deleted directory."""
    if not path.exists():
        return
    doomed = Path(tempfile.mkdtemp(dir=tmp)) / path.name
    os.rename(path, doomed)
    shutil.rmtree(doomed.parent, ignore_errors=True)
