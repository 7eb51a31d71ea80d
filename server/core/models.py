"""What the core holds of a loaded model, and what it answers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..artifact import schema_types
from ..catalog import ModelInfo
from ..frameworks import Runtime


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
            "loaded_at": utc(self.loaded_at),
            "env_mismatches": self.env_mismatches,
        }

    def outputs(self) -> tuple[str, ...]:
        """"predict", and "predict_proba" for a classifier."""
        return ("predict", "predict_proba") if self.runtime.predict_proba is not None else ("predict",)

    def described(self) -> Signature:
        if self.signature is None:
            output_types = list(schema_types(self.info.output_schema).values())
            self.signature = Signature(self.runtime.n_features, self.runtime.feature_names,
                                       schema_types(self.info.input_schema),
                                       output_types[0] if len(output_types) == 1 else None, self.outputs())
        return self.signature


@dataclass(frozen=True)
class Prediction:
    model_id: str
    model_version: str
    outputs: dict[str, Any]  # what the model gave, by output name, in the order they were asked for
    predict_ms: float
    load_ms: float = 0.0  # this worker had unloaded the model and loaded it again for this request

    @property
    def prediction(self) -> Any:
        """The first output asked for (`predict` unless the caller asked otherwise)."""
        return next(iter(self.outputs.values()))


@dataclass(frozen=True)
class Signature:
    """What a loaded model takes and gives, for protocols that declare it (V2 model metadata)."""

    n_features: int | None
    feature_names: list[str] | None
    feature_types: dict[str, str]  # feature name -> dtype, from the artifact's input schema
    output_type: str | None  # the prediction's dtype, from the artifact's output schema
    outputs: tuple[str, ...]  # "predict", and "predict_proba" for a classifier


def utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
