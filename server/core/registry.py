"""The core's façade: the models of this worker, in step with the model state every worker (and,
with a shared store, every replica) shares, and scoring them.

The shared state is the set of loaded ids and the aliases (`storage.state`), with the quarantine
(`storage.quarantine`). Each public call first reconciles this worker with them (by their
signatures: a stat() or two when nothing changed), so a load, upload or removal answered by one
worker is seen by every worker on its next request.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

from .. import metrics
from ..catalog import Catalog, ModelInfo, validate_model_id
from ..environment import ServerEnvironment
from ..errors import (
    AliasInUse,
    BadRequest,
    EnvMismatch,
    MISError,
    ModelNotFound,
    ModelNotLoaded,
    ModelPredictFailed,
    ModelQuarantined,
    PredictTimeout,
    Remedy,
    UploadEnvRefused,
)
from ..guard import PredictGuard
from ..logs import audit_server_change
from ..storage import Storage
from . import routing
from .budget import MemoryBudget
from .listing import Listing
from .loading import Loader, describe_failure
from .models import LoadedModel, Prediction, Signature
from .shadow import ShadowMirror

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    """The rules the core applies, from the configuration (server/app.py builds it)."""

    env: str | None  # MIS_ENV: a model scores only if its `env` metadata equals it
    metadata_ttl_s: float  # how long a loaded model's metadata is trusted
    max_upload_bytes: int
    quarantine_strikes: int
    quarantine_window_s: float
    environment: ServerEnvironment
    env_compat: str = "warn"
    upload_envs: frozenset[str] | None = None  # None: an upload may claim any env
    max_in_memory: int = 0  # per worker; 0: no limit
    pinned: frozenset[str] = frozenset()  # never unloaded to make room


class Registry:
    def __init__(self, catalog: Catalog, storage: Storage, guard: PredictGuard, policy: Policy):
        self.catalog = catalog
        self.storage = storage
        self.guard = guard
        self.policy = policy
        self.loader = Loader(catalog, storage, output_bytes=guard.output_bytes, environment=policy.environment,
                             env_compat=policy.env_compat)
        self.listing = Listing(catalog, storage.uploads)
        self._lock = threading.RLock()
        self.budget = MemoryBudget(policy.max_in_memory, policy.pinned, self._lock, self.loader.reopen)
        self.shadows = ShadowMirror(self._score)
        self._quarantined: dict[str, str] = {}  # model id -> why, as every worker sees it
        self._names: routing.Names = {}  # loaded models: name -> {version: model id}
        self._aliases: routing.Aliases = {}  # as every worker sees them
        self._signature: object = object()  # never equal to a real signature: first call reconciles

    # -- shared state ----------------------------------------------------------------------

    def sync(self) -> None:
        """Load what another worker loaded, drop what another worker removed."""
        state, quarantine = self.storage.state, self.storage.quarantine
        signature = state.signature(), quarantine.signature()
        if signature == self._signature:
            return
        with self._lock:
            wanted = state.loaded_ids()
            self.budget.keep_only(wanted)
            for model_id in sorted(wanted - self.budget.ids()):
                try:
                    self.budget.keep(model_id, self.loader.reopen(model_id))
                except MISError as exc:
                    log.error("model %s is loaded elsewhere but failed here: %s", model_id, exc.message)
            self._quarantined = quarantine.quarantined()
            self._aliases = state.aliases()
            self._names = routing.name_index(self._loaded_infos())
            self._signature = signature

    def _loaded_infos(self) -> Iterator[ModelInfo]:
        for model_id in self.budget.ids():
            loaded = self.budget.models.get(model_id)
            try:
                yield loaded.info if loaded is not None else self.describe(model_id)
            except MISError:
                continue

    # -- models ----------------------------------------------------------------------------

    def describe(self, model_id: str) -> ModelInfo:
        return self.loader.describe(model_id)

    def loaded_ids(self) -> set[str]:
        """Models loaded (in memory here or not), once this worker has caught up with the shared state."""
        self.sync()
        return self.budget.ids()

    def list_models(self, compartment_id: str | None, project_id: str | None, limit: int,
                    page: str | None) -> tuple[list[ModelInfo], str | None]:
        """Uploaded models first, then the catalog's, behind one opaque page token."""
        return self.listing.page(compartment_id, project_id, limit, page)

    def all_models(self) -> Iterator[ModelInfo]:
        return self.listing.all_models()

    def all_catalog_ids(self) -> Iterable[str]:
        return self.listing.all_catalog_ids()

    def models_named(self, name: str) -> list[ModelInfo]:
        return self.listing.named(name)

    def signature(self, model_id: str) -> Signature:
        self.sync()
        loaded, _ = self.budget.in_memory(model_id)
        if loaded is None:
            raise ModelNotLoaded(f"model {model_id!r} is not loaded", model_id=model_id)
        return loaded.described()

    def env_mismatches(self, model_id: str) -> list[str] | None:
        """How a loaded model's artifact does not match this server (MIS_ENV_COMPAT=warn); None when
        this worker does not hold it."""
        loaded = self.budget.models.get(model_id)
        return loaded.env_mismatches if loaded is not None else None

    def quarantine_reason(self, model_id: str) -> str | None:
        self.sync()
        return self._quarantined.get(model_id)

    # -- names, versions and aliases --------------------------------------------------------

    def resolve(self, name: str, version: str | None = None) -> routing.Target:
        """The loaded model a request for `name` (and a version or alias) goes to. A model id is
        also a name, of one version."""
        self.sync()
        versions = self._names.get(name)
        if versions is None:
            if name in self.budget.ids():
                info = self.describe(name)
                if version in (None, info.version):
                    return routing.Target(name, info.version)
            raise ModelNotLoaded(f"no loaded model is named {name!r}", model_name=name)
        return routing.route(versions, self._aliases.get(name, {}), name, version)

    def versions_of(self, name: str) -> dict[str, str]:
        """{version: model id} of the loaded models named `name`."""
        self.sync()
        return dict(self._names.get(name, {}))

    def aliases(self) -> routing.Aliases:
        self.sync()
        return self._aliases

    def set_alias(self, name: str, alias: str, spec: Any) -> dict:
        """Define (or redefine) an alias of a model name, for every worker and replica sharing the
        store. The versions it names must be loaded now."""
        spec = routing.checked_alias(alias, spec)  # before the shared state is asked: a bad request is a 400
        routing.check_alias_targets(name, alias, spec, self.versions_of(name))
        self.storage.state.set_alias(name, alias, spec)
        return spec

    def delete_alias(self, name: str, alias: str) -> None:
        if not self.storage.state.set_alias(name, alias, None):
            raise ModelNotFound(f"model {name!r} has no alias {alias!r}", model_name=name, alias=alias)

    # -- load / upload / promote / remove --------------------------------------------------

    def load(self, model_id: str) -> tuple[str, float]:
        """Load a catalog model everywhere; idempotent. Returns the status and the load time.
        Loading a quarantined model is how an admin lifts its quarantine ("released")."""
        self.sync()
        with self._lock:
            released = model_id in self._quarantined and self.storage.quarantine.release(model_id)
            if model_id in self.budget.models:
                self.storage.state.mark_loaded(model_id)
                return ("released" if released else "already_loaded"), 0.0
            started = time.perf_counter()
            loaded = self.loader.reopen(model_id)
            try:
                self.storage.state.mark_loaded(model_id)
            except BaseException:
                loaded.runtime.close()  # not recorded (a full or read-only store): not loaded here either
                raise
            self.budget.keep(model_id, loaded)
            return "loaded", 1000 * (time.perf_counter() - started)

    def receive(self, stream: BinaryIO) -> Path:
        """Stage an incoming artifact (the caller deletes the file once `upload` is done with it)."""
        return self.storage.workspace.receive(stream, self.policy.max_upload_bytes)

    def upload(self, staged: Path, name: str, version: str, env: str | None) -> ModelInfo:
        """Store and load a staged artifact: afterwards it is stored, listed and loaded everywhere, or,
        on any failure (a full or read-only store included), nothing of it is in the store.
        Uploading never promotes: `env` must be one the server lets uploads claim."""
        allowed = self.policy.upload_envs
        if env is not None and allowed is not None and env not in allowed:
            raise UploadEnvRefused(f"an upload may not claim env {env!r} on this server (allowed: "
                                   f"{', '.join(sorted(allowed)) or 'none'})", env=env, allowed=sorted(allowed),
                                   remedy=Remedy(Remedy.UPLOAD_WITHOUT_ENV))
        model_id = f"upload-{uuid.uuid4().hex}"
        loaded = None
        try:
            info = self.loader.upload_info(model_id, staged, name, version, env)
            loaded = self.loader.open(info)
            self.storage.uploads.save(info, staged)
            with self._lock:
                self.storage.state.mark_loaded(model_id)  # from here on every worker loads it
                self.budget.keep(model_id, loaded)
        except BaseException:
            if loaded is not None:
                loaded.runtime.close()
            self._forget_upload(model_id)
            raise
        return info

    def _forget_upload(self, model_id: str) -> None:
        """Undo a failed upload as far as the store allows; the client gets the upload's own error."""
        for undo in (self.storage.uploads.delete, self.storage.workspace.discard_unpacked):
            try:
                undo(model_id)
            except MISError as exc:
                log.error("could not undo the failed upload %s: %s", model_id, exc.message)

    def promote(self, model_id: str, env: str | None) -> ModelInfo:
        """Set a model's `env` (None withdraws it) where its metadata lives: the upload's record or
        the catalog. This worker applies it at once, the others within the metadata TTL."""
        info = self.describe(model_id)
        info = (self.storage.uploads.set_env(model_id, env) if info.source == "upload" else None) \
            or self.catalog.set_env(model_id, env)
        with self._lock:
            loaded = self.budget.models.get(model_id)
            if loaded is not None:
                loaded.info, loaded.checked_at = info, time.monotonic()
        return info

    def unload(self, model_id: str) -> None:
        """Unload everywhere; an uploaded model stays stored, so a load brings it back."""
        validate_model_id(model_id)
        self.sync()
        with self._lock:
            if model_id not in self.budget.models and model_id not in self.storage.state.loaded_ids():
                raise ModelNotLoaded(f"model {model_id!r} is not loaded", model_id=model_id)
            self._unload_everywhere(model_id)

    def remove(self, model_id: str) -> None:
        """Unload everywhere; an uploaded model is deleted too (the catalog's copy stays)."""
        validate_model_id(model_id)
        self.sync()
        with self._lock:
            upload = self.storage.uploads.get(model_id)
            # (a model this worker unloaded for its memory budget is still in the shared loaded set)
            if (model_id not in self.budget.models and upload is None
                    and model_id not in self.storage.state.loaded_ids()):
                raise ModelNotLoaded(f"model {model_id!r} is neither loaded nor uploaded", model_id=model_id)
            self._unload_everywhere(model_id)
            if upload is not None:
                self.storage.uploads.delete(model_id)
            self.storage.workspace.discard_unpacked(model_id)

    def _unload_everywhere(self, model_id: str) -> None:
        """The caller holds the lock. Refused while an alias sends traffic to the model: its
        requests would all fail (change or delete the alias first)."""
        using = routing.aliases_using(model_id, self._names, self._aliases)
        if using:
            raise AliasInUse(f"model {model_id!r} is a version that alias {', '.join(using)} routes to",
                             model_id=model_id, aliases=using, remedy=Remedy(Remedy.CHANGE_ALIAS))
        self.storage.state.mark_removed(model_id)
        self.budget.drop(model_id)

    def preopen(self, model_ids: Iterable[str]) -> None:
        self.loader.preopen(model_ids)

    # -- scoring ---------------------------------------------------------------------------

    def score(self, model_id: str, payload: Any, *, outputs: tuple[str, ...] = ("predict",),
              shadow: str | None = None, request_id: str | None = None) -> Prediction:
        """`outputs`: what the caller wants of the runtime, for one resolution of the model (its
        state, quarantine and env checked once): `predict` (labels or values) and/or
        `predict_proba` (class probabilities), each one guarded predict with the whole
        MIS_PREDICT_TIMEOUT_S. `shadow`: a model to mirror the first output to once this one has
        answered."""
        result = self._score(model_id, payload, outputs)
        if shadow is not None:
            self.shadows.mirror(shadow, payload, outputs[:1], result, request_id)
        return result

    def _score(self, model_id: str, payload: Any, outputs: tuple[str, ...]) -> Prediction:
        self.sync()
        loaded, load_ms = self.budget.in_memory(model_id)
        if loaded is None:
            self.describe(model_id)  # unknown model: 404 model_not_found
            raise ModelNotLoaded(f"model {model_id!r} is not loaded", model_id=model_id,
                                 remedy=Remedy(Remedy.LOAD, {"model_id": model_id}))
        if model_id in self._quarantined:
            raise ModelQuarantined(f"model {model_id!r} is quarantined: {self._quarantined[model_id]}",
                                   model_id=model_id, reason=self._quarantined[model_id],
                                   remedy=Remedy(Remedy.RELEASE, {"model_id": model_id}))
        self._check_env(loaded)
        functions = {name: getattr(loaded.runtime, name, None) for name in outputs}
        for name, function in functions.items():
            if function is None:
                raise BadRequest(f"model {model_id!r} does not give {name}", model_id=model_id)
        answers, predict_ms = {}, 0.0
        for name, function in functions.items():
            answers[name], elapsed = self._predict(loaded, function, payload)
            predict_ms += 1000 * elapsed
        return Prediction(model_id, loaded.info.version, answers, predict_ms, load_ms)

    def _predict(self, loaded: LoadedModel, function: Any, payload: Any) -> tuple[Any, float]:
        """One guarded predict, counted: what it gave and how long it took."""
        model_id = loaded.info.id

        def timed_out() -> None:
            loaded.timeouts += 1
            self.strike(model_id, f"predict took longer than {self.guard.timeout_s} s")

        started = time.perf_counter()
        try:
            answer = self.guard.run(model_id, function, payload, on_timeout=timed_out)
        except PredictTimeout:  # counted by timed_out(), not as an error
            raise
        except MISError:
            loaded.errors += 1
            raise
        except BaseException as exc:  # foreign code: even sys.exit() is only its failure
            loaded.errors += 1
            raise ModelPredictFailed(f"model {model_id!r} failed to score the input ({type(exc).__name__})",
                                     model_id=model_id, private=describe_failure(exc)) from None
        elapsed = time.perf_counter() - started
        loaded.requests += 1
        loaded.predict_seconds += elapsed
        metrics.predicted(model_id, loaded.info.version or "", elapsed)
        return answer, elapsed

    def _check_env(self, loaded: LoadedModel) -> None:
        env = self.policy.env
        if env is None:
            return
        if time.monotonic() - loaded.checked_at >= self.policy.metadata_ttl_s:
            try:
                loaded.info = self.describe(loaded.info.id)
            except MISError:
                log.warning("metadata of %s could not be refreshed; keeping what was known", loaded.info.id)
            loaded.checked_at = time.monotonic()
        if loaded.info.env != env:
            model_id = loaded.info.id
            raise EnvMismatch(
                f"model {model_id!r} is for env {loaded.info.env!r}; this server's env is {env!r}",
                model_id=model_id, server_env=env, model_env=loaded.info.env,
                remedy=Remedy(Remedy.PROMOTE, {"model_id": model_id, "env": env,
                                               "within_s": self.policy.metadata_ttl_s}),
            )

    def strike(self, model_id: str, reason: str) -> None:
        """One more strike against a model; enough of them quarantine it in every worker."""
        try:
            quarantined = self.storage.quarantine.record_strike(
                model_id, reason, limit=self.policy.quarantine_strikes, window_s=self.policy.quarantine_window_s)
            if quarantined:
                log.error("model %s is quarantined: %s", model_id, quarantined)
                audit_server_change("quarantine", model_id, reason=quarantined)
                metrics.model_quarantined(model_id)
        except (MISError, OSError) as exc:  # the store failed: the 504 still goes out, the strike is lost
            log.error("could not record a strike against %s: %s", model_id, exc)

    # -- server info -----------------------------------------------------------------------

    def loaded_stats(self) -> list[dict]:
        self.sync()
        return [{**m.stats(), "quarantined": self._quarantined.get(m.info.id)}
                for m in list(self.budget.models.values())]

    def memory_stats(self) -> dict:
        return self.budget.stats()
