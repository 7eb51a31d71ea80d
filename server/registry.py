"""The protocol-free core: which models exist, which are loaded in this worker, and scoring.

All workers (and, with a shared store, all replicas) share one model state: the set of loaded ids
in the store. Each public call first reconciles this worker with it (one stat() when nothing
changed), so a load, upload or removal answered by one worker is seen by every worker on its
next request.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import random
import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

import orjson

from .catalog import Catalog, ModelInfo, page_of, validate_model_id
from .errors import (
    AliasInUse,
    BadRequest,
    EnvMismatch,
    InvalidPage,
    MISError,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotLoaded,
    ModelPredictFailed,
    ModelQuarantined,
    PredictTimeout,
    UploadEnvRefused,
)
from . import metrics
from .artifact import read_schema
from .environment import Needs, ServerEnvironment, check_environment, missing_library
from .frameworks import Runtime, framework_of_artifact, open_runtime, preopen
from .guard import PredictGuard, captured_output
from .logs import audit_server_change, log_shadow
from .store import Store
from .threads import DaemonPool

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    info: ModelInfo
    runtime: Runtime
    loaded_at: float = field(default_factory=time.time)
    checked_at: float = field(default_factory=time.monotonic)
    requests: int = 0
    errors: int = 0
    timeouts: int = 0
    predict_seconds: float = 0.0
    env_mismatches: list[str] = field(default_factory=list)  # what MIS_ENV_COMPAT=warn let through
    signature: Signature | None = None  # worked out on first asking (V2 asks on every request)

    def stats(self) -> dict:
        return {
            "model_id": self.info.id,
            "name": self.info.name,
            "version": self.info.version,
            "framework": self.info.framework,
            "env": self.info.env,
            "requests": self.requests,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "mean_predict_ms": round(1000 * self.predict_seconds / self.requests, 3) if self.requests else None,
            "loaded_at": _utc(self.loaded_at),
            "env_mismatches": self.env_mismatches,
        }


@dataclass(frozen=True)
class Prediction:
    model_id: str
    model_version: str
    prediction: Any
    predict_ms: float
    load_ms: float = 0.0  # this worker had unloaded the model and loaded it again for this request


@dataclass(frozen=True)
class Signature:
    """What a loaded model takes and gives, for protocols that declare it (V2 model metadata)."""

    n_features: int | None
    feature_names: list[str] | None
    feature_types: dict[str, str]  # feature name -> dtype, from the artifact's input schema
    output_type: str | None  # the prediction's dtype, from the artifact's output schema
    outputs: tuple[str, ...]  # "predict", and "predict_proba" for a classifier


# A request names a model's version, or one of its aliases: `latest` (the highest loaded version),
# or one an operator set, which may split traffic between versions and mirror a share to another.
# A request that names no version gets the alias `default` when there is one, else `latest`.
LATEST, DEFAULT = "latest", "default"
ALIAS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")
SHADOW_QUEUE = 64  # mirrored requests waiting for the shadow thread; more are dropped, not queued


@dataclass(frozen=True)
class Target:
    """The loaded model a request resolved to, and the one it is mirrored to (if any)."""

    model_id: str
    version: str
    shadow: str | None = None


class Registry:
    def __init__(self, catalog: Catalog, store: Store, guard: PredictGuard, *, env: str | None,
                 metadata_ttl_s: float, max_upload_bytes: int, quarantine_strikes: int, quarantine_window_s: float,
                 upload_envs: frozenset[str] | None = None, max_in_memory: int = 0,
                 pinned: frozenset[str] = frozenset(), environment: ServerEnvironment | None = None,
                 env_compat: str = "warn"):
        self.catalog = catalog
        self.store = store
        self.guard = guard
        self.env = env
        self.metadata_ttl_s = metadata_ttl_s
        self.max_upload_bytes = max_upload_bytes
        self.quarantine_strikes = quarantine_strikes
        self.quarantine_window_s = quarantine_window_s
        self.upload_envs = upload_envs  # None: an upload may claim any env
        self.max_in_memory = max_in_memory  # 0: no limit
        self.pinned = pinned  # never unloaded to make room
        self.environment = environment or ServerEnvironment.detect(None)
        self.env_compat = env_compat  # MIS_ENV_COMPAT: strict, warn or off
        # Loaded models in this worker's memory, least recently used first. Loaded models beyond
        # max_in_memory are unloaded here (`_evicted`) yet stay loaded for the server: the next
        # request for one loads it again (ModelMesh's idea), paying the load time once.
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._evicted: set[str] = set()
        self.evictions = 0
        self._quarantined: dict[str, str] = {}  # model id -> why, as every worker sees it
        self._names: dict[str, dict[str, str]] = {}  # loaded models: name -> {version: model id}
        self._aliases: dict[str, dict[str, dict]] = {}  # name -> {alias: spec}, as every worker sees it
        # One thread: mirrored requests wait for each other, never for the callers' answers.
        self._shadows = DaemonPool(1, "mis-shadow")
        self._shadows_pending = 0
        self._shadow_lock = threading.Lock()
        self._lock = threading.RLock()
        self._signature: object = object()  # never equal to a real signature: first call reconciles

    # -- shared state ----------------------------------------------------------------------

    def sync(self) -> None:
        """Load what another worker loaded, drop what another worker removed."""
        signature = self.store.state_signature()
        if signature == self._signature:
            return
        with self._lock:
            wanted = self.store.loaded_ids()
            for model_id in set(self._models) - wanted:
                self._models.pop(model_id).runtime.close()
            self._evicted &= wanted
            for model_id in sorted(wanted - set(self._models) - self._evicted):
                try:
                    self._keep(model_id, self._open(self.describe(model_id)))
                except MISError as exc:
                    log.error("model %s is loaded elsewhere but failed here: %s", model_id, exc.message)
            self._quarantined = self.store.quarantined()
            self._aliases = self.store.aliases()
            self._names = self._name_index()
            self._signature = signature

    def _name_index(self) -> dict[str, dict[str, str]]:
        """Loaded models by name and version; of two with the same name and version, the newer."""
        infos = []
        for model_id in set(self._models) | self._evicted:
            try:
                infos.append(self._models[model_id].info if model_id in self._models else self.describe(model_id))
            except MISError:
                continue
        names: dict[str, dict[str, str]] = {}
        for info in sorted(infos, key=lambda i: (i.time_created or "", i.id)):
            names.setdefault(info.name, {})[info.version] = info.id
        return names

    # -- catalog ---------------------------------------------------------------------------

    def describe(self, model_id: str) -> ModelInfo:
        validate_model_id(model_id)
        return self.store.get_upload(model_id) or self.catalog.get(model_id)

    def loaded_ids(self) -> set[str]:
        """Models loaded (in memory here or not), once this worker has caught up with the shared state."""
        self.sync()
        return set(self._models) | self._evicted

    def list_models(self, compartment_id: str | None, project_id: str | None, limit: int,
                    page: str | None) -> tuple[list[ModelInfo], str | None]:
        """Uploaded models first, then the catalog's, behind one opaque page token."""
        source, token = _decode_page(page)
        models: list[ModelInfo] = []
        if source == "upload":
            uploads = [m for m in self.store.list_uploads() if m.matches(compartment_id, project_id)]
            models, next_upload = page_of(uploads, limit, token)
            if next_upload:
                return models, _encode_page("upload", next_upload)
            source, token = "catalog", None
        if len(models) == limit:
            return models, _encode_page("catalog", None)
        page_models, next_token = self.catalog.list(compartment_id, project_id, limit - len(models), token)
        return models + page_models, (_encode_page("catalog", next_token) if next_token else None)

    def all_catalog_ids(self) -> Iterable[str]:
        page = None
        while True:
            models, page = self.catalog.list(None, None, 1000, page)
            yield from (m.id for m in models)
            if page is None:
                return

    # -- names, versions and aliases --------------------------------------------------------

    def resolve(self, name: str, version: str | None = None) -> Target:
        """The loaded model a request for `name` (and a version or alias) goes to. A model id is
        also a name, of one version."""
        self.sync()
        versions = self._names.get(name)
        if versions is None:
            if name in self._models or name in self._evicted:
                info = self.describe(name)
                if version in (None, info.version):
                    return Target(name, info.version)
            raise ModelNotLoaded(f"no loaded model is named {name!r}", model_name=name)
        aliases = self._aliases.get(name, {})
        wanted = version or (DEFAULT if DEFAULT in aliases else LATEST)
        if wanted in versions:
            return Target(versions[wanted], wanted)
        if wanted == LATEST:
            latest = max(versions, key=version_order)
            return Target(versions[latest], latest)
        spec = aliases.get(wanted)
        if spec is None:
            raise ModelNotLoaded(f"model {name!r} has no loaded version or alias {wanted!r} (versions: "
                                 f"{', '.join(sorted(versions, key=version_order))}; aliases: "
                                 f"{', '.join(sorted(aliases)) or 'none'})", model_name=name, version=wanted)
        chosen = random.choices(list(spec["versions"]), weights=list(spec["versions"].values()))[0]
        if chosen not in versions:
            raise ModelNotLoaded(f"alias {wanted!r} of model {name!r} sends this request to version {chosen!r}, "
                                 "which is not loaded", model_name=name, version=chosen)
        shadow = spec.get("shadow")
        mirror = versions.get(shadow["version"]) if shadow and random.random() * 100 < shadow["percent"] else None
        return Target(versions[chosen], chosen, mirror)

    def signature(self, model_id: str) -> Signature:
        self.sync()
        loaded, _ = self._in_memory(model_id)
        if loaded is None:
            raise ModelNotLoaded(f"model {model_id!r} is not loaded", model_id=model_id)
        if loaded.signature is None:
            runtime, info = loaded.runtime, loaded.info
            outputs = ("predict", "predict_proba") if runtime.predict_proba is not None else ("predict",)
            output_types = list(_schema_types(info.output_schema).values())
            loaded.signature = Signature(runtime.n_features, runtime.feature_names, _schema_types(info.input_schema),
                                         output_types[0] if len(output_types) == 1 else None, outputs)
        return loaded.signature

    def all_models(self) -> Iterator[ModelInfo]:
        """Every model, uploaded and catalogued, loaded or not, page after page."""
        page = None
        while True:
            models, page = self.list_models(None, None, 1000, page)
            yield from models
            if page is None:
                return

    def models_named(self, name: str) -> list[ModelInfo]:
        """Every model (loaded or not) whose name or id is `name`."""
        return [m for m in self.all_models() if name in (m.name, m.id)]

    def env_mismatches(self, model_id: str) -> list[str] | None:
        """How a loaded model's artifact does not match this server (MIS_ENV_COMPAT=warn); None when
        this worker does not hold it."""
        loaded = self._models.get(model_id)
        return loaded.env_mismatches if loaded is not None else None

    def quarantine_reason(self, model_id: str) -> str | None:
        self.sync()
        return self._quarantined.get(model_id)

    def versions_of(self, name: str) -> dict[str, str]:
        """{version: model id} of the loaded models named `name`."""
        self.sync()
        return dict(self._names.get(name, {}))

    def aliases(self) -> dict[str, dict[str, dict]]:
        self.sync()
        return self._aliases

    def set_alias(self, name: str, alias: str, spec: Any) -> dict:
        """Define (or redefine) an alias of a model name, for every worker and replica sharing the
        store. The versions it names must be loaded now."""
        if not ALIAS_NAME.match(alias) or alias == LATEST:
            raise BadRequest(f"an alias is a letter then up to 63 letters, digits, '.', '_' or '-', and not "
                             f"{LATEST!r} (it always means the highest loaded version): {alias[:80]!r}")
        spec = _checked_alias(spec)
        loaded = self.versions_of(name)
        if alias in loaded:
            raise BadRequest(f"{alias!r} is a version of model {name!r}: a request naming it gets that version, so "
                             "an alias of that name could never be reached")
        named = [*spec["versions"], *([spec["shadow"]["version"]] if spec["shadow"] else [])]
        missing = [v for v in named if v not in loaded]
        if missing:
            raise BadRequest(f"model {name!r} has no loaded version {', '.join(map(repr, missing))} (loaded: "
                             f"{', '.join(sorted(loaded, key=version_order)) or 'none'})", missing=missing)
        self.store.set_alias(name, alias, spec)
        return spec

    def delete_alias(self, name: str, alias: str) -> None:
        if not self.store.set_alias(name, alias, None):
            raise ModelNotFound(f"model {name!r} has no alias {alias!r}", model_name=name, alias=alias)

    # -- load / upload / remove ------------------------------------------------------------

    def load(self, model_id: str) -> tuple[str, float]:
        """Load a catalog model everywhere; idempotent. Returns the status and the load time.
        Loading a quarantined model is how an admin lifts its quarantine ("released")."""
        self.sync()
        with self._lock:
            released = model_id in self._quarantined and self.store.release(model_id)
            if model_id in self._models:
                self.store.mark_loaded(model_id)
                return ("released" if released else "already_loaded"), 0.0
            started = time.perf_counter()
            loaded = self._open(self.describe(model_id))
            try:
                self.store.mark_loaded(model_id)
            except BaseException:
                loaded.runtime.close()  # not recorded (a full or read-only store): not loaded here either
                raise
            self._keep(model_id, loaded)
            return "loaded", 1000 * (time.perf_counter() - started)

    def receive(self, stream: BinaryIO) -> Path:
        """Stage an incoming artifact (the caller deletes the file once `upload` is done with it)."""
        return self.store.receive(stream, self.max_upload_bytes)

    def upload(self, staged: Path, name: str, version: str, env: str | None) -> ModelInfo:
        """Store and load a staged artifact: afterwards it is stored, listed and loaded everywhere, or,
        on any failure (a full or read-only store included), nothing of it is in the store.
        Uploading never promotes: `env` must be one the server lets uploads claim."""
        if env is not None and self.upload_envs is not None and env not in self.upload_envs:
            allowed = ", ".join(sorted(self.upload_envs)) or "none"
            raise UploadEnvRefused(f"an upload may not claim env {env!r} on this server (allowed: {allowed}); "
                                   "upload without env, then promote it with POST /api/v1/promotemodel/{model_id}",
                                   env=env, allowed=sorted(self.upload_envs))
        model_id = f"upload-{uuid.uuid4().hex}"
        loaded = None
        try:
            unpacked = self.store.unpack(model_id, staged)
            info = ModelInfo(
                id=model_id,
                name=name,
                version=version,
                framework=framework_of_artifact(unpacked),
                time_created=_utc(time.time()),
                custom_metadata=[{"key": "env", "value": env, "category": "Other"}] if env else [],
                input_schema=read_schema(unpacked, "input"),
                output_schema=read_schema(unpacked, "output"),
                source="upload",
            )
            loaded = self._open(info)
            self.store.save_upload(info, staged)
            with self._lock:
                self.store.mark_loaded(model_id)  # from here on every worker loads it
                self._keep(model_id, loaded)
        except BaseException:
            if loaded is not None:
                loaded.runtime.close()
            self._forget_upload(model_id)
            raise
        return info

    def _forget_upload(self, model_id: str) -> None:
        """Undo a failed upload as far as the store allows; the client gets the upload's own error."""
        for undo in (self.store.delete_upload, self.store.discard_unpacked):
            try:
                undo(model_id)
            except MISError as exc:
                log.error("could not undo the failed upload %s: %s", model_id, exc.message)

    def promote(self, model_id: str, env: str | None) -> ModelInfo:
        """Set a model's `env` (None withdraws it) where its metadata lives: the upload's record or
        the catalog. This worker applies it at once, the others within the metadata TTL."""
        info = self.describe(model_id)
        info = (self.store.set_upload_env(model_id, env) if info.source == "upload" else None) \
            or self.catalog.set_env(model_id, env)
        with self._lock:
            if model_id in self._models:
                self._models[model_id].info = info
                self._models[model_id].checked_at = time.monotonic()
        return info

    def unload(self, model_id: str) -> None:
        """Unload everywhere; an uploaded model stays stored, so a load brings it back."""
        validate_model_id(model_id)
        self.sync()
        with self._lock:
            if model_id not in self._models and model_id not in self.store.loaded_ids():
                raise ModelNotLoaded(f"model {model_id!r} is not loaded", model_id=model_id)
            self._unload_everywhere(model_id)

    def remove(self, model_id: str) -> None:
        """Unload everywhere; an uploaded model is deleted too (the catalog's copy stays)."""
        validate_model_id(model_id)
        self.sync()
        with self._lock:
            upload = self.store.get_upload(model_id)
            # (a model this worker unloaded for its memory budget is still in the store's loaded set)
            if model_id not in self._models and upload is None and model_id not in self.store.loaded_ids():
                raise ModelNotLoaded(f"model {model_id!r} is neither loaded nor uploaded", model_id=model_id)
            self._unload_everywhere(model_id)
            if upload is not None:
                self.store.delete_upload(model_id)
            self.store.discard_unpacked(model_id)

    def _unload_everywhere(self, model_id: str) -> None:
        """The caller holds the lock. Refused while an alias sends traffic to the model: its
        requests would all fail (change or delete the alias first)."""
        using = self._aliases_using(model_id)
        if using:
            raise AliasInUse(f"model {model_id!r} is a version that alias {', '.join(using)} routes to; change or "
                             "delete the alias first (PUT or DELETE /api/v1/aliases/{model_name}/{alias})",
                             model_id=model_id, aliases=using)
        self.store.mark_removed(model_id)
        self._evicted.discard(model_id)
        if model_id in self._models:
            self._models.pop(model_id).runtime.close()

    def _aliases_using(self, model_id: str) -> list[str]:
        """"name/alias" of the aliases that route to (or mirror) the version this model is."""
        named = [(name, version) for name, versions in self._names.items()
                 for version, known in versions.items() if known == model_id]
        return [f"{name}/{alias}" for name, version in named for alias, spec in sorted(self._aliases.get(name, {}).items())
                if version in spec["versions"] or (spec.get("shadow") or {}).get("version") == version]

    def preopen(self, model_ids: Iterable[str]) -> None:
        """In the gunicorn master: load these models (and whatever the store says is loaded) once,
        for every worker to inherit. A model that fails here is only logged: each worker's warmup
        tries it again and reports it."""
        for model_id in dict.fromkeys([*model_ids, *sorted(self.store.loaded_ids())]):
            try:
                info = self.describe(model_id)
                with captured_output(info.id, self.guard.output_bytes, "load"):
                    preopen(info.id, self._local_artifact(info))
            except Exception as exc:  # foreign code; the workers will say what went wrong
                log.warning("model %s was not loaded before the fork: %r", model_id, exc)

    def _open(self, info: ModelInfo) -> LoadedModel:
        started = time.perf_counter()
        try:
            with captured_output(info.id, self.guard.output_bytes, "load"):
                artifact = self._local_artifact(info)
                mismatches = check_environment(info.id, Needs.of(info, artifact), self.environment, self.env_compat)
                runtime = open_runtime(info.id, artifact)
                runtime.prepare()
        except MISError:
            metrics.model_load_failed(info.id)
            raise
        except BaseException as exc:  # foreign code: any failure is the model's, even KeyboardInterrupt
            metrics.model_load_failed(info.id)
            missing = missing_library(info.id, exc, self.environment)
            if missing is not None:
                log.error("%s (%r)", missing.message, exc)
                raise missing from None
            log.exception("model %s failed to load", info.id)
            raise ModelLoadFailed(f"model {info.id!r} failed to load ({type(exc).__name__})", model_id=info.id,
                                  private=_describe(exc)) from None
        if mismatches:
            log.warning("model %s loaded although %s (MIS_ENV_COMPAT=%s)", info.id, "; ".join(mismatches),
                        self.env_compat)
            metrics.env_mismatch(info.id)
        metrics.model_loaded(info.id, time.perf_counter() - started)
        return LoadedModel(info=info, runtime=runtime, env_mismatches=mismatches)

    def _local_artifact(self, info: ModelInfo) -> Path:
        artifact = self.store.upload_artifact(info.id) if info.source == "upload" else self.catalog.artifact(info.id)
        return self.store.unpack(info.id, artifact) if artifact.suffix == ".zip" else artifact

    # -- scoring ---------------------------------------------------------------------------

    def _keep(self, model_id: str, loaded: LoadedModel) -> None:
        """Hold a freshly opened model (the most recently used), unloading the least recently used
        unpinned others while over the budget. The caller holds the lock."""
        self._models[model_id] = loaded
        self._evicted.discard(model_id)
        while self.max_in_memory and len(self._models) > self.max_in_memory:
            # list(): one copy under the GIL, which a request thread's move_to_end cannot interrupt
            victim = next((m for m in list(self._models) if m != model_id and m not in self.pinned), None)
            if victim is None:
                return  # all pinned: the budget gives way to the configuration
            self._models.pop(victim).runtime.close()
            self._evicted.add(victim)
            self.evictions += 1
            metrics.model_evicted(victim)
            log.info("model %s unloaded from this worker to stay within %d models", victim, self.max_in_memory)

    def _in_memory(self, model_id: str) -> tuple[LoadedModel | None, float]:
        """The model, loaded again first if this worker had unloaded it (with the load time, ms)."""
        loaded = self._models.get(model_id)
        if loaded is not None:
            with contextlib.suppress(KeyError):  # removed meanwhile by another thread
                self._models.move_to_end(model_id)
            return loaded, 0.0
        if model_id not in self._evicted:
            return None, 0.0
        with self._lock:
            if model_id in self._models:  # another thread brought it back meanwhile
                return self._models[model_id], 0.0
            started = time.perf_counter()
            loaded = self._open(self.describe(model_id))
            self._keep(model_id, loaded)
            return loaded, 1000 * (time.perf_counter() - started)

    def memory_stats(self) -> dict:
        return {"max_models": self.max_in_memory or None, "in_memory": len(self._models),
                "unloaded_here": sorted(self._evicted), "evictions": self.evictions}

    def score(self, model_id: str, payload: Any, *, output: str = "predict", shadow: str | None = None,
              request_id: str | None = None) -> Prediction:
        """`output`: the runtime's `predict` (labels or values) or `predict_proba` (class
        probabilities). `shadow`: a model to mirror the request to once this one has answered."""
        result = self._score(model_id, payload, output)
        if shadow is not None:
            self._mirror(shadow, payload, output, result, request_id)
        return result

    def _score(self, model_id: str, payload: Any, output: str) -> Prediction:
        self.sync()
        loaded, load_ms = self._in_memory(model_id)
        if loaded is None:
            self.describe(model_id)  # unknown model: 404 model_not_found
            raise ModelNotLoaded(
                f"model {model_id!r} is not loaded; POST /api/v1/loadmodel/{model_id} first", model_id=model_id
            )
        if model_id in self._quarantined:
            raise ModelQuarantined(f"model {model_id!r} is quarantined: {self._quarantined[model_id]}; "
                                   f"POST /api/v1/loadmodel/{model_id} reloads it", model_id=model_id,
                                   reason=self._quarantined[model_id])
        self._check_env(loaded)
        predict = getattr(loaded.runtime, output, None)
        if predict is None:
            raise BadRequest(f"model {model_id!r} does not give {output}", model_id=model_id)
        started = time.perf_counter()

        def timed_out() -> None:
            loaded.timeouts += 1
            self.strike(model_id, f"predict took longer than {self.guard.timeout_s} s")

        try:
            prediction = self.guard.run(model_id, predict, payload, on_timeout=timed_out)
        except PredictTimeout:  # counted by timed_out(), not as an error
            raise
        except MISError:
            loaded.errors += 1
            raise
        except BaseException as exc:  # foreign code: even sys.exit() is only its failure
            loaded.errors += 1
            raise ModelPredictFailed(f"model {model_id!r} failed to score the input ({type(exc).__name__})",
                                     model_id=model_id, private=_describe(exc)) from None
        elapsed = time.perf_counter() - started
        loaded.requests += 1
        loaded.predict_seconds += elapsed
        metrics.predicted(model_id, loaded.info.version or "", elapsed)
        return Prediction(model_id, loaded.info.version, prediction, 1000 * elapsed, load_ms)

    def _mirror(self, model_id: str, payload: Any, output: str, primary: Prediction, request_id: str | None) -> None:
        """Score the request again with the shadow model, on the shadow thread: its answer is
        logged (with whether it agrees) and never returned. Dropped when the thread is behind."""
        with self._shadow_lock:  # not the registry's lock, which a model load holds for seconds
            dropped = self._shadows_pending >= SHADOW_QUEUE
            self._shadows_pending += not dropped
        if dropped:
            metrics.shadow(model_id, "", "dropped", None)
            log_shadow(request_id=request_id, model=model_id, outcome="dropped", primary=primary.model_id)
            return

        def run() -> None:
            started, version, fields = time.perf_counter(), "", {}
            try:
                result = self._score(model_id, payload, output)
                outcome, version = "ok", result.model_version
                fields = dict(version=version, predict_ms=round(result.predict_ms, 3), prediction=result.prediction,
                              agrees=_same_answer(result.prediction, primary.prediction))
            except MISError as exc:
                outcome = exc.code
            except Exception:  # logged here: the pool's future is read by nobody
                log.exception("the shadow call of %s failed", model_id)
                outcome = "error"
            finally:
                with self._shadow_lock:
                    self._shadows_pending -= 1
            metrics.shadow(model_id, version, outcome, time.perf_counter() - started)
            log_shadow(request_id=request_id, model=model_id, outcome=outcome, primary=primary.model_id, **fields)

        self._shadows.submit(run)

    def _check_env(self, loaded: LoadedModel) -> None:
        if self.env is None:
            return
        if time.monotonic() - loaded.checked_at >= self.metadata_ttl_s:
            try:
                loaded.info = self.describe(loaded.info.id)
            except MISError:
                log.warning("metadata of %s could not be refreshed; keeping what was known", loaded.info.id)
            loaded.checked_at = time.monotonic()
        if loaded.info.env != self.env:
            model_id = loaded.info.id
            raise EnvMismatch(
                f"model {model_id!r} is for env {loaded.info.env!r}; this server's env is {self.env!r}. To serve it "
                f"here, promote it: `mis promote {model_id} --env {self.env}` (POST /api/v1/promotemodel/{model_id} "
                f"with {{\"env\": \"{self.env}\"}}, an admin key); every worker sees it within {self.metadata_ttl_s:g} s",
                model_id=loaded.info.id,
                server_env=self.env,
                model_env=loaded.info.env,
            )

    def strike(self, model_id: str, reason: str) -> None:
        """One more strike against a model; enough of them quarantine it in every worker."""
        try:
            quarantined = self.store.record_strike(model_id, reason, limit=self.quarantine_strikes,
                                                   window_s=self.quarantine_window_s)
            if quarantined:
                log.error("model %s is quarantined: %s", model_id, quarantined)
                audit_server_change("quarantine", model_id, reason=quarantined)
                metrics.model_quarantined(model_id)
        except (MISError, OSError) as exc:  # the store failed: the 504 still goes out, the strike is lost
            log.error("could not record a strike against %s: %s", model_id, exc)

    def loaded_stats(self) -> list[dict]:
        self.sync()
        return [{**m.stats(), "quarantined": self._quarantined.get(m.info.id)} for m in list(self._models.values())]


def _same_answer(a: Any, b: Any) -> bool:
    """Whether two models answered alike, whatever their answers are made of (numpy arrays too)."""
    try:
        return orjson.dumps(a, option=orjson.OPT_SERIALIZE_NUMPY) == orjson.dumps(b, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return False


def _schema_types(schema: dict | None) -> dict[str, str]:
    """{feature name: dtype} of an ADS schema ({"schema": [{"name", "dtype", "order"}, ...]})."""
    features = schema.get("schema") if isinstance(schema, dict) else None
    if not isinstance(features, list):
        return {}
    return {str(f["name"]): str(f.get("dtype")) for f in features if isinstance(f, dict) and "name" in f}


def version_order(version: str) -> list:
    """"1.10" after "1.9" and "10" after "9": numeric parts compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"[.\-_+]", version)]


def _checked_alias(spec: Any) -> dict:
    """An alias as stored: {"versions": {version: weight}, "shadow": {"version", "percent"} or None}."""
    usage = ('send {"versions": {"<version>": <weight>, ...}, "shadow": {"version": "<version>", "percent": '
             '<0-100>}}; weights are whole numbers, at least one above 0; shadow is optional')
    if not isinstance(spec, dict) or set(spec) - {"versions", "shadow"} or not isinstance(spec.get("versions"), dict):
        raise BadRequest(usage)
    versions = spec["versions"]
    if (not versions or len(versions) > 16
            or not all(isinstance(w, int) and not isinstance(w, bool) and 0 <= w <= 1_000_000 for w in versions.values())
            or not any(versions.values())):
        raise BadRequest(usage)
    shadow = spec.get("shadow")
    if shadow is not None:
        percent = shadow.get("percent") if isinstance(shadow, dict) else None
        if (set(shadow) != {"version", "percent"} or not isinstance(shadow["version"], str)
                or isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent <= 100):
            raise BadRequest(usage)
        shadow = {"version": shadow["version"], "percent": percent}
    return {"versions": dict(versions), "shadow": shadow}


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _encode_page(source: str, token: str | None) -> str:
    return base64.urlsafe_b64encode(json.dumps([source, token]).encode()).decode()


def _decode_page(page: str | None) -> tuple[str, str | None]:
    if not page:
        return "upload", None
    try:
        source, token = json.loads(base64.urlsafe_b64decode(page.encode()))
        if source not in ("upload", "catalog") or not (token is None or isinstance(token, str)):
            raise ValueError
        return source, token
    except (ValueError, TypeError, UnicodeError):
        raise InvalidPage() from None
