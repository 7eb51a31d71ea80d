"""A local stand-in for the parts of OCI Data Science (20190101) and Object Storage (20160918)
that the server's OCI backends use, served on 127.0.0.1 for the real `oci` SDK to talk to.

It checks every request's HTTP signature (draft-cavage, as the SDK signs) against the test key's
public key and answers 401 to a request that is unsigned, signed by another key or altered after
signing. Faults (status codes, slow answers) are injected per path; every request is logged. How a
model's artifact is sent can be changed too (`Delivery`): a HEAD that lies about its size, a chunked
body, a body larger than the artifact, a trickle; the bytes of it actually sent are counted.
"""

from __future__ import annotations

import base64
import configparser
import email.utils
import hashlib
import json
import re
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

NAMESPACE = "mis-test-ns"
TENANCY = "ocid1.tenancy.oc1..aaaaaaaatest"
USER = "ocid1.user.oc1..aaaaaaaatest"
REGION = "us-phoenix-1"
COMPARTMENT = "ocid1.compartment.oc1..aaaaaaaatest"
PROJECT = "ocid1.datascienceproject.oc1.phx.aaaaaaaatest"
_SIGNATURE = re.compile(r'(\w+)="([^"]*)"')


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def fingerprint(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashlib.md5(der, usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


def write_oci_config(directory: Path, key: rsa.RSAPrivateKey, profile: str = "DEFAULT") -> Path:
    """A throwaway OCI config file and key, as `oci setup config` writes them."""
    directory.mkdir(parents=True, exist_ok=True)
    key_file = directory / f"{profile.lower()}-key.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    config = configparser.ConfigParser()
    config_file = directory / "config"
    if config_file.exists():
        config.read(config_file)
    config[profile] = {"user": USER, "fingerprint": fingerprint(key), "tenancy": TENANCY, "region": REGION,
                       "key_file": str(key_file)}
    with open(config_file, "w") as out:
        config.write(out)
    return config_file


@dataclass
class Fault:
    method: str
    path: re.Pattern
    status: int | None  # None: answer normally (after the delay)
    count: int
    delay_s: float = 0.0
    headers: dict = field(default_factory=dict)


@dataclass
class Delivery:
    """How a model's artifact is answered (the defaults: as the service does)."""
    size: int | None = None  # bytes GET sends: the artifact, then zeros up to this (made as they are sent)
    head_size: int | None = None  # the Content-Length HEAD claims; None: what GET sends (chunked: none at all)
    chunked: bool = False  # GET answers Transfer-Encoding: chunked, with no Content-Length
    piece: int = 64 * 1024  # bytes per write
    pause_s: float = 0.0  # between two pieces: a trickle
    cut_after: int | None = None  # hang up once this many bytes are sent (the headers promised them all)


@dataclass
class Model:
    details: dict
    artifact: bytes
    etag: str = field(default_factory=lambda: uuid.uuid4().hex)
    artifact_md5: str | None = None  # None: the artifact's real MD5 (none sent for a Delivery.size body)
    delivery: Delivery = field(default_factory=Delivery)
    sent: int = 0  # bytes of artifact bodies written to a client's socket, all GETs together

    def summary(self) -> dict:
        keys = ("id", "compartmentId", "projectId", "displayName", "lifecycleState", "timeCreated", "createdBy",
                "freeformTags", "definedTags")
        return {k: self.details[k] for k in keys}


@dataclass
class StoredObject:
    data: bytes
    etag: str
    content_type: str


class Emulator:
    def __init__(self, public_key: rsa.RSAPublicKey, key_id: str):
        self.public_key, self.key_id = public_key, key_id
        self.models: dict[str, Model] = {}
        self.buckets: dict[str, dict[str, StoredObject]] = {}
        self.faults: list[Fault] = []
        self.page_max = 100  # the service's largest page of models; tests lower it to force paging
        self.log: list[tuple[str, str, int]] = []  # (method, path, status)
        self.lock = threading.RLock()  # answers are logged under it too
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "Emulator":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- test controls -----------------------------------------------------------------------

    def add_model(self, entry_dir: Path, *, env: str | None, model_id: str | None = None,
                  compartment: str = COMPARTMENT, project: str = PROJECT, state: str = "ACTIVE") -> str:
        """A catalog model from a local catalog entry (metadata.json + artifact.zip built by ADS)."""
        meta = json.loads((entry_dir / "metadata.json").read_text())
        model_id = model_id or f"ocid1.datasciencemodel.oc1.phx.{uuid.uuid4().hex}"
        custom = [m for m in meta.get("custom_metadata", []) if m.get("key") != "env"]
        custom += [{"key": "env", "value": env, "category": "Other"}] if env else []
        with self.lock:
            created = f"2026-01-01T00:{len(self.models) // 60:02d}:{len(self.models) % 60:02d}.000Z"
        self.models[model_id] = Model(details={
            "id": model_id, "compartmentId": compartment, "projectId": project, "displayName": meta["name"],
            "description": meta.get("description", ""), "lifecycleState": state, "timeCreated": created,
            "createdBy": USER, "freeformTags": {}, "definedTags": {}, "versionLabel": meta.get("version"),
            "customMetadataList": [{"description": "", **m} for m in custom],
            "definedMetadataList": [{"key": t["key"], "value": t["value"] if isinstance(t["value"], str) or t["value"] is None
                                     else json.dumps(t["value"]), "category": None, "description": ""}
                                    for t in meta.get("taxonomy_metadata", [])],
            "inputSchema": json.dumps(meta["input_schema"]) if meta.get("input_schema") else None,
            "outputSchema": json.dumps(meta["output_schema"]) if meta.get("output_schema") else None,
        }, artifact=(entry_dir / "artifact.zip").read_bytes())
        return model_id

    def set_env(self, model_id: str, env: str) -> None:
        """An edit in the console: the model's `env` custom metadata changes (and its etag)."""
        with self.lock:
            model = self.models[model_id]
            entries = [m for m in model.details["customMetadataList"] if m["key"] != "env"]
            model.details["customMetadataList"] = entries + [{"key": "env", "value": env, "category": "Other",
                                                              "description": ""}]
            model.etag = uuid.uuid4().hex

    def env_of(self, model_id: str) -> str | None:
        return next((m["value"] for m in self.models[model_id].details["customMetadataList"] if m["key"] == "env"), None)

    def fail(self, method: str, path: str, status: int | None, count: int = 1, delay_s: float = 0.0,
             headers: dict | None = None) -> None:
        """The next `count` requests matching method and path (a regex searched in the path) answer
        `status` after `delay_s` (None: answered normally, only late)."""
        with self.lock:
            self.faults.append(Fault(method, re.compile(path), status, count, delay_s, headers or {}))

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def requests(self, method: str, path: str) -> int:
        with self.lock:
            return sum(1 for m, p, _ in self.log if m == method and re.search(path, p))

    def bucket(self, name: str) -> dict[str, StoredObject]:
        return self.buckets.setdefault(name, {})

    # -- HTTP ----------------------------------------------------------------------------------

    def _handler(self):
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, status: int, body=None, headers: dict | None = None, raw: bytes | None = None):
                data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
                with emulator.lock:  # before answering: a client that has its answer finds its request counted
                    emulator.log.append((self.command, self.path, status))
                self.send_response(status)
                self.send_header("opc-request-id", uuid.uuid4().hex)
                if raw is None:
                    self.send_header("content-type", "application/json")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _error(self, status: int, code: str, message: str, headers: dict | None = None):
                self._answer(status, {"code": code, "message": message}, headers)

            def _dispatch(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                problem = emulator.check_signature(self.command, self.path, self.headers, body)
                if problem:
                    return self._error(401, "NotAuthenticated", problem)
                fault = emulator.take_fault(self.command, self.path)
                if fault is not None:
                    time.sleep(fault.delay_s)
                    if fault.status is not None:
                        code = {429: "TooManyRequests", 503: "ServiceUnavailable"}.get(fault.status, "InternalServerError")
                        return self._error(fault.status, code, "injected fault", fault.headers)
                try:
                    emulator.route(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _dispatch

        return Handler

    def check_signature(self, method: str, path: str, headers, body: bytes) -> str | None:
        authorization = headers.get("authorization") or ""
        if not authorization.startswith("Signature "):
            return "the request is not signed"
        fields = dict(_SIGNATURE.findall(authorization))
        if fields.get("keyId") != self.key_id or fields.get("algorithm") != "rsa-sha256":
            return "unknown key"
        signed = fields.get("headers", "").split()
        if not {"date", "(request-target)", "host"} <= set(signed):
            return "the signature must cover date, (request-target) and host"
        lines = []
        for name in signed:
            if name == "(request-target)":
                lines.append(f"(request-target): {method.lower()} {path}")
            elif headers.get(name) is None:
                return f"signed header {name} is missing"
            else:
                lines.append(f"{name}: {headers.get(name)}")
        try:
            self.public_key.verify(base64.b64decode(fields.get("signature", "")), "\n".join(lines).encode(),
                                   padding.PKCS1v15(), hashes.SHA256())
        except Exception:
            return "the signature does not verify"
        if "x-content-sha256" in signed and \
                base64.b64encode(hashlib.sha256(body).digest()).decode() != headers.get("x-content-sha256"):
            return "the body does not match x-content-sha256"
        sent = email.utils.parsedate_to_datetime(headers.get("date")).timestamp()
        if abs(time.time() - sent) > 300:
            return "the date is more than 5 minutes off"
        return None

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.count > 0 and fault.method == method and fault.path.search(path):
                    fault.count -= 1
                    return fault
        return None

    # -- the APIs ----------------------------------------------------------------------------

    def route(self, h, body: bytes) -> None:
        url = urllib.parse.urlsplit(h.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        parts = url.path.split("/")
        if url.path == "/20190101/models" and h.command == "GET":
            return self.list_models(h, query)
        if len(parts) >= 4 and parts[1:3] == ["20190101", "models"]:
            model = self.models.get(urllib.parse.unquote(parts[3]))
            if model is None or model.details["compartmentId"] != COMPARTMENT:
                return h._error(404, "NotAuthorizedOrNotFound", "no such model")
            if len(parts) == 4 and h.command == "GET":
                return h._answer(200, model.details, {"etag": model.etag})
            if len(parts) == 4 and h.command == "PUT":
                return self.update_model(h, model, json.loads(body))
            if parts[4:] == ["artifact", "content"] and h.command in ("GET", "HEAD"):
                return self.artifact(h, model)
        if url.path == "/n" and h.command == "GET":
            return h._answer(200, NAMESPACE)
        if len(parts) >= 5 and parts[1] == "n" and parts[3] == "b":
            if parts[2] != NAMESPACE:
                return h._error(404, "NamespaceNotFound", "no such namespace")
            bucket = self.buckets.get(parts[4])
            if bucket is None:
                return h._error(404, "BucketNotFound", "no such bucket")
            if len(parts) == 5 and h.command == "HEAD":
                return h._answer(200, headers={"etag": "bucket"})
            if parts[5:] == ["o"] and h.command == "GET":
                return self.list_objects(h, bucket, query)
            if len(parts) >= 7 and parts[5] == "o":
                return self.object(h, bucket, urllib.parse.unquote("/".join(parts[6:])), body)
        h._error(404, "NotFound", f"the emulator has no {h.command} {url.path}")

    def artifact(self, h, model: Model) -> None:
        """The artifact's HEAD or GET, as `model.delivery` says; the body written in pieces, each
        counted in `model.sent` once the socket took it (a client that hangs up stops it)."""
        how = model.delivery
        size = len(model.artifact) if how.size is None else how.size
        headers = {"content-type": "application/octet-stream", "etag": f"artifact-{model.details['id']}",
                   "content-disposition": "attachment; filename=artifact.zip"}
        if model.artifact_md5 or how.size is None:
            headers["content-md5"] = model.artifact_md5 or base64.b64encode(
                hashlib.md5(model.artifact, usedforsecurity=False).digest()).decode()
        if h.command == "GET" and how.chunked:
            headers["transfer-encoding"] = "chunked"
        elif h.command == "GET" or not how.chunked or how.head_size is not None:
            headers["content-length"] = str(size if h.command == "GET" or how.head_size is None else how.head_size)
        with self.lock:
            self.log.append((h.command, h.path, 200))
        h.send_response(200)
        h.send_header("opc-request-id", uuid.uuid4().hex)
        for name, value in headers.items():
            h.send_header(name, value)
        h.end_headers()
        if h.command == "HEAD":
            return
        h.close_connection = True  # whatever happens to the body, this connection ends with it
        for start in range(0, size, how.piece):
            if start and how.pause_s:
                time.sleep(how.pause_s)
            piece = model.artifact[start:start + how.piece]
            piece += bytes(min(how.piece, size - start) - len(piece))
            if how.cut_after is not None and start + len(piece) > how.cut_after:
                h.wfile.write(piece[:how.cut_after - start])
                with self.lock:
                    model.sent += how.cut_after - start
                return  # close_connection: the handler closes the socket mid-body
            h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if how.chunked else piece)
            with self.lock:
                model.sent += len(piece)
        if how.chunked:
            h.wfile.write(b"0\r\n\r\n")

    def list_models(self, h, query: dict) -> None:
        if query.get("compartmentId") != COMPARTMENT:
            return h._error(404, "NotAuthorizedOrNotFound", "no such compartment")
        with self.lock:
            models = [m for m in self.models.values() if m.details["compartmentId"] == COMPARTMENT
                      and query.get("projectId") in (None, m.details["projectId"])
                      and query.get("lifecycleState") in (None, m.details["lifecycleState"])]
        models.sort(key=lambda m: m.details["timeCreated"], reverse=query.get("sortOrder") == "DESC")
        try:
            start, limit = int(query.get("page") or 0), int(query.get("limit") or 100)
        except ValueError:
            return h._error(400, "InvalidParameter", "bad page")
        end = start + min(limit, self.page_max)
        headers = {"opc-next-page": str(end)} if end < len(models) else {}
        h._answer(200, [m.summary() for m in models[start:end]], headers)

    def update_model(self, h, model: Model, change: dict) -> None:
        with self.lock:
            if h.headers.get("if-match") not in (None, model.etag):
                return h._error(412, "NoEtagMatch", "the model changed")
            for key in ("customMetadataList", "definedMetadataList", "displayName", "description"):
                if key in change:
                    model.details[key] = [{"description": "", "category": None, **m} for m in change[key]] \
                        if key.endswith("List") else change[key]
            model.etag = uuid.uuid4().hex
        h._answer(200, model.details, {"etag": model.etag})

    def list_objects(self, h, bucket: dict, query: dict) -> None:
        prefix, start = query.get("prefix", ""), query.get("start", "")
        limit = min(int(query.get("limit") or 1000), 1000)
        with self.lock:
            names = sorted(n for n in bucket if n.startswith(prefix) and n >= start)
            page = [{"name": n, "etag": bucket[n].etag, "size": len(bucket[n].data)} for n in names[:limit]]
        answer = {"objects": page, "prefixes": []}
        if len(names) > limit:
            answer["nextStartWith"] = names[limit]
        h._answer(200, answer)

    def object(self, h, bucket: dict, name: str, body: bytes) -> None:
        if_match, if_none_match = h.headers.get("if-match"), h.headers.get("if-none-match")
        with self.lock:
            current = bucket.get(name)
            if h.command in ("GET", "HEAD"):
                if current is None:
                    return h._error(404, "ObjectNotFound", f"no object {name}")
                md5 = base64.b64encode(hashlib.md5(current.data, usedforsecurity=False).digest()).decode()
                return h._answer(200, raw=current.data, headers={"etag": current.etag, "opc-content-md5": md5,
                                                                 "content-type": current.content_type})
            if h.command == "PUT":
                if if_none_match == "*" and current is not None:
                    return h._error(412, "IfNoneMatchFailed", f"{name} exists")
                if if_match is not None and (current is None or current.etag != if_match):
                    return h._error(412, "IfMatchFailed", f"{name} changed")
                sent_md5 = h.headers.get("content-md5")
                if sent_md5 and sent_md5 != base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode():
                    return h._error(400, "InvalidContentMD5", "the body does not match content-md5")
                bucket[name] = StoredObject(body, uuid.uuid4().hex, h.headers.get("content-type") or "")
                return h._answer(200, headers={"etag": bucket[name].etag})
            if h.command == "DELETE":
                if current is None:
                    return h._error(404, "ObjectNotFound", f"no object {name}")
                if if_match is not None and current.etag != if_match:
                    return h._error(412, "IfMatchFailed", f"{name} changed")
                del bucket[name]
                return h._answer(204)
        h._error(405, "MethodNotAllowed", h.command)
