"""An Object Storage bucket as the uploads and the shared state every replica sees (MIS_STORE=oci).

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
(a HEAD, and a GET only when the etag moved): `OciState.signature()`, which the registry asks on
every request, never touches the network, and every replica sees a change within the TTL.

The other roles stay on each replica's local disk (server/backends/local_store.py, composed beside
these by server/app.py): the workspace (staging, unpacked artifacts), this replica's copies of
uploads' artifacts once fetched (`OciUploads.copies`), and the quarantine. The quarantine stays
local on purpose: it keeps a replica's workers from a model that keeps killing them there (a node
short of memory is not every node), the gunicorn master records strikes with a one-second lock it
must never wait on the network for, and an admin's load lifts it on the replica that answers.
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
import threading
import time
from pathlib import Path
from typing import Callable, TypeVar

import oci

from ..catalog import ModelInfo, validate_model_id
from ..errors import MISError, PayloadTooLarge, ServiceUnavailable
from ..storage import Uploads
from .local_store import add_loaded, change_alias, drop_loaded
from .oci_clients import Refreshing, Service, dumps

log = logging.getLogger(__name__)

STATE = "state.json"
UPLOADS = "uploads/"
_CONFLICT_RETRIES = 20
T = TypeVar("T")


class Bucket:
    """The bucket's objects under the call policy of `Service`: read, written conditionally, deleted."""

    def __init__(self, service: Service, namespace: str | None, name: str):
        self.service = service
        self.name = name
        self._namespace = namespace

    @property
    def namespace(self) -> str:
        if self._namespace is None:
            self._namespace = self.service.call("get_namespace").data
        return self._namespace

    def probe(self) -> None:
        """The bucket exists and these credentials may read it (the start-up check)."""
        if self._namespace is None:
            self._namespace = self.service.call("get_namespace", passthrough=(401, 403, 404)).data
        self.service.call("head_bucket", self._namespace, self.name, passthrough=(401, 403, 404))

    def open(self, name: str):
        """The SDK's answer to a GET (its body not read yet), or None when there is no such object."""
        try:
            return self.service.call("get_object", self.namespace, self.name, name)
        except oci.exceptions.ServiceError:  # 404 (the only status passed through)
            return None

    def get(self, name: str) -> tuple[bytes, str | None] | None:
        """(bytes, etag), or None when there is no such object."""
        answer = self.open(name)
        return None if answer is None else (answer.data.content, answer.headers.get("etag"))

    def etag(self, name: str) -> str | None:
        """The object's etag (a HEAD), or None when there is no such object."""
        try:
            return self.service.call("head_object", self.namespace, self.name, name).headers.get("etag")
        except oci.exceptions.ServiceError:  # 404
            return None

    def put(self, name: str, body, *, etag: str | None, md5: str | None = None,
            content_type: str = "application/json") -> str | None:
        """Conditional write: replaces the object read with `etag`, or (None) creates it. Returns the
        new etag, or None when the condition failed (someone else wrote first)."""
        condition = {"if_match": etag} if etag else {"if_none_match": "*"}
        try:
            answer = self.service.call("put_object", self.namespace, self.name, name, body,
                                       content_type=content_type, passthrough=(409, 412),
                                       **condition, **({"content_md5": md5} if md5 else {}))
        except oci.exceptions.ServiceError:
            return None
        return answer.headers.get("etag")

    def delete(self, name: str) -> None:
        try:
            self.service.call("delete_object", self.namespace, self.name, name)
        except oci.exceptions.ServiceError:  # 404: already gone
            pass

    def names(self, prefix: str) -> list[str]:
        """Every object name under `prefix`, page after page."""
        names, start = [], None
        while True:
            answer = self.service.call("list_objects", self.namespace, self.name, prefix=prefix, fields="name",
                                       **({"start": start} if start else {}))
            names += [o.name for o in answer.data.objects]
            start = answer.data.next_start_with
            if not start:
                return names


class OciUploads:
    """Uploads in the bucket. `copies` (local uploads) keeps this replica's copy of each artifact it
    sent or fetched, at the same place the local store keeps one."""

    def __init__(self, bucket: Bucket, copies: Uploads, max_artifact_bytes: int, metadata_refresh_s: float,
                 background: bool = True):
        self.bucket = bucket
        self.copies = copies
        self.max_artifact_bytes = max_artifact_bytes  # what this replica fetches of an upload's artifact, at most
        self._metadata = Refreshing(self._fetch, metadata_refresh_s, "uploads", background)

    def list(self) -> list[ModelInfo]:
        ids = [name.split("/")[1] for name in self.bucket.names(UPLOADS) if name.endswith("/metadata.json")]
        found = [self.get(model_id) for model_id in ids]
        return [info for info in found if info is not None]

    def get(self, model_id: str) -> ModelInfo | None:
        return self._metadata.get(validate_model_id(model_id))

    def _fetch(self, model_id: str) -> ModelInfo | None:
        found = self.bucket.get(f"{UPLOADS}{model_id}/metadata.json")
        if found is None:
            return None
        data = json.loads(found[0])
        return ModelInfo.from_dict({**data, "source": "upload"}) if data.get("id") == model_id else None

    def artifact(self, model_id: str) -> Path:
        """The upload's artifact on local disk, fetched from the bucket the first time."""
        path = self.copies.artifact(model_id)
        if path.is_file():
            return path
        name = f"{UPLOADS}{model_id}/artifact.zip"
        deadline = self.bucket.service.deadline()
        answer = self.bucket.open(name)
        if answer is None:
            return path  # gone: the registry's unpack answers that it is missing
        path.parent.mkdir(parents=True, exist_ok=True)
        self.bucket.service.download(
            answer, path, deadline=deadline, limit=self.max_artifact_bytes, md5=answer.headers.get("opc-content-md5"),
            too_large=lambda: PayloadTooLarge(f"the artifact of upload {model_id!r} in the bucket is larger than the "
                                              f"limit of {self.max_artifact_bytes} bytes (MIS_MAX_ARTIFACT_BYTES)",
                                              model_id=model_id, limit=self.max_artifact_bytes),
            damaged=lambda: self.bucket.service.unavailable(f"sent {name} damaged (MD5 mismatch)"))
        return path

    def save(self, info: ModelInfo, artifact_zip: Path) -> None:
        """Artifact first, metadata last (the upload exists from then on); a failure removes both."""
        model_id = validate_model_id(info.id)
        prefix = f"{UPLOADS}{model_id}/"
        try:
            with open(artifact_zip, "rb") as body:
                md5 = base64.b64encode(hashlib.file_digest(body, "md5").digest()).decode()
                body.seek(0)
                if self.bucket.put(f"{prefix}artifact.zip", body, etag=None, md5=md5,
                                   content_type="application/zip") is None:
                    raise self.bucket.service.unavailable(f"already holds an upload {model_id}")
            if self.bucket.put(f"{prefix}metadata.json", _metadata(info), etag=None) is None:
                raise self.bucket.service.unavailable(f"already holds an upload {model_id}")
        except BaseException:
            for name in ("metadata.json", "artifact.zip"):
                try:
                    self.bucket.delete(prefix + name)
                except MISError:
                    log.error("could not remove %s%s of a failed upload from the bucket", prefix, name)
            raise
        self._metadata.put(model_id, info)
        # This replica keeps its copy: no download back of what it just sent.
        local = self.copies.artifact(model_id)
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(artifact_zip, local)

    def set_env(self, model_id: str, env: str | None) -> ModelInfo | None:
        name = f"{UPLOADS}{validate_model_id(model_id)}/metadata.json"
        for _ in range(_CONFLICT_RETRIES):
            found = self.bucket.get(name)
            if found is None:
                return None
            info = ModelInfo.from_dict({**json.loads(found[0]), "source": "upload"}).with_env(env)
            if self.bucket.put(name, _metadata(info), etag=found[1]) is not None:
                self._metadata.put(model_id, info)
                return info
            _pause()
        raise self.bucket.service.unavailable(f"kept changing {name} ({_CONFLICT_RETRIES} tries)")

    def delete(self, model_id: str) -> None:
        """Metadata first: from then on no replica lists or loads it."""
        prefix = f"{UPLOADS}{validate_model_id(model_id)}/"
        self.bucket.delete(prefix + "metadata.json")
        self.bucket.delete(prefix + "artifact.zip")
        self._metadata.put(model_id, None)
        self.copies.delete(model_id)


class OciState:
    """state.json in the bucket, kept in memory and re-read by a poller thread (module docstring)."""

    def __init__(self, bucket: Bucket, ttl_s: float, background: bool = True):
        self.bucket = bucket
        self.ttl_s = ttl_s
        self.background = background  # False in the gunicorn master: no poller thread across a fork
        self._state: dict | None = None  # state.json as last read or written here
        self._etag: str | None = None
        self._lock = threading.Lock()
        self._poller_pid: int | None = None

    def signature(self) -> str | None:
        """The etag of state.json as this worker last saw it: memory only. The poller thread
        (started here, once per process) keeps it current."""
        if self.background and self._poller_pid != os.getpid():
            self._start_poller()
        if self._state is None:
            self._refresh()
        return self._etag

    def loaded_ids(self) -> frozenset[str]:
        return frozenset(self._current().get("loaded", []))

    def aliases(self) -> dict[str, dict[str, dict]]:
        return self._current().get("aliases", {})

    def mark_loaded(self, model_id: str) -> None:
        self._update(lambda state: add_loaded(state, model_id))

    def mark_removed(self, model_id: str) -> None:
        self._update(lambda state: drop_loaded(state, model_id))

    def set_alias(self, name: str, alias: str, spec: dict | None) -> bool:
        return self._update(lambda state: change_alias(state, name, alias, spec))

    def _current(self) -> dict:
        if self._state is None:
            self._refresh()
        return self._state

    def _refresh(self) -> None:
        """Read state.json if its etag moved (a HEAD when it did not)."""
        etag = self.bucket.etag(STATE)  # None: nothing was ever loaded
        if etag is not None and etag == self._etag and self._state is not None:
            return
        found = self.bucket.get(STATE) if etag is not None else None
        with self._lock:
            self._state, self._etag = (json.loads(found[0]), found[1]) if found else ({}, None)

    def _update(self, change: Callable[[dict], T]) -> T:
        """Read-change-write state.json, conditional on the etag read; again on a conflict."""
        for _ in range(_CONFLICT_RETRIES):
            found = self.bucket.get(STATE)
            state, etag = (json.loads(found[0]), found[1]) if found else ({}, None)
            before = copy.deepcopy(state)
            result = change(state)
            if state == before:
                with self._lock:
                    self._state, self._etag = state, etag
                return result
            written = self.bucket.put(STATE, dumps(state), etag=etag)
            if written is not None:
                with self._lock:
                    self._state, self._etag = state, written
                return result
            _pause()
        raise self.bucket.service.unavailable(f"kept changing {STATE} ({_CONFLICT_RETRIES} tries)")

    def _start_poller(self) -> None:
        with self._lock:
            if self._poller_pid == os.getpid():
                return
            self._poller_pid = os.getpid()
        threading.Thread(target=self._poll_forever, name="mis-state-poller", daemon=True).start()

    def _poll_forever(self) -> None:
        while True:
            time.sleep(self.ttl_s)
            try:
                self._refresh()
            except ServiceUnavailable as exc:  # keep serving what is known; the next round tries again
                log.warning("the shared model state could not be re-read: %s", exc.message)
            except Exception:
                log.exception("re-reading the shared model state failed")


def _metadata(info: ModelInfo) -> bytes:
    """An upload's metadata.json: its ModelInfo but for `source`, which the reader adds."""
    return dumps({k: v for k, v in info.to_dict().items() if k != "source"})


def _pause() -> None:
    """Between two tries of a conditional write that lost: writers that collided retry apart."""
    time.sleep(random.uniform(0.01, 0.1))
