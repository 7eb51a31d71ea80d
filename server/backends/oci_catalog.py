"""The OCI Data Science Model Catalog as the server's catalog (MIS_CATALOG=oci), and promotion.

- Listing: ACTIVE models of the configured compartment (and project), the service's pages followed
  until the client's page is full. Summaries carry no custom metadata, so each model's details
  (custom and defined metadata, schemas) are read too, and kept (`Refreshing`): re-read in the
  background every `refresh_s`, so a catalog `env` edit reaches every worker within the metadata
  TTL while no score request waits on the catalog.
- Artifacts: downloaded once per model and etag into a local cache shared by the workers (and kept
  across restarts), streamed to disk within the artifact size limit and checked against the MD5
  the service gives; the registry then validates and unpacks them exactly like an upload.
- Promotion (`set_model_env`) is read, change the one `env` entry, write back with the etag. The
  server itself never promotes a catalog model: its workload identity only reads the catalog, and
  moving a model to prod is done by a person with their own OCI credentials (`mis promote`).
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import oci
from oci.data_science.models import Metadata, UpdateModelDetails

from ..catalog import ModelInfo, validate_model_id
from ..errors import ArtifactCorrupt, CatalogReadOnly, InvalidPage, ModelNotFound, PayloadTooLarge
from .oci_clients import DATA_SCIENCE, OciSettings, Refreshing, Service, client, credentials

PAGE_MAX = 100  # the service's largest page
_DETAIL_THREADS = 8
_CONFLICT_RETRIES = 5


class OciCatalog:
    kind = "oci"

    def __init__(self, service: Service, compartment_id: str, project_id: str | None, cache_dir: Path,
                 max_artifact_bytes: int, refresh_s: float, background: bool = True):
        self.service = service
        self.compartment_id = compartment_id
        self.project_id = project_id
        self.cache_dir = cache_dir
        self.max_artifact_bytes = max_artifact_bytes
        self._details = Refreshing(self._fetch, refresh_s, "catalog", background)

    def probe(self) -> None:
        """One page of one model: credentials and compartment work (the start-up check)."""
        self.service.call("list_models", self.compartment_id, limit=1, passthrough=(401, 403, 404))

    # -- metadata --------------------------------------------------------------------------

    def list(self, compartment_id, project_id, limit, page):
        if compartment_id not in (None, self.compartment_id) or (
                project_id and self.project_id and project_id != self.project_id):
            return [], None  # the query narrows what this server serves; it never widens it
        project = {"project_id": project_id or self.project_id} if (project_id or self.project_id) else {}
        ids: list[str] = []
        while len(ids) < limit:
            try:
                answer = self.service.call("list_models", self.compartment_id, lifecycle_state="ACTIVE",
                                           limit=min(PAGE_MAX, limit - len(ids)), sort_by="timeCreated",
                                           sort_order="DESC", passthrough=(400, 404), **project,
                                           **({"page": page} if page else {}))
            except oci.exceptions.ServiceError as exc:
                if exc.status == 400 and page:
                    raise InvalidPage() from None
                raise self.service.unavailable(f"answered {exc.status} {exc.code} to list_models", exc) from None
            ids += [summary.id for summary in answer.data]
            page = answer.next_page if answer.has_next_page else None
            if page is None:
                break
        with ThreadPoolExecutor(min(_DETAIL_THREADS, max(1, len(ids)))) as pool:
            infos = list(pool.map(self._details.get, ids))
        # A model deleted since the listing is left out; one no longer ACTIVE too.
        return [info for info in infos if info is not None and info.lifecycle_state == "ACTIVE"], page

    def get(self, model_id: str) -> ModelInfo:
        info = self._details.get(validate_model_id(model_id))
        if info is None:
            raise ModelNotFound(f"model {model_id!r} is not in the catalog", model_id=model_id)
        return info

    def _fetch(self, model_id: str) -> ModelInfo | None:
        try:
            return model_info(self.service.call("get_model", model_id).data)
        except oci.exceptions.ServiceError:  # only 404 comes through: not there, or not ours to see
            return None

    def set_env(self, model_id: str, env: str | None) -> ModelInfo:
        raise CatalogReadOnly(
            f"the server does not change the OCI catalog: promote {model_id!r} with your own OCI config, "
            f"`mis promote {model_id} --env {env or '<env>'} --oci` (every replica follows within "
            "MIS_METADATA_TTL_S)", model_id=model_id)

    # -- artifacts -------------------------------------------------------------------------

    def artifact(self, model_id: str) -> Path:
        self.get(model_id)  # 404 for a model that is not (or no longer) in the catalog
        try:
            head = self.service.call("head_model_artifact", model_id)
        except oci.exceptions.ServiceError:
            raise ModelNotFound(f"model {model_id!r} has no artifact in the catalog", model_id=model_id) from None
        cached = self._cached(model_id, head.headers.get("etag"))
        if cached.is_file():
            return cached
        size = int(head.headers.get("content-length") or 0)
        if size > self.max_artifact_bytes:
            raise _too_large(model_id, self.max_artifact_bytes)
        return self._download(model_id)

    def _cached(self, model_id: str, etag: str | None) -> Path:
        digest = hashlib.sha256((etag or "").encode()).hexdigest()[:32]
        return self.cache_dir / model_id / f"artifact-{digest}.zip"

    def _download(self, model_id: str) -> Path:
        deadline = self.service.deadline()
        answer = self.service.call("get_model_artifact_content", model_id)
        target = self._cached(model_id, answer.headers.get("etag"))
        target.parent.mkdir(parents=True, exist_ok=True)
        self.service.download(
            answer, target, deadline=deadline, limit=self.max_artifact_bytes, too_large=lambda: _too_large(model_id, self.max_artifact_bytes),
            md5=answer.headers.get("content-md5"),
            damaged=lambda: ArtifactCorrupt(f"the artifact of model {model_id!r} downloaded from {DATA_SCIENCE} does "
                                            "not match its MD5; retry the load", model_id=model_id))
        return target


def _too_large(model_id: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the artifact of model {model_id!r} is larger than the limit of {limit} bytes "
                           "(MIS_MAX_ARTIFACT_BYTES)", limit=limit, model_id=model_id)


def model_info(model) -> ModelInfo:
    """An OCI Data Science model's details as the server's ModelInfo."""
    taxonomy = [{"key": m.key, "value": _json_or_text(m.value)} for m in model.defined_metadata_list or []]
    framework = next((str(t["value"]) for t in taxonomy if t["key"] == "Framework" and t["value"]), "other")
    return ModelInfo(
        id=model.id,
        name=model.display_name or model.id,
        version=str(model.version_label or model.version_id or "1"),
        framework=framework,
        lifecycle_state=model.lifecycle_state,
        compartment_id=model.compartment_id,
        project_id=model.project_id,
        time_created=model.time_created.isoformat() if model.time_created else None,
        description=model.description or "",
        taxonomy_metadata=taxonomy,
        custom_metadata=[{"key": m.key, "value": m.value, "category": m.category}
                         for m in model.custom_metadata_list or []],
        input_schema=_json_or_none(model.input_schema),
        output_schema=_json_or_none(model.output_schema),
        source="catalog",
    )


def _json_or_text(value):
    """ADS stores structured taxonomy values (hyperparameters) as JSON text."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


def _json_or_none(text: str | None) -> dict | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def set_model_env(service: Service, model_id: str, env: str | None) -> ModelInfo:
    """Set (None: remove) a catalog model's `env` custom metadata. The list is replaced whole by the
    service, so: read it, change only `env`, write it back if-match the etag read; an edit that
    came in between makes the write fail (412) and the whole step runs again on the new list."""
    validate_model_id(model_id)
    for _ in range(_CONFLICT_RETRIES):
        try:
            current = service.call("get_model", model_id)
        except oci.exceptions.ServiceError:
            raise ModelNotFound(f"model {model_id!r} is not in the catalog", model_id=model_id) from None
        entries = [Metadata(key=m.key, value=m.value, category=m.category, description=m.description)
                   for m in current.data.custom_metadata_list or []]
        found = next((m for m in entries if m.key == "env"), None)
        if env is None:
            entries = [m for m in entries if m.key != "env"]
        elif found is not None:
            found.value = env
        else:
            entries.append(Metadata(key="env", value=env, category="Other",
                                    description="The environment that serves this model (dev, qa, prod)"))
        try:
            updated = service.call("update_model", model_id, UpdateModelDetails(custom_metadata_list=entries),
                                   if_match=current.headers.get("etag"), passthrough=(404, 409, 412))
        except oci.exceptions.ServiceError as exc:
            if exc.status == 404:
                raise ModelNotFound(f"model {model_id!r} is not in the catalog", model_id=model_id) from None
            continue  # edited meanwhile: read again
        return model_info(updated.data)
    raise service.unavailable(f"kept changing the model while its env was set ({_CONFLICT_RETRIES} tries)")


def promote(model_id: str, env: str | None, *, config_file: str | None = None, profile: str = "DEFAULT",
            endpoint: str | None = None, timeout_s: float = 30.0) -> ModelInfo:
    """Promotion with the caller's own OCI config (~/.oci/config unless `config_file`): what
    `mis promote --oci` runs."""
    settings = OciSettings(auth="api_key", config_file=config_file, profile=profile, region=None,
                           data_science_endpoint=endpoint, object_storage_endpoint=None, timeout_s=timeout_s,
                           attempts=3, budget_s=3 * timeout_s)
    sdk = client(oci.data_science.DataScienceClient, settings, endpoint, credentials(settings))
    return set_model_env(Service(DATA_SCIENCE, sdk, settings), model_id, env)
