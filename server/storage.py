"""Where uploads, artifacts and the model state live, in four roles the core sees one by one.

- `Uploads`: the models uploaded to this server (metadata and artifact), listed beside the catalog's.
- `Workspace`: this machine's working copies: incoming uploads staged, artifacts unpacked once
  and shared by the workers.
- `SharedState`: what every worker (and, with a shared store, every replica) serves: the ids of
  the loaded models and the aliases of model names.
- `Quarantine`: models refused until an admin loads them again, and the strikes counting towards it.

server/app.py builds a `Storage` from the config: the local roles of server/backends/local_store.py,
or, with MIS_STORE=oci, the bucket's uploads and shared state (server/backends/oci_store.py)
beside the local workspace and quarantine, which stay each replica's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from .catalog import ModelInfo


class Uploads(Protocol):
    def list(self) -> list[ModelInfo]: ...
    def get(self, model_id: str) -> ModelInfo | None: ...
    def artifact(self, model_id: str) -> Path:
        """The upload's artifact as a local file."""
    def save(self, info: ModelInfo, artifact_zip: Path) -> None:
        """Store an upload (moving `artifact_zip` in): it appears whole, or not at all."""
    def set_env(self, model_id: str, env: str | None) -> ModelInfo | None:
        """Promote an upload; None when there is no such upload (any more)."""
    def delete(self, model_id: str) -> None: ...


class Workspace(Protocol):
    def receive(self, stream: BinaryIO, limit: int) -> Path:
        """Copy an incoming artifact to a staging file, refusing more than `limit` bytes."""
    def unpack(self, model_id: str, artifact_zip: Path) -> Path:
        """The model's artifact extracted once (validated first); reused when already there."""
    def discard_unpacked(self, model_id: str) -> None: ...


class SharedState(Protocol):
    def signature(self) -> object:
        """Changes whenever the state changes; asked on every request, so it must be cheap."""
    def loaded_ids(self) -> frozenset[str]: ...
    def aliases(self) -> dict[str, dict[str, dict]]:
        """{model name: {alias: {"versions": {version: weight}, "shadow": {...} or None}}}."""
    def mark_loaded(self, model_id: str) -> None: ...
    def mark_removed(self, model_id: str) -> None: ...
    def set_alias(self, name: str, alias: str, spec: dict | None) -> bool:
        """Set (or, with None, drop) one alias of a model name; False when there was none to drop."""


class Quarantine(Protocol):
    def signature(self) -> object:
        """Changes whenever a model is quarantined or released; as cheap as SharedState's."""
    def quarantined(self) -> dict[str, str]:
        """{model id: why it is quarantined}."""
    def record_strike(self, model_id: str, reason: str, *, limit: int, window_s: float,
                      lock_timeout_s: float | None = None) -> str | None:
        """Count one strike; at `limit` strikes within `window_s` the model is quarantined (the reason
        recorded is returned)."""
    def release(self, model_id: str) -> bool:
        """Lift a model's quarantine and forget its strikes; False when there was nothing to lift."""


@dataclass(frozen=True)
class Storage:
    uploads: Uploads
    workspace: Workspace
    state: SharedState
    quarantine: Quarantine
