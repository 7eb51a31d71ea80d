"""Typed errors of the core. Each carries its HTTP status so the REST layer maps them in one place,
and, where the caller can do something about it, a `Remedy`: what to do, as data, which each
protocol words for its own clients (server/protocols/)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class Remedy:
    """What the caller can do about an error: `action` (one of the names below) with the values
    its wording needs."""

    LOAD = "load"  # load the model first
    RELEASE = "release"  # load the quarantined model again
    PROMOTE = "promote"  # give the model this server's env
    CHANGE_ALIAS = "change_alias"  # change or delete the aliases routing to the model
    UPLOAD_WITHOUT_ENV = "upload_without_env"  # upload with no env, then promote

    action: str
    args: dict = field(default_factory=dict)


class MISError(Exception):
    status = 500
    code = "internal_error"
    headers: dict[str, str] = {}

    def __init__(self, message: str, *, private: str | None = None, remedy: Remedy | None = None, **details):
        """`private`: what foreign code (a model) said about the failure. It goes to the log, and to
        a client only where the error detail policy allows (MIS_ERROR_DETAIL)."""
        super().__init__(message)
        self.message = message
        self.private = private
        self.remedy = remedy
        self.details = details

    def to_dict(self, with_private: bool = False, hints: Mapping[str, str] | None = None) -> dict:
        """The error's JSON body; `hints`: a protocol's wording of each remedy (a format string
        over the remedy's args), appended to the message."""
        message = self.message
        if self.remedy is not None and hints and self.remedy.action in hints:
            message += hints[self.remedy.action].format(**self.remedy.args)
        extra = {"detail": self.private} if with_private and self.private else {}
        return {"error": message, "code": self.code, **self.details, **extra}


class BadRequest(MISError):
    status, code = 400, "bad_request"


class InvalidModelId(BadRequest):
    code = "invalid_model_id"


class InvalidPage(BadRequest):
    code = "invalid_page"

    def __init__(self):
        super().__init__("page is not a token returned by a previous listing")


class InvalidArtifact(BadRequest):
    code = "invalid_artifact"


class Unauthorized(MISError):
    """No API key, or one the server does not know."""

    status, code = 401, "unauthorized"

    def __init__(self, message: str, invalid: bool):
        super().__init__(message)
        # RFC 6750: the challenge names the scheme; `invalid_token` only when a key was sent.
        self.headers = {"WWW-Authenticate": 'Bearer realm="mis"' + (', error="invalid_token"' if invalid else "")}


class Forbidden(MISError):
    """A known key without the scope the operation needs."""

    status, code = 403, "forbidden"

    def __init__(self, message: str, scope: str, caller=None):
        super().__init__(message, required_scope=scope)
        self.caller = caller  # the key's owner, for the logs
        self.headers = {"WWW-Authenticate": f'Bearer realm="mis", error="insufficient_scope", scope="{scope}"'}


class UploadEnvRefused(MISError):
    """An upload claimed an env this server does not let uploads claim (promotion is an admin act)."""

    status, code = 403, "upload_env_refused"


class EnvMismatch(MISError):
    status, code = 403, "env_mismatch"


class ModelNotFound(MISError):
    status, code = 404, "model_not_found"


class ModelNotLoaded(MISError):
    status, code = 404, "model_not_loaded"


class PayloadTooLarge(MISError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(MISError):
    status, code = 415, "unsupported_media_type"


class InvalidInput(MISError):
    """The request is well-formed but the model cannot take it (feature count, shape, types)."""

    status, code = 422, "invalid_input"


class ModelLoadFailed(MISError):
    status, code = 422, "model_load_failed"


class MissingLibrary(ModelLoadFailed):
    code = "missing_library"


class AliasInUse(MISError):
    status, code = 409, "alias_in_use"


class EnvIncompatible(MISError):
    """The artifact was made for another environment (MIS_ENV_COMPAT=strict)."""

    status, code = 409, "env_incompatible"


class ModelPredictFailed(MISError):
    status, code = 422, "model_predict_failed"


class StoreUnavailable(MISError):
    """The model store cannot be written or read (read-only, unreachable, failing); retry later."""

    status, code = 503, "store_unavailable"


class ServiceUnavailable(MISError):
    """An OCI service the catalog or store relies on is down, slow or throttling; retry later."""

    status, code = 503, "service_unavailable"

    def __init__(self, message: str, *, service: str, retry_after_s: int, **details):
        super().__init__(message, service=service, **details)
        self.headers = {"Retry-After": str(retry_after_s)}


class ArtifactCorrupt(MISError):
    """A downloaded artifact does not match the checksum its service gave; retry later."""

    status, code = 502, "artifact_checksum_mismatch"


class CatalogReadOnly(MISError):
    """The server's own identity may not change this catalog: a person promotes with their own."""

    status, code = 403, "catalog_read_only"


class InsufficientStorage(MISError):
    """The model store is full (no space or over quota); nothing was half-saved."""

    status, code = 507, "insufficient_storage"


class ModelQuarantined(MISError):
    """The model timed out or killed its worker too often; an admin's loadmodel brings it back."""

    status, code = 503, "model_quarantined"


class PredictTimeout(MISError):
    status, code = 504, "predict_timeout"
