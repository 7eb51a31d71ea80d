"""The embedded catalog (MIS_CATALOG=local): a directory (MIS_DATA_DIR/catalog) of one folder per
model holding `metadata.json` and the artifact (an OCI Data Science zip, or a native model file)."""

from __future__ import annotations

from pathlib import Path

from ..catalog import MODEL_ID, ModelInfo, page_of, read_entry, validate_model_id, write_entry
from ..errors import ModelNotFound


class LocalCatalog:
    """A directory of `<model id>/metadata.json` + artifact entries; the embedded default."""

    kind = "local"

    def __init__(self, root: Path):
        self.root = root

    def _entries(self) -> list[ModelInfo]:
        if not self.root.is_dir():
            return []
        found = (read_entry(d, "catalog") for d in sorted(self.root.iterdir()) if MODEL_ID.match(d.name))
        return [info for info in found if info is not None]

    def list(self, compartment_id, project_id, limit, page):
        return page_of([m for m in self._entries() if m.matches(compartment_id, project_id)], limit, page)

    def get(self, model_id: str) -> ModelInfo:
        info = read_entry(self.root / validate_model_id(model_id), "catalog")
        if info is None:
            raise ModelNotFound(f"model {model_id!r} is not in the catalog", model_id=model_id)
        return info

    def set_env(self, model_id: str, env: str | None) -> ModelInfo:
        info = self.get(model_id).with_env(env)
        write_entry(self.root / model_id, info)
        return info

    def artifact(self, model_id: str) -> Path:
        path = self.root / model_id / self.get(model_id).artifact
        if path.parent != self.root / model_id or not path.is_file():
            raise ModelNotFound(f"model {model_id!r} has no artifact in the catalog", model_id=model_id)
        return path

