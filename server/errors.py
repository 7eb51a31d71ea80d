"""Typed errors of the core. Each carries its HTTP status so the REST layer maps them in one place."""

from __future__ import annotations


class MISError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict:
        return {"error": self.message, "code": self.code, **self.details}


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


class ModelPredictFailed(MISError):
    status, code = 422, "model_predict_failed"


class StoreUnavailable(MISError):
    """The model store cannot be written or read (read-only, unreachable, failing); retry later."""

    status, code = 503, "store_unavailable"


class InsufficientStorage(MISError):
    """The model store is full (no space or over quota); nothing was half-saved."""

    status, code = 507, "insufficient_storage"


class ModelQuarantined(MISError):
    """The model timed out or killed its worker too often; an admin's loadmodel brings it back."""

    status, code = 503, "model_quarantined"


class PredictTimeout(MISError):
    status, code = 504, "predict_timeout"
