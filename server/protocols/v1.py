"""The reference design's REST API, /api/v1: parse the request, call the core, serialize the answer.

Each resource declares the API key scope its operations need (`scope`; None: open) and, when it
changes state, the name its audit lines carry (`audit`); server/middleware.py enforces both.
"""

from __future__ import annotations

import contextlib
import os
import re
import time

import falcon

from .. import __version__
from ..auth import ADMIN, SCORE, Gate
from ..config import Config
from ..core.registry import Registry
from ..errors import BadRequest, Remedy, UnsupportedMediaType
from ..warmup import Warmup
from .common import check_length, model_answer_json, read_json, resolve

PREFIX = "/api/v1"
FORM_FIELD_MAX = 255
_ENV = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


# What a v1 client can do about an error, in its own routes (server/errors.py's Remedy).
HINTS = {
    Remedy.LOAD: f"; POST {PREFIX}/loadmodel/{{model_id}} first",
    Remedy.RELEASE: f"; POST {PREFIX}/loadmodel/{{model_id}} reloads it",
    Remedy.PROMOTE: (f". To serve it here, promote it: `mis promote {{model_id}} --env {{env}}` (POST "
                     f'{PREFIX}/promotemodel/{{model_id}} with {{{{"env": "{{env}}"}}}}, an admin key); every worker '
                     "sees it within {within_s:g} s"),
    Remedy.CHANGE_ALIAS: f"; change or delete the alias first (PUT or DELETE {PREFIX}/aliases/{{{{model_name}}}}/{{{{alias}}}})",
    Remedy.UPLOAD_WITHOUT_ENV: f"; upload without env, then promote it with POST {PREFIX}/promotemodel/{{{{model_id}}}}",
}


def summary(info, loaded: bool) -> dict:
    return {
        "id": info.id,
        "name": info.name,
        "version": info.version,
        "framework": info.framework,
        "lifecycle_state": info.lifecycle_state,
        "env": info.env,
        "loaded": loaded,
        "source": info.source,
    }


class ListModels:
    scope = SCORE

    def __init__(self, registry: Registry):
        self.registry = registry

    def on_get(self, req, resp):
        models, next_page = self.registry.list_models(
            req.get_param("compartment_id"),
            req.get_param("project_id"),
            req.get_param_as_int("no_of_models", min_value=1, max_value=1000, default=400),
            req.get_param("page"),
        )
        if next_page:
            resp.set_header("opc-next-page", next_page)
        loaded = self.registry.loaded_ids()
        resp.media = {"models": [summary(m, m.id in loaded) for m in models], "count": len(models),
                      "next_page": next_page}


class ModelDetails:
    scope = SCORE

    def __init__(self, registry: Registry):
        self.registry = registry

    def on_get(self, req, resp, model_id):
        info = self.registry.describe(model_id)
        resp.media = {**info.to_dict(), **summary(info, info.id in self.registry.loaded_ids()),
                      "env_mismatches": self.registry.env_mismatches(model_id)}
        resp.media.pop("artifact")


class LoadModel:
    scope, audit = ADMIN, "load"

    def __init__(self, registry: Registry):
        self.registry = registry

    def on_post(self, req, resp, model_id):
        status, load_ms = self.registry.load(model_id)
        resp.media = {"model_id": model_id, "status": status, "load_ms": round(load_ms, 3)}


class UploadModel:
    scope, audit = ADMIN, "upload"

    def __init__(self, registry: Registry, config: Config):
        self.registry = registry
        self.limit = config.max_upload_bytes

    def on_post(self, req, resp):
        check_length(req, self.limit, "the upload")
        if req.content_type is None or not req.content_type.lower().startswith("multipart/form-data"):
            raise UnsupportedMediaType("upload a multipart/form-data form with fields file, model_name, env, version")
        fields: dict[str, str] = {}
        with contextlib.ExitStack() as cleanup:
            artifact = None
            for part in req.get_media():
                if part.name == "file" and artifact is None:
                    artifact = self.registry.receive(part.stream)
                    cleanup.callback(artifact.unlink, missing_ok=True)
                elif part.name in ("model_name", "env", "version"):
                    fields[part.name] = part.get_text().strip()
            if artifact is None:
                raise BadRequest("the form has no `file` field with the artifact zip")
            if not fields.get("model_name"):
                raise BadRequest("the form has no `model_name` field")
            for name, value in fields.items():
                if len(value) > FORM_FIELD_MAX or not value.isprintable():
                    raise BadRequest(f"`{name}` must be printable text of at most {FORM_FIELD_MAX} characters")
            info = self.registry.upload(artifact, fields["model_name"], fields.get("version") or "1",
                                        fields.get("env") or None)
        req.context.model_id = info.id  # for the access and audit lines
        resp.status = falcon.HTTP_201
        resp.location = f"{PREFIX}/getmodelinfo/{info.id}"
        resp.media = {"model_id": info.id, "model_name": info.name, "version": info.version, "env": info.env,
                      "status": "loaded"}


class PromoteModel:
    """Sets a model's `env` (JSON `{"env": "qa"}`; null withdraws it): promotion is an admin act."""

    scope, audit = ADMIN, "promote"

    def __init__(self, registry: Registry, config: Config):
        self.registry = registry
        self.limit = config.max_body_bytes

    def on_post(self, req, resp, model_id):
        body = read_json(req, self.limit)
        env = body.get("env", "") if isinstance(body, dict) else ""  # no `env` at all is an error, null is not
        if env is not None and not (isinstance(env, str) and _ENV.match(env)):
            raise BadRequest('send {"env": "<1-64 letters, digits, ., _ or ->"} or {"env": null}')
        info = self.registry.promote(model_id, env)
        resp.media = {"model_id": info.id, "env": info.env, "status": "promoted" if env else "withdrawn"}


class RemoveModel:
    scope, audit = ADMIN, "remove"

    def __init__(self, registry: Registry):
        self.registry = registry

    def on_delete(self, req, resp, model_id):
        self.registry.remove(model_id)
        resp.media = {"model_id": model_id, "status": "removed"}


class Score:
    scope = SCORE

    def __init__(self, registry: Registry, config: Config):
        self.registry = registry
        self.limit = config.max_body_bytes

    def on_post(self, req, resp):
        """The model is named by its id (`model_id`), or by its name and a version or alias
        (`model_name`, `version`; without one, as /v2 does)."""
        started = time.perf_counter()
        model_id, model_name = req.get_param("model_id"), req.get_param("model_name")
        if (model_id is None) == (model_name is None):
            raise BadRequest("name the model: ?model_id=<id>, or ?model_name=<name> with an optional "
                             "&version=<version or alias>")
        payload = read_json(req, self.limit)
        shadow = None
        if model_name is not None:
            target = resolve(req, self.registry, model_name, req.get_param("version"))
            model_id, shadow = target.model_id, target.shadow
        result = self.registry.score(model_id, payload, shadow=shadow, request_id=req.context.request_id)
        req.context.model_version = result.model_version
        answer = {
            "model_id": result.model_id,
            "model_version": result.model_version,
            "prediction": result.prediction,
            "timing": {"predict_ms": round(result.predict_ms, 3),
                       "total_ms": round(1000 * (time.perf_counter() - started), 3)},
        }
        if result.load_ms:  # this worker had unloaded the model to stay within MIS_MAX_LOADED_MODELS
            answer["timing"]["load_ms"] = round(result.load_ms, 3)
        resp.data = model_answer_json(model_id, answer)  # here, not after the responder: the model's failure
        resp.content_type = falcon.MEDIA_JSON


class Aliases:
    scope = SCORE

    def __init__(self, registry: Registry):
        self.registry = registry

    def on_get(self, req, resp):
        resp.media = {"aliases": self.registry.aliases()}


class Alias:
    """An alias of a model name: which versions it sends traffic to, by weight, and which version
    it mirrors a share of that traffic to (`shadow`)."""

    scope, audit = ADMIN, "alias"

    def __init__(self, registry: Registry, config: Config):
        self.registry = registry
        self.limit = config.max_body_bytes

    def on_put(self, req, resp, model_name, alias):
        spec = self.registry.set_alias(model_name, alias, read_json(req, self.limit))
        resp.media = {"model_name": model_name, "alias": alias, **spec}

    def on_delete(self, req, resp, model_name, alias):
        self.registry.delete_alias(model_name, alias)
        resp.media = {"model_name": model_name, "alias": alias, "status": "deleted"}


class ServerInfo:
    scope = SCORE

    def __init__(self, registry: Registry, config: Config, gate: Gate):
        self.registry = registry
        self.config = config
        self.gate = gate
        self.started = time.monotonic()

    def on_get(self, req, resp):
        caller = req.context.caller
        resp.media = {
            "auth": {"mode": "bearer" if self.gate.enabled else "off", "caller": caller.name,
                     "scopes": sorted(caller.scopes)},
            "version": __version__,
            "environment": self.config.env,
            "env_gating": self.config.env is not None,
            "worker_pid": os.getpid(),
            "workers": self.config.workers,
            "catalog": self.registry.catalog.kind,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "models": self.registry.loaded_stats(),
            "memory": self.registry.memory_stats(),
            "runtime": {**self.registry.policy.environment.to_dict(installation=caller.may(ADMIN)),
                        "env_compat": self.registry.policy.env_compat},
        }


class Health:
    def on_get(self, req, resp):
        resp.media = {"status": "ok"}


class Liveness:
    def on_get(self, req, resp):
        resp.media = {"status": "alive"}


class Readiness:
    def __init__(self, warmup: Warmup, config: Config):
        self.warmup = warmup
        self.instance = {"instance": config.instance_id} if config.instance_id else {}

    def on_get(self, req, resp):
        if self.warmup.ready:
            resp.media = {"status": "ready", **self.instance}
            return
        resp.status = falcon.HTTP_503
        status = "draining" if self.warmup.draining else "loading" if not self.warmup.done else "failed"
        resp.media = {"status": status, "pending": sorted(self.warmup.pending), "failed": self.warmup.failed}


def add_routes(app: falcon.App, registry: Registry, config: Config, warmup: Warmup, gate: Gate) -> None:
    app.add_route(f"{PREFIX}/listmodels", ListModels(registry))
    app.add_route(f"{PREFIX}/getmodelinfo/{{model_id}}", ModelDetails(registry))
    app.add_route(f"{PREFIX}/loadmodel/{{model_id}}", LoadModel(registry))
    app.add_route(f"{PREFIX}/uploadmodel", UploadModel(registry, config))
    app.add_route(f"{PREFIX}/promotemodel/{{model_id}}", PromoteModel(registry, config))
    app.add_route(f"{PREFIX}/removemodel/{{model_id}}", RemoveModel(registry))
    app.add_route(f"{PREFIX}/score", Score(registry, config))
    app.add_route(f"{PREFIX}/aliases", Aliases(registry))
    app.add_route(f"{PREFIX}/aliases/{{model_name}}/{{alias}}", Alias(registry, config))
    app.add_route(f"{PREFIX}/serverinfo", ServerInfo(registry, config, gate))
    app.add_route(f"{PREFIX}/healthcheck", Health())
    app.add_route(f"{PREFIX}/health/live", Liveness())
    app.add_route(f"{PREFIX}/health/ready", Readiness(warmup, config))
