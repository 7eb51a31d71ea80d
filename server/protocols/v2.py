"""Open Inference Protocol (KServe V2) REST responders, with its repository extension and binary
tensor data extension (the tensors themselves: server/protocols/tensors.py). Models, versions,
aliases, keys, gating and limits are the core's (server/core/), exactly as for /api/v1.
"""

from __future__ import annotations

import re

import falcon

from .. import __version__
from ..auth import ADMIN, SCORE
from ..config import Config
from ..core.registry import Registry
from ..core.routing import Target, version_order
from ..errors import BadRequest, ModelNotFound, Remedy
from ..warmup import Warmup
from .common import parse_json, read_body, resolve, to_json
from .tensors import binary_data, model_metadata, model_payload, output_tensor, read_inputs, requested_outputs

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ["model_repository", "binary_tensor_data"]

# What a V2 client can do about an error, in its own routes (server/errors.py's Remedy).
HINTS = {
    Remedy.LOAD: "; load it first: POST /v2/repository/models/{model_id}/load",
    Remedy.RELEASE: "; POST /v2/repository/models/{model_id}/load reloads it",
    Remedy.PROMOTE: ". To serve it here, promote it: `mis promote {model_id} --env {env}` (an admin key); every "
                    "worker sees it within {within_s:g} s",
    Remedy.CHANGE_ALIAS: "; change or delete the alias first",
}

class ServerMetadata:
    scope = SCORE

    def on_get(self, req, resp):
        resp.media = {"name": "model-inference-server", "version": __version__, "extensions": EXTENSIONS}


class ServerLive:
    def on_get(self, req, resp):
        resp.media = {"live": True}


class ServerReady:
    def __init__(self, warmup: Warmup):
        self.warmup = warmup

    def on_get(self, req, resp):
        resp.media = {"ready": self.warmup.ready}
        if not self.warmup.ready:
            resp.status = falcon.HTTP_503


class _ModelResource:
    scope = SCORE

    def __init__(self, registry: Registry):
        self.registry = registry

    def target(self, req, model_name: str, model_version: str | None) -> Target:
        return resolve(req, self.registry, model_name, model_version)


class ModelMetadata(_ModelResource):
    def on_get(self, req, resp, model_name, model_version=None):
        target = self.target(req, model_name, model_version)
        info = self.registry.describe(target.model_id)
        named = self.registry.versions_of(model_name)  # empty when the model is addressed by its id
        versions = sorted(named, key=version_order) if named and not model_version else [target.version]
        resp.media = model_metadata(model_name, versions, self.registry.signature(target.model_id),
                                    info.framework, sorted(self.registry.aliases().get(info.name, {})))


class ModelReady(_ModelResource):
    def on_get(self, req, resp, model_name, model_version=None):
        target = self.target(req, model_name, model_version)
        reason = self.registry.quarantine_reason(target.model_id)
        resp.media = {"name": model_name, "version": target.version, "ready": reason is None}
        if reason is not None:
            resp.status = falcon.HTTP_503
            resp.media["error"] = f"model {target.model_id!r} is quarantined: {reason}"


class ModelInfer(_ModelResource):
    def __init__(self, registry: Registry, config: Config):
        super().__init__(registry)
        self.limit = config.max_body_bytes

    def on_post(self, req, resp, model_name, model_version=None):
        body = memoryview(read_body(req, self.limit, binary=True))
        header = req.get_header(HEADER_LENGTH)
        if header is not None:
            if not re.fullmatch(r"[0-9]{1,12}", header) or not 0 < int(header) <= len(body):
                raise BadRequest(f"{HEADER_LENGTH} must be the JSON header's length, within the body")
            request, binary = parse_json(body[:int(header)]), body[int(header):]
        else:
            request, binary = parse_json(body), memoryview(b"")
        if not isinstance(request, dict):
            raise BadRequest("the inference request must be a JSON object with `inputs`")
        request_id = request.get("id", req.context.request_id)
        if not isinstance(request_id, str) or len(request_id) > 256:
            raise BadRequest("`id` must be a string of at most 256 characters")
        tensors = read_inputs(request, binary)
        target = self.target(req, model_name, model_version)
        signature = self.registry.signature(target.model_id)
        wanted = requested_outputs(request, signature.outputs)
        payload = model_payload(tensors, signature.feature_names)
        result = self.registry.score(target.model_id, payload, outputs=tuple(name for name, _ in wanted),
                                     shadow=target.shadow, request_id=req.context.request_id)
        outputs, tails = [], []
        for name, as_binary in wanted:
            head, values = output_tensor(target.model_id, name, result.outputs[name])
            if as_binary:
                tails.append(binary_data(values))
                head["parameters"] = {"binary_data_size": len(tails[-1])}
            else:
                head["data"] = values.reshape(-1).tolist()
            outputs.append(head)
        answer = to_json({"model_name": model_name, "model_version": target.version, "id": request_id,
                          "parameters": {"model_id": target.model_id}, "outputs": outputs})
        if tails:
            resp.set_header(HEADER_LENGTH, str(len(answer)))
            resp.content_type = "application/octet-stream"
            resp.data = answer + b"".join(tails)
        else:
            resp.content_type = falcon.MEDIA_JSON
            resp.data = answer


class RepositoryIndex:
    scope = SCORE

    def __init__(self, registry: Registry, config: Config):
        self.registry = registry
        self.limit = config.max_body_bytes

    def on_post(self, req, resp):
        body = read_body(req, self.limit)
        request = parse_json(body) if body.strip() else {}
        if not isinstance(request, dict) or not isinstance(request.get("ready", False), bool):
            raise BadRequest('send {} or {"ready": true|false}')
        loaded = self.registry.loaded_ids()
        index = []
        for info in self.registry.all_models():
            reason = self.registry.quarantine_reason(info.id) if info.id in loaded else "not loaded"
            index.append({"name": info.name, "version": info.version, "state": "READY" if reason is None
                          else "UNAVAILABLE", "reason": reason or "", "id": info.id})
        if request.get("ready"):
            index = [entry for entry in index if entry["state"] == "READY"]
        resp.media = index


class RepositoryLoad:
    """Loads every version of a model name (or the one model an id names)."""

    scope, audit = ADMIN, "load"

    def __init__(self, registry: Registry):
        self.registry = registry

    def on_post(self, req, resp, model_name):
        models = self.registry.models_named(model_name)
        if not models:
            raise ModelNotFound(f"no model is named {model_name!r}", model_name=model_name)
        for info in models:
            self.registry.load(info.id)
        resp.media = {}


class RepositoryUnload:
    """Unloads every loaded version of a model name; uploads stay stored (unlike removemodel)."""

    scope, audit = ADMIN, "unload"

    def __init__(self, registry: Registry):
        self.registry = registry

    def on_post(self, req, resp, model_name):
        models = self.registry.models_named(model_name)  # every copy: two uploads may share name and version
        if not models:
            raise ModelNotFound(f"no model is named {model_name!r}", model_name=model_name)
        loaded = self.registry.loaded_ids()
        for info in models:
            if info.id in loaded:
                self.registry.unload(info.id)
        resp.media = {}


def add_routes(app: falcon.App, registry: Registry, config: Config, warmup: Warmup) -> None:
    app.add_route("/v2", ServerMetadata())
    app.add_route("/v2/health/live", ServerLive())
    app.add_route("/v2/health/ready", ServerReady(warmup))
    model = "/v2/models/{model_name}"
    versioned = f"{model}/versions/{{model_version}}"
    metadata, ready, infer = ModelMetadata(registry), ModelReady(registry), ModelInfer(registry, config)
    for path in (model, versioned):
        app.add_route(path, metadata)
        app.add_route(f"{path}/ready", ready)
        app.add_route(f"{path}/infer", infer)
    app.add_route("/v2/repository/index", RepositoryIndex(registry, config))
    app.add_route("/v2/repository/models/{model_name}/load", RepositoryLoad(registry))
    app.add_route("/v2/repository/models/{model_name}/unload", RepositoryUnload(registry))
