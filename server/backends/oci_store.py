"""An Object Storage bucket as the model store every replica shares (MIS_STORE=oci).

In the bucket:

    uploads/<id>/artifact.zip     an uploaded artifact, written first
    uploads/<id>/metadata.json    its metadata, written last: an upload exists (is listed, can be
                                  described and loaded) only once this is there, so no replica ever
                                  sees half of one
    state.json                    {"loaded": [...], "aliases": {...}}, as the local store's

Every write of state.json is conditional: if-match the etag it was read with (if-none-match `*`
when there was none), and read-change-write again when another replica got there first (412), so
no update is lost. Uploads are written if-none-match `*` under fresh ids.

Each worker keeps state.json in memory and re-reads it in the background every MIS_STATE_TTL_S
(a HEAD, and a GET only when the etag moved): `state_signature()`, which the registry asks on
every request, never touches the network, and every replica sees a change within the TTL.

Per replica, on local disk (the `LocalStore` under MIS_DATA_DIR): uploads' artifacts once fetched,
unpacked artifacts, staging, and the quarantine. The quarantine stays local on purpose: it keeps a
replica's workers from a model that keeps killing them there (a node short of memory is not every
node), the gunicorn master records strikes with a one-second lock it must never wait on the network
for, and an admin's load lifts it on the replica that answers.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO, Callable

import oci

from ..catalog import ModelInfo, validate_model_id
from ..errors import MISError, ServiceUnavailable
from ..store import LocalStore, _file_signature
from .oci_clients import Refreshing, Service, dumps

log = logging.getLogger(__name__)

STATE = "state.json"
UPLOADS = "uploads/"
_CONFLICT_RETRIES = 20
_CHUNK = 1024 * 1024


class OciStore:
    def __init__(self, service: Service, namespace: str | None, bucket: str, local: LocalStore,
                 state_ttl_s: float, metadata_refresh_s: float, background: bool = True):
        self.service = service
        self.bucket = bucket
        self.local = local
        self.state_ttl_s = state_ttl_s
        self.max_artifact_bytes = local.max_artifact_bytes
        self.background = background  # False in the gunicorn master: no poller thread across a fork
        self._namespace = namespace
        self._state: dict | None = None  # state.json as last read or written here
        self._etag: str | None = None
        self._state_lock = threading.Lock()
        self._poller_pid: int | None = None
        self._uploads = Refreshing(self._fetch_upload, metadata_refresh_s, "uploads", background)

    @property
    def namespace(self) -> str:
        if self._namespace is None:
            self._namespace = self.service.call("get_namespace").data
        return self._namespace

    def probe(self) -> None:
        """The bucket exists and these credentials may read it (the start-up check)."""
        if self._namespace is None:
            self._namespace = self.service.call("get_namespace", passthrough=(401, 403, 404)).data
        self.service.call("head_bucket", self._namespace, self.bucket, passthrough=(401, 403, 404))

    # -- objects -----------------------------------------------------------------------------

    def _get(self, name: str):
        """(bytes, etag), or None when there is no such object."""
        try:
            answer = self.service.call("get_object", self.namespace, self.bucket, name)
        except oci.exceptions.ServiceError:  # 404 (the only status passed through)
            return None
        return answer.data.content, answer.headers.get("etag")

    def _put(self, name: str, body, *, etag: str | None, md5: str | None = None,
             content_type: str = "application/json") -> str | None:
        """Conditional write: replaces the object read with `etag`, or (None) creates it. Returns the
        new etag, or None when the condition failed (someone else wrote first)."""
        condition = {"if_match": etag} if etag else {"if_none_match": "*"}
        try:
            answer = self.service.call("put_object", self.namespace, self.bucket, name, body,
                                       content_type=content_type, passthrough=(409, 412),
                                       **condition, **({"content_md5": md5} if md5 else {}))
        except oci.exceptions.ServiceError:
            return None
        return answer.headers.get("etag")

    def _delete(self, name: str) -> None:
        try:
            self.service.call("delete_object", self.namespace, self.bucket, name)
        except oci.exceptions.ServiceError:  # 404: already gone
            pass

    # -- uploaded models ---------------------------------------------------------------------

    def list_uploads(self) -> list[ModelInfo]:
        ids, start = [], None
        while True:
            answer = self.service.call("list_objects", self.namespace, self.bucket, prefix=UPLOADS, fields="name",
                                       **({"start": start} if start else {}))
            ids += [o.name.split("/")[1] for o in answer.data.objects if o.name.endswith("/metadata.json")]
            start = answer.data.next_start_with
            if not start:
                break
        found = [self.get_upload(model_id) for model_id in ids]
        return [info for info in found if info is not None]

    def get_upload(self, model_id: str) -> ModelInfo | None:
        return self._uploads.get(validate_model_id(model_id))

    def _fetch_upload(self, model_id: str) -> ModelInfo | None:
        found = self._get(f"{UPLOADS}{model_id}/metadata.json")
        if found is None:
            return None
        data = json.loads(found[0])
        return ModelInfo.from_dict({**data, "source": "upload"}) if data.get("id") == model_id else None

    def upload_artifact(self, model_id: str) -> Path:
        """The upload's artifact on local disk, fetched from the bucket the first time."""
        path = self.local.upload_artifact(model_id)
        if path.is_file():
            return path
        name = f"{UPLOADS}{model_id}/artifact.zip"
        try:
            answer = self.service.call("get_object", self.namespace, self.bucket, name)
        except oci.exceptions.ServiceError:
            return path  # gone: the registry's unpack answers that it is missing
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, staged = tempfile.mkstemp(dir=path.parent, prefix=".download-")
        md5 = hashlib.md5(usedforsecurity=False)
        try:
            with os.fdopen(handle, "wb") as out:
                for chunk in answer.data.iter_content(_CHUNK):
                    md5.update(chunk)
                    out.write(chunk)
            expected = answer.headers.get("opc-content-md5")
            if expected and base64.b64decode(expected) != md5.digest():
                raise self.service.unavailable(f"sent {name} damaged (MD5 mismatch)")
            os.replace(staged, path)
        except BaseException:
            os.unlink(staged)
            raise
        return path

    def save_upload(self, info: ModelInfo, artifact_zip: Path) -> None:
        """Artifact first, metadata last (the upload exists from then on); a failure removes both."""
        model_id = validate_model_id(info.id)
        prefix = f"{UPLOADS}{model_id}/"
        try:
            with open(artifact_zip, "rb") as body:
                md5 = base64.b64encode(hashlib.file_digest(body, "md5").digest()).decode()
                body.seek(0)
                if self._put(f"{prefix}artifact.zip", body, etag=None, md5=md5, content_type="application/zip") is None:
                    raise self.service.unavailable(f"already holds an upload {model_id}")
            metadata = {k: v for k, v in info.to_dict().items() if k != "source"}
            if self._put(f"{prefix}metadata.json", dumps(metadata), etag=None) is None:
                raise self.service.unavailable(f"already holds an upload {model_id}")
        except BaseException:
            for name in ("metadata.json", "artifact.zip"):
                try:
                    self._delete(prefix + name)
                except MISError:
                    log.error("could not remove %s%s of a failed upload from the bucket", prefix, name)
            raise
        self._uploads.put(model_id, info)
        # This replica keeps its copy: no download back of what it just sent.
        local = self.local.upload_artifact(model_id)
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(artifact_zip, local)

    def set_upload_env(self, model_id: str, env: str | None) -> ModelInfo | None:
        name = f"{UPLOADS}{validate_model_id(model_id)}/metadata.json"
        for _ in range(_CONFLICT_RETRIES):
            found = self._get(name)
            if found is None:
                return None
            info = ModelInfo.from_dict({**json.loads(found[0]), "source": "upload"}).with_env(env)
            metadata = {k: v for k, v in info.to_dict().items() if k != "source"}
            if self._put(name, dumps(metadata), etag=found[1]) is not None:
                self._uploads.put(model_id, info)
                return info
            _pause()
        raise self.service.unavailable(f"kept changing {name} ({_CONFLICT_RETRIES} tries)")

    def delete_upload(self, model_id: str) -> None:
        """Metadata first: from then on no replica lists or loads it."""
        prefix = f"{UPLOADS}{validate_model_id(model_id)}/"
        self._delete(prefix + "metadata.json")
        self._delete(prefix + "artifact.zip")
        self._uploads.put(model_id, None)
        self.local.delete_upload(model_id)

    def receive(self, stream: BinaryIO, limit: int) -> Path:
        return self.local.receive(stream, limit)

    # -- unpacked artifacts (local to each replica) -------------------------------------------

    def unpack(self, model_id: str, artifact_zip: Path) -> Path:
        return self.local.unpack(model_id, artifact_zip)

    def discard_unpacked(self, model_id: str) -> None:
        self.local.discard_unpacked(model_id)

    # -- shared state --------------------------------------------------------------------------

    def state_signature(self) -> tuple:
        """The etag of state.json as this worker last saw it, and the local quarantine's: memory
        and one stat(). The poller thread (started here, once per process) keeps it current."""
        if self.background and self._poller_pid != os.getpid():
            self._start_poller()
        if self._state is None:
            self._refresh()
        try:
            return self._etag, _file_signature(self.local._quarantine_path)
        except OSError:
            return self.local.state_signature()  # raises the typed storage error

    def loaded_ids(self) -> frozenset[str]:
        return frozenset(self._current().get("loaded", []))

    def aliases(self) -> dict[str, dict[str, dict]]:
        return self._current().get("aliases", {})

    def mark_loaded(self, model_id: str) -> None:
        self._update(lambda state: state.__setitem__("loaded", sorted({*state.get("loaded", []), model_id})))

    def mark_removed(self, model_id: str) -> None:
        self._update(lambda state: state.__setitem__("loaded", sorted(set(state.get("loaded", [])) - {model_id})))

    def set_alias(self, name: str, alias: str, spec: dict | None) -> bool:
        found = []

        def change(state: dict) -> None:
            aliases = state.setdefault("aliases", {})
            if spec is not None:
                aliases.setdefault(name, {})[alias] = spec
                found.append(True)
                return
            found.append(aliases.get(name, {}).pop(alias, None) is not None)
            if not aliases.get(name, True):
                del aliases[name]

        self._update(change)
        return found[-1]

    def _current(self) -> dict:
        if self._state is None:
            self._refresh()
        return self._state

    def _refresh(self) -> None:
        """Read state.json if its etag moved (a HEAD when it did not)."""
        try:
            head = self.service.call("head_object", self.namespace, self.bucket, STATE)
            etag = head.headers.get("etag")
        except oci.exceptions.ServiceError:  # 404: nothing was ever loaded
            etag = None
        if etag is not None and etag == self._etag and self._state is not None:
            return
        found = self._get(STATE) if etag is not None else None
        with self._state_lock:
            self._state, self._etag = (json.loads(found[0]), found[1]) if found else ({}, None)

    def _update(self, change: Callable[[dict], None]) -> None:
        """Read-change-write state.json, conditional on the etag read; again on a conflict."""
        for _ in range(_CONFLICT_RETRIES):
            found = self._get(STATE)
            state, etag = (json.loads(found[0]), found[1]) if found else ({}, None)
            before = copy.deepcopy(state)
            change(state)
            if state == before:
                with self._state_lock:
                    self._state, self._etag = state, etag
                return
            written = self._put(STATE, dumps(state), etag=etag)
            if written is not None:
                with self._state_lock:
                    self._state, self._etag = state, written
                return
            _pause()
        raise self.service.unavailable(f"kept changing {STATE} ({_CONFLICT_RETRIES} tries)")

    def _start_poller(self) -> None:
        with self._state_lock:
            if self._poller_pid == os.getpid():
                return
            self._poller_pid = os.getpid()
        threading.Thread(target=self._poll_forever, name="mis-state-poller", daemon=True).start()

    def _poll_forever(self) -> None:
        while True:
            time.sleep(self.state_ttl_s)
            try:
                self._refresh()
            except ServiceUnavailable as exc:  # keep serving what is known; the next round tries again
                log.warning("the shared model state could not be re-read: %s", exc.message)
            except Exception:
                log.exception("re-reading the shared model state failed")

    # -- quarantine (local to each replica) ----------------------------------------------------

    def quarantined(self) -> dict[str, str]:
        return self.local.quarantined()

    def record_strike(self, model_id: str, reason: str, **kwargs) -> str | None:
        return self.local.record_strike(model_id, reason, **kwargs)

    def release(self, model_id: str) -> bool:
        return self.local.release(model_id)


def _pause() -> None:
    """Between two tries of a conditional write that lost: writers that collided retry apart."""
    time.sleep(random.uniform(0.01, 0.1))
