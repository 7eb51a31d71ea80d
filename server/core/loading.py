"""Opening a model in this worker: its artifact made local (downloaded, unpacked), checked against
this server's environment, its runtime opened and made ready; every failure typed and counted."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterable

from .. import metrics
from ..artifact import read_schema
from ..catalog import Catalog, ModelInfo, validate_model_id
from ..environment import Needs, ServerEnvironment, check_environment, missing_library
from ..errors import MISError, ModelLoadFailed
from ..frameworks import framework_of_artifact, open_runtime, preopen
from ..guard import captured_output
from ..storage import Storage
from .models import LoadedModel, utc

log = logging.getLogger(__name__)

class Loader:
    def __init__(self, catalog: Catalog, storage: Storage, *, output_bytes: int, environment: ServerEnvironment,
                 env_compat: str):
        self.catalog = catalog
        self.storage = storage
        self.output_bytes = output_bytes  # MIS_MODEL_OUTPUT_BYTES: what a model may write to the log
        self.environment = environment
        self.env_compat = env_compat  # MIS_ENV_COMPAT: strict, warn or off

    def describe(self, model_id: str) -> ModelInfo:
        validate_model_id(model_id)
        return self.storage.uploads.get(model_id) or self.catalog.get(model_id)

    def open(self, info: ModelInfo) -> LoadedModel:
        started = time.perf_counter()
        try:
            with captured_output(info.id, self.output_bytes, "load"):
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
                                  private=describe_failure(exc)) from None
        if mismatches:
            log.warning("model %s loaded although %s (MIS_ENV_COMPAT=%s)", info.id, "; ".join(mismatches),
                        self.env_compat)
            metrics.env_mismatch(info.id)
        metrics.model_loaded(info.id, time.perf_counter() - started)
        return LoadedModel(info=info, runtime=runtime, env_mismatches=mismatches)

    def reopen(self, model_id: str) -> LoadedModel:
        return self.open(self.describe(model_id))

    def preopen(self, model_ids: Iterable[str]) -> None:
        """In the gunicorn master: load these models (and whatever the store says is loaded) once,
        for every worker to inherit. A model that fails here is only logged: each worker's warmup
        tries it again and reports it."""
        for model_id in dict.fromkeys([*model_ids, *sorted(self.storage.state.loaded_ids())]):
            try:
                info = self.describe(model_id)
                with captured_output(info.id, self.output_bytes, "load"):
                    preopen(info.id, self._local_artifact(info))
            except Exception as exc:  # foreign code; the workers will say what went wrong
                log.warning("model %s was not loaded before the fork: %r", model_id, exc)

    def _local_artifact(self, info: ModelInfo) -> Path:
        artifact = self.storage.uploads.artifact(info.id) if info.source == "upload" else self.catalog.artifact(info.id)
        return self.storage.workspace.unpack(info.id, artifact) if artifact.suffix == ".zip" else artifact

    def upload_info(self, model_id: str, staged: Path, name: str, version: str, env: str | None) -> ModelInfo:
        """An upload's metadata, from its artifact (unpacked into the workspace)."""
        unpacked = self.storage.workspace.unpack(model_id, staged)
        return ModelInfo(
            id=model_id,
            name=name,
            version=version,
            framework=framework_of_artifact(unpacked),
            time_created=utc(time.time()),
            custom_metadata=[{"key": "env", "value": env, "category": "Other"}] if env else [],
            input_schema=read_schema(unpacked, "input"),
            output_schema=read_schema(unpacked, "output"),
            source="upload",
        )


def describe_failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"
