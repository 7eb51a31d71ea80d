"""Where model metadata and artifacts come from, and what the server knows of a model.

A catalog answers "which models exist, what do we know about them, and give me the artifact":
server/backends/local_catalog.py (the embedded default, a directory of `<id>/metadata.json`
entries) or server/backends/oci_catalog.py (OCI Data Science). `ModelInfo`, model ids and the
`metadata.json` entries (which uploads use too) are defined here, for the whole server.
"""

from __future__ import annotations

import json
import re
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Protocol

from .errors import InvalidModelId, InvalidPage

# Letters, digits, '.', '_' and '-' (OCI OCIDs fit); never '..', so an id is always one safe path part.
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
METADATA_FILE = "metadata.json"


def validate_model_id(model_id: str) -> str:
    if not isinstance(model_id, str) or not MODEL_ID.match(model_id) or ".." in model_id:
        raise InvalidModelId(
            "model id must be 1-255 letters, digits, '.', '_' or '-', start with a letter or digit "
            "and not contain '..'",
            model_id=str(model_id)[:300],
        )
    return model_id


@dataclass(frozen=True)
class ModelInfo:
    """Catalog metadata of one model, shaped like an OCI Data Science model."""

    id: str
    name: str
    version: str = "1"
    framework: str = "other"
    lifecycle_state: str = "ACTIVE"
    compartment_id: str | None = None
    project_id: str | None = None
    time_created: str | None = None
    description: str = ""
    taxonomy_metadata: list[dict] = field(default_factory=list)
    custom_metadata: list[dict] = field(default_factory=list)
    input_schema: dict | None = None
    output_schema: dict | None = None
    artifact: str = "artifact.zip"
    source: str = "catalog"

    @property
    def env(self) -> str | None:
        """The `env` custom metadata that gates serving; None when the model has none."""
        for item in self.custom_metadata:
            if item.get("key") == "env":
                return item.get("value")
        return None

    def with_env(self, env: str | None) -> "ModelInfo":
        others = [item for item in self.custom_metadata if item.get("key") != "env"]
        return replace(self, custom_metadata=others + ([{"key": "env", "value": env, "category": "Other"}] if env else []))

    @classmethod
    def from_dict(cls, data: dict) -> "ModelInfo":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)

    def matches(self, compartment_id: str | None, project_id: str | None) -> bool:
        return (compartment_id is None or self.compartment_id == compartment_id) and (
            project_id is None or self.project_id == project_id
        )


class Catalog(Protocol):
    kind: str

    def list(
        self, compartment_id: str | None, project_id: str | None, limit: int, page: str | None
    ) -> tuple[list[ModelInfo], str | None]:
        """One page of models and the token of the next page (None on the last)."""

    def get(self, model_id: str) -> ModelInfo: ...

    def artifact(self, model_id: str) -> Path:
        """A local file holding the model's artifact (downloaded first where the catalog is remote)."""

    def set_env(self, model_id: str, env: str | None) -> ModelInfo:
        """Promote (or, with None, withdraw) a model: its `env` custom metadata becomes `env`."""


def page_of(models: list[ModelInfo], limit: int, page: str | None) -> tuple[list[ModelInfo], str | None]:
    """One page of a list held in memory; the token is the offset of the next page."""
    try:
        start = int(page or 0)
    except ValueError:
        raise InvalidPage() from None
    if start < 0:
        raise InvalidPage()
    end = start + limit
    return models[start:end], (str(end) if end < len(models) else None)


def read_entry(directory: Path, source: str) -> ModelInfo | None:
    """Read one `<id>/metadata.json` entry; None when it is absent or unreadable."""
    try:
        data = json.loads((directory / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("id") != directory.name:
        return None
    return ModelInfo.from_dict({**data, "source": source})


def write_entry(directory: Path, info: ModelInfo) -> None:
    """Written aside, then renamed over: a reader never sees half of it."""
    data = {k: v for k, v in info.to_dict().items() if k != "source"}
    handle, name = tempfile.mkstemp(dir=directory, prefix=".metadata-")
    try:
        os.fchmod(handle, 0o644)  # as readable as the entry's artifact: mkstemp's 0600 would hide it from other readers
        with os.fdopen(handle, "w") as out:
            json.dump(data, out, indent=2, sort_keys=True)
        os.replace(name, directory / METADATA_FILE)
    except BaseException:
        os.unlink(name)
        raise
