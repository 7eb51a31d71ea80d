"""The OpenAPI description of the `/api/v1` REST API and the offline docs page.

``openapi_document(version)`` returns the OpenAPI 3.0.3 document as a plain dict (3.0.3, not
3.1, because the bundled Swagger UI 4.x renders 3.0 only).  ``add_docs_routes(app, version)``
serves it at ``/api/v1/openapi.json`` and a Swagger UI page at ``/docs`` whose scripts and
styles come from the ``swagger-ui-bundle`` package files, so the page works with no internet.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import falcon
from swagger_ui_bundle import swagger_ui_path

from .auth import ADMIN, SCORE

API_PREFIX = "/api/v1"
OPENAPI_PATH = f"{API_PREFIX}/openapi.json"
DOCS_PATH = "/docs"
DOCS_INIT_PATH = f"{DOCS_PATH}/swagger-initializer.js"
DOCS_ASSETS_PREFIX = f"{DOCS_PATH}/assets"

MODEL_ID_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,254}$"

Schema = dict[str, Any]

# The API key scope each operation needs (None: open), as its resource declares it in
# server/resources.py; a test holds the two together.
OPERATION_SCOPES: dict[str, str | None] = {
    "listModels": SCORE, "getModelInfo": SCORE, "score": SCORE, "serverInfo": SCORE,
    "loadModel": ADMIN, "uploadModel": ADMIN, "promoteModel": ADMIN, "removeModel": ADMIN,
    "healthCheck": None, "liveness": None, "readiness": None, "openapiDocument": None,
}
SECURITY_SCHEME = "apiKey"


# --------------------------------------------------------------------------------------------
# Small builders: they keep the document below readable.
# --------------------------------------------------------------------------------------------


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_content(schema: Schema, example: Any = None) -> Schema:
    media: Schema = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def _ok(description: str, schema_name: str, example: Any = None, **extra: Any) -> Schema:
    content = _json_content(_ref(schema_name), example)
    return {"description": description, "content": content, **extra}


def _error(name: str) -> Schema:
    return {"$ref": f"#/components/responses/{name}"}


def _object(properties: Schema, required: list[str] | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, **extra}
    required = list(properties) if required is None else required
    if required:  # OpenAPI 3.0 forbids an empty "required" list
        schema["required"] = required
    return schema


def _string(description: str = "", **extra: Any) -> Schema:
    return {"type": "string", **({"description": description} if description else {}), **extra}


def _nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


# --------------------------------------------------------------------------------------------
# Components
# --------------------------------------------------------------------------------------------

_MODEL_SUMMARY_EXAMPLE = {
    "id": "demo-sklearn-iris",
    "name": "iris-classifier",
    "version": "1",
    "framework": "sklearn",
    "lifecycle_state": "ACTIVE",
    "env": "dev",
    "loaded": True,
    "source": "catalog",
}


def _schemas() -> Schema:
    # Taxonomy values are what ADS recorded: strings, objects (Hyperparameters) or null.
    metadata_item = _object({"key": _string(), "value": {"nullable": True, "description": "Any JSON value."}})
    custom_metadata_item = _object(
        {"key": _string(), "value": _nullable(_string()), "category": _nullable(_string())},
    )
    model_summary = _object(
        {
            "id": _string("Model id (catalog OCID or local id).", pattern=MODEL_ID_PATTERN),
            "name": _string("Display name."),
            "version": _string("Model version label."),
            "framework": _string("scikit-learn, xgboost, lightgbm or other.", example="scikit-learn"),
            "lifecycle_state": _string("Catalog lifecycle state.", example="ACTIVE"),
            "env": _nullable(_string("The model's `env` metadata (dev / qa / prod) or null.")),
            "loaded": {"type": "boolean", "description": "Loaded in the worker that answered."},
            "source": _string("Where the model came from.", enum=["catalog", "upload"]),
        },
        example=_MODEL_SUMMARY_EXAMPLE,
    )
    model_info = {
        "allOf": [
            _ref("ModelSummary"),
            _object(
                {
                    "compartment_id": _nullable(_string()),
                    "project_id": _nullable(_string()),
                    "time_created": _nullable(_string("ISO-8601 timestamp.", format="date-time")),
                    "description": _nullable(_string()),
                    "taxonomy_metadata": {"type": "array", "items": _ref("MetadataItem")},
                    "custom_metadata": {"type": "array", "items": _ref("CustomMetadataItem")},
                    "input_schema": _nullable({"type": "object", "additionalProperties": True}),
                    "output_schema": _nullable({"type": "object", "additionalProperties": True}),
                }
            ),
        ]
    }
    model_list = _object(
        {
            "models": {"type": "array", "items": _ref("ModelSummary")},
            "count": {"type": "integer", "minimum": 0, "description": "Models in this page."},
            "next_page": _nullable(_string("Token for the next page; null on the last page.")),
        }
    )
    load_result = _object(
        {
            "model_id": _string(),
            "status": _string(enum=["loaded", "already_loaded"]),
            "load_ms": {"type": "number", "minimum": 0},
        }
    )
    upload_form = _object(
        {
            "file": _string(
                "Zip artifact: top-level score.py + runtime.yaml + the model file.",
                format="binary",
            ),
            "model_name": _string("Display name of the model.", minLength=1),
            "env": _string("Environment the model may score in (dev / qa / prod)."),
            "version": _string("Version label.", default="1"),
        },
        required=["file", "model_name"],
    )
    upload_result = _object(
        {
            "model_id": _string(),
            "model_name": _string(),
            "version": _string(),
            "env": _nullable(_string()),
            "status": _string(enum=["loaded"]),
        }
    )
    remove_result = _object({"model_id": _string(), "status": _string(enum=["removed"])})
    score_request = {
        "description": (
            "Any JSON value, passed to the model. Native models (sklearn / XGBoost / LightGBM) "
            "accept a list of rows (2-D), one row (1-D list) or `{\"data\": rows}`; "
            "OCI Data Science (ADS) artifacts receive the JSON as-is."
        ),
    }
    timing = _object(
        {
            "predict_ms": {"type": "number", "minimum": 0, "description": "Time in predict()."},
            "total_ms": {"type": "number", "minimum": 0, "description": "Time in the server."},
            "load_ms": {"type": "number", "minimum": 0,
                        "description": "Only when this worker had unloaded the model (MIS_MAX_LOADED_MODELS) and "
                                       "loaded it again for this request: the load time."},
        },
        required=["predict_ms", "total_ms"],
    )
    score_response = _object(
        {
            "model_id": _string(),
            "model_version": _string(),
            "prediction": {"description": "Whatever the model returned (JSON-encoded)."},
            "timing": _ref("Timing"),
        }
    )
    model_stats = _object(
        {
            "model_id": _string(),
            "name": _string(),
            "version": _string(),
            "framework": _string(),
            "env": _nullable(_string()),
            "requests": {"type": "integer", "minimum": 0},
            "errors": {"type": "integer", "minimum": 0},
            "mean_predict_ms": _nullable({"type": "number", "minimum": 0}),
            "loaded_at": _nullable(
                _string("When this worker loaded the model (ISO-8601).", format="date-time")
            ),
        }
    )
    server_info = _object(
        {
            "auth": _object({
                "mode": _string("`bearer`: API keys; `off`: no authentication (loopback only).", enum=["bearer", "off"]),
                "caller": _nullable(_string("Name of the API key this request used (never the key).")),
                "scopes": {"type": "array", "items": _string(enum=[SCORE, ADMIN])},
            }),
            "version": _string("Server version."),
            "environment": _nullable(_string("MIS_ENV of this server, or null.")),
            "env_gating": {"type": "boolean", "description": "True when MIS_ENV gates scoring."},
            "worker_pid": {"type": "integer"},
            "workers": {"type": "integer", "minimum": 1},
            "catalog": _string(enum=["local", "oci"]),
            "uptime_s": {"type": "number", "minimum": 0},
            "models": {"type": "array", "items": _ref("ModelStats")},
            "memory": _object({
                "max_models": _nullable({"type": "integer", "description": "MIS_MAX_LOADED_MODELS, or null."}),
                "in_memory": {"type": "integer", "description": "Models in this worker's memory."},
                "unloaded_here": {"type": "array", "items": _string(),
                                  "description": "Loaded models this worker unloaded to stay within the limit."},
                "evictions": {"type": "integer", "description": "Unloads for the limit since the worker started."},
            }),
        }
    )
    error = _object(
        {
            "error": _string("Human-readable message."),
            "code": _string(
                "Machine-readable code, e.g. bad_request, invalid_model_id, invalid_page, "
                "invalid_artifact, unauthorized, forbidden, upload_env_refused, env_mismatch, "
                "model_not_found, model_not_loaded, "
                "payload_too_large, unsupported_media_type, invalid_input, model_load_failed, "
                "model_predict_failed, internal_error.",
                example="model_not_found",
            ),
        },
        additionalProperties=True,
        description="Every error body. Some errors add fields (see EnvMismatchError, ShapeError).",
    )
    env_mismatch = {
        "allOf": [
            _ref("Error"),
            _object({"server_env": _nullable(_string()), "model_env": _nullable(_string())}),
        ]
    }
    shape_error = {
        "allOf": [
            _ref("Error"),
            _object(
                {
                    "expected": {"description": "Expected feature count or shape."},
                    "received": {"description": "What the request carried."},
                },
                required=[],
            ),
        ]
    }
    return {
        "Error": error,
        "EnvMismatchError": env_mismatch,
        "ShapeError": shape_error,
        "MetadataItem": metadata_item,
        "CustomMetadataItem": custom_metadata_item,
        "ModelSummary": model_summary,
        "ModelInfo": model_info,
        "ModelList": model_list,
        "LoadResult": load_result,
        "UploadForm": upload_form,
        "UploadResult": upload_result,
        "RemoveResult": remove_result,
        "PromoteRequest": _object(
            {"env": _nullable(_string("The env the model may score in from now on; null withdraws it.",
                                      pattern=r"^[A-Za-z0-9._-]{1,64}$", example="qa"))},
            required=["env"],
        ),
        "PromoteResult": _object({"model_id": _string(), "env": _nullable(_string()),
                                  "status": _string(enum=["promoted", "withdrawn"])}),
        "ScoreRequest": score_request,
        "Timing": timing,
        "ScoreResponse": score_response,
        "ModelStats": model_stats,
        "ServerInfo": server_info,
        "HealthStatus": _object({"status": _string(enum=["ok"])}),
        "Liveness": _object({"status": _string(enum=["alive"])}),
        "Readiness": _object({"status": _string(enum=["ready"])}),
        "NotReady": _object(
            {"status": _string(enum=["loading"]), "pending": {"type": "array", "items": _string()}}
        ),
    }


def _error_responses() -> Schema:
    def response(description: str, schema: str, example: Schema) -> Schema:
        return {"description": description, "content": _json_content(_ref(schema), example)}

    return {
        "BadRequest": response(
            "Malformed request (bad parameter, id, JSON, form or zip).",
            "Error",
            {"error": "model id must be 1-255 letters, digits, '.', '_' or '-', start with a letter or digit and not contain '..'", "code": "invalid_model_id"},
        ),
        "Forbidden": response(
            "The model's env does not match the server's environment (`env_mismatch`), or the API key "
            "lacks the `score` scope (`forbidden`).",
            "EnvMismatchError",
            {
                "error": "model 'demo-sklearn-iris' is for env 'qa'; this server's env is 'prod'",
                "code": "env_mismatch",
                "server_env": "prod",
                "model_env": "qa",
            },
        ),
        "Unauthorized": {
            **response("No API key, or one the server does not know.", "Error",
                       {"error": "the API key is not valid", "code": "unauthorized"}),
            "headers": {"WWW-Authenticate": {"schema": _string(), "description": 'Bearer realm="mis"'}},
        },
        "ScopeForbidden": response(
            "The API key lacks the scope this operation needs (`forbidden`, with `required_scope`); for an "
            "upload, also an `env` that uploads may not claim (`upload_env_refused`).",
            "Error",
            {"error": "the API key 'scoring' lacks the 'admin' scope this operation needs", "code": "forbidden",
             "required_scope": "admin"},
        ),
        "NotFound": response(
            "Unknown model (`model_not_found`) or, for scoring, not loaded (`model_not_loaded`).",
            "Error",
            {"error": "model 'nope' is not in the catalog", "code": "model_not_found"},
        ),
        "PayloadTooLarge": response(
            "Request body over the configured limit.",
            "Error",
            {"error": "the body of 20971520 bytes is over the limit of 10485760 bytes", "code": "payload_too_large"},
        ),
        "UnsupportedMediaType": response(
            "Wrong Content-Type (score: application/json; upload: multipart/form-data).",
            "Error",
            {"error": "the body must be application/json, not 'text/plain'", "code": "unsupported_media_type"},
        ),
        "LoadFailed": response(
            "The model artifact failed to load.",
            "Error",
            {"error": "model 'upload-3f2a...' failed to load (RuntimeError)", "code": "model_load_failed",
             "detail": "RuntimeError: the model file is corrupt"},
        ),
        "ScoreRejected": response(
            "Wrong feature count / shape (`invalid_input`, with `expected` / `received`), "
            "or the model raised on the input (`model_predict_failed`).",
            "ShapeError",
            {
                "error": "expected 4 features per row, received 3",
                "code": "invalid_input",
                "expected": 4,
                "received": 3,
            },
        ),
    }


def _parameters() -> Schema:
    model_id_schema = _string(pattern=MODEL_ID_PATTERN, maxLength=255)
    description = "Model id: letters, digits, '.', '_', '-'; 1-255 chars; no '..'."
    return {
        "ModelIdPath": {
            "name": "model_id",
            "in": "path",
            "required": True,
            "description": description,
            "schema": model_id_schema,
            "example": "demo-sklearn-iris",
        },
        "ModelIdQuery": {
            "name": "model_id",
            "in": "query",
            "required": True,
            "description": description,
            "schema": model_id_schema,
            "example": "demo-sklearn-iris",
        },
    }


_SCORE_EXAMPLES = {
    "rows": {
        "summary": "Several rows (2-D list)",
        "value": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]],
    },
    "one_row": {"summary": "One row (1-D list)", "value": [5.1, 3.5, 1.4, 0.2]},
    "data_wrapped": {
        "summary": "Rows wrapped in {\"data\": ...}",
        "value": {"data": [[5.1, 3.5, 1.4, 0.2]]},
    },
    "ads_payload": {
        "summary": "ADS artifact: any JSON, passed to score.py predict() as-is",
        "value": {"sepal_length": [5.1], "sepal_width": [3.5],
                  "petal_length": [1.4], "petal_width": [0.2]},
    },
}


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------


def _paths() -> Schema:
    model_id_path = {"$ref": "#/components/parameters/ModelIdPath"}
    return {
        f"{API_PREFIX}/listmodels/": {
            "get": {
                "tags": ["models"],
                "operationId": "listModels",
                "summary": "List models in the catalog and uploaded models",
                "parameters": [
                    {"name": "compartment_id", "in": "query", "schema": _string(),
                     "description": "Only models in this compartment."},
                    {"name": "project_id", "in": "query", "schema": _string(),
                     "description": "Only models in this project."},
                    {"name": "no_of_models", "in": "query", "description": "Page size.",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 400}},
                    {"name": "page", "in": "query", "schema": _string(),
                     "description": "Opaque token: `next_page` of the previous response."},
                ],
                "responses": {
                    "200": _ok(
                        "One page of models.",
                        "ModelList",
                        {"models": [_MODEL_SUMMARY_EXAMPLE], "count": 1, "next_page": None},
                        headers={
                            "opc-next-page": {
                                "description": "Set when there is a next page (= next_page).",
                                "schema": _string(),
                            }
                        },
                    ),
                    "400": _error("BadRequest"),
                },
            }
        },
        f"{API_PREFIX}/getmodelinfo/{{model_id}}": {
            "get": {
                "tags": ["models"],
                "operationId": "getModelInfo",
                "summary": "Metadata of one model",
                "parameters": [model_id_path],
                "responses": {
                    "200": _ok("The model's metadata.", "ModelInfo"),
                    "400": _error("BadRequest"),
                    "404": _error("NotFound"),
                },
            }
        },
        f"{API_PREFIX}/loadmodel/{{model_id}}": {
            "post": {
                "tags": ["models"],
                "operationId": "loadModel",
                "summary": "Load a catalog model (idempotent)",
                "parameters": [model_id_path],
                "responses": {
                    "200": _ok(
                        "Loaded now, or already loaded.",
                        "LoadResult",
                        {"model_id": "demo-sklearn-iris", "status": "loaded", "load_ms": 41.7},
                    ),
                    "400": _error("BadRequest"),
                    "404": _error("NotFound"),
                    "422": _error("LoadFailed"),
                },
            }
        },
        f"{API_PREFIX}/uploadmodel/": {
            "post": {
                "tags": ["models"],
                "operationId": "uploadModel",
                "summary": "Upload a model artifact (zip) and load it",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": _ref("UploadForm"),
                            "encoding": {"file": {"contentType": "application/zip"}},
                        }
                    },
                },
                "responses": {
                    "201": _ok(
                        "Stored and loaded.",
                        "UploadResult",
                        {"model_id": "my-model-1", "model_name": "my-model", "version": "1",
                         "env": "dev", "status": "loaded"},
                        headers={
                            "Location": {
                                "description": "/api/v1/getmodelinfo/{model_id} of the new model.",
                                "schema": _string(),
                            }
                        },
                    ),
                    "400": _error("BadRequest"),
                    "413": _error("PayloadTooLarge"),
                    "415": _error("UnsupportedMediaType"),
                    "422": _error("LoadFailed"),
                },
            }
        },
        f"{API_PREFIX}/promotemodel/{{model_id}}": {
            "post": {
                "tags": ["models"],
                "operationId": "promoteModel",
                "summary": "Set a model's env (promotion), or withdraw it",
                "description": "Writes the model's `env` metadata where it lives (the upload's record or the "
                               "catalog). Workers other than the one answering see it within MIS_METADATA_TTL_S.",
                "parameters": [model_id_path],
                "requestBody": {"required": True, "content": _json_content(_ref("PromoteRequest"), {"env": "qa"})},
                "responses": {
                    "200": _ok("Promoted or withdrawn.", "PromoteResult",
                               {"model_id": "upload-3f2a...", "env": "qa", "status": "promoted"}),
                    "400": _error("BadRequest"),
                    "404": _error("NotFound"),
                },
            }
        },
        f"{API_PREFIX}/removemodel/{{model_id}}": {
            "delete": {
                "tags": ["models"],
                "operationId": "removeModel",
                "summary": "Unload a model (and delete it if it was uploaded)",
                "parameters": [model_id_path],
                "responses": {
                    "200": _ok("Removed.", "RemoveResult",
                               {"model_id": "my-model-1", "status": "removed"}),
                    "400": _error("BadRequest"),
                    "404": _error("NotFound"),
                },
            }
        },
        f"{API_PREFIX}/score/": {
            "post": {
                "tags": ["scoring"],
                "operationId": "score",
                "summary": "Score a loaded model",
                "description": (
                    "Scoring is gated by environment: when the server has an environment "
                    "(MIS_ENV), the model's `env` metadata must equal it, otherwise 403."
                ),
                "parameters": [{"$ref": "#/components/parameters/ModelIdQuery"}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": _ref("ScoreRequest"),
                            "examples": _SCORE_EXAMPLES,
                        }
                    },
                },
                "responses": {
                    "200": _ok(
                        "The model's prediction.",
                        "ScoreResponse",
                        {"model_id": "demo-sklearn-iris", "model_version": "1",
                         "prediction": [0, 2], "timing": {"predict_ms": 0.41, "total_ms": 0.93}},
                    ),
                    "400": _error("BadRequest"),
                    "403": _error("Forbidden"),
                    "404": _error("NotFound"),
                    "413": _error("PayloadTooLarge"),
                    "415": _error("UnsupportedMediaType"),
                    "422": _error("ScoreRejected"),
                },
            }
        },
        f"{API_PREFIX}/serverinfo/": {
            "get": {
                "tags": ["server"],
                "operationId": "serverInfo",
                "summary": "Server version, environment and per-model statistics (this worker)",
                "responses": {"200": _ok("Server information.", "ServerInfo")},
            }
        },
        f"{API_PREFIX}/healthcheck/": {
            "get": {
                "tags": ["health"],
                "operationId": "healthCheck",
                "summary": "Basic health check",
                "responses": {"200": _ok("Healthy.", "HealthStatus", {"status": "ok"})},
            }
        },
        f"{API_PREFIX}/health/live": {
            "get": {
                "tags": ["health"],
                "operationId": "liveness",
                "summary": "Liveness probe",
                "responses": {"200": _ok("The process is alive.", "Liveness", {"status": "alive"})},
            }
        },
        f"{API_PREFIX}/health/ready": {
            "get": {
                "tags": ["health"],
                "operationId": "readiness",
                "summary": "Readiness probe",
                "responses": {
                    "200": _ok("Ready to serve.", "Readiness", {"status": "ready"}),
                    "503": _ok("Models still loading.", "NotReady",
                               {"status": "loading", "pending": ["demo-sklearn-iris"]}),
                },
            }
        },
        OPENAPI_PATH: {
            "get": {
                "tags": ["docs"],
                "operationId": "openapiDocument",
                "summary": "This OpenAPI document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.0.3 document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }


_TAGS = [
    {"name": "models", "description": "List, inspect, load, upload and remove models."},
    {"name": "scoring", "description": "Predictions from loaded models."},
    {"name": "server", "description": "Server information and statistics."},
    {"name": "health", "description": "Health, liveness and readiness probes."},
    {"name": "docs", "description": "API description (Swagger UI at /docs)."},
]


def openapi_document(version: str) -> dict[str, Any]:
    """Return a fresh OpenAPI 3.0.3 document (a JSON-serialisable dict) for the `/api/v1` API."""
    document = {
        "openapi": "3.0.3",
        "info": {
            "title": "Model Inference Server",
            "version": version,
            "description": (
                "Serves many models (scikit-learn, XGBoost, LightGBM and OCI Data Science / ADS "
                "artifacts) behind one endpoint. Every error is JSON "
                "`{\"error\": message, \"code\": code, ...}`."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "tags": _TAGS,
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "parameters": _parameters(),
            "responses": _error_responses(),
        },
    }
    _add_security(document)
    return copy.deepcopy(document)


def _add_security(document: Schema) -> None:
    """Every operation says which key scope it needs and answers 401/403 without it."""
    document["components"]["securitySchemes"] = {SECURITY_SCHEME: {
        "type": "http", "scheme": "bearer",
        "description": "An API key from the server's keys file (MIS_API_KEYS_FILE): "
                       "`Authorization: Bearer <key>`. Scope `score`: list, inspect, score, server info; "
                       "`admin`: also load, upload, promote and remove.",
    }}
    for item in document["paths"].values():
        for operation in item.values():
            scope = OPERATION_SCOPES[operation["operationId"]]
            if scope is None:
                operation["security"] = []
                continue
            operation["security"] = [{SECURITY_SCHEME: []}]
            operation["description"] = (f"Needs an API key with scope `{scope}`. "
                                        + operation.get("description", "")).strip()
            responses = operation["responses"]
            responses["401"] = _error("Unauthorized")
            responses.setdefault("403", _error("ScopeForbidden"))  # scoring's own 403 says both


# --------------------------------------------------------------------------------------------
# Docs routes
# --------------------------------------------------------------------------------------------

_DOCS_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Model Inference Server API</title>
  <link rel="stylesheet" type="text/css" href="{assets}/swagger-ui.css">
  <link rel="stylesheet" type="text/css" href="{assets}/index.css">
  <link rel="icon" type="image/png" href="{assets}/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{assets}/swagger-ui-bundle.js" charset="utf-8"></script>
  <script src="{assets}/swagger-ui-standalone-preset.js" charset="utf-8"></script>
  <script src="{init}" charset="utf-8"></script>
</body>
</html>
"""

# A separate script (not inline) so that a strict Content-Security-Policy can allow 'self' only.
# validatorUrl null: Swagger UI would otherwise call validator.swagger.io. persistAuthorization: the
# key given to Authorize survives a reload (kept in the browser's localStorage).
_INITIALIZER_JS = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: %s,
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout"
  });
};
"""


class _FixedBody:
    """Answers GET with one body built at start-up."""

    def __init__(self, body: bytes, content_type: str) -> None:
        self._body = body
        self._content_type = content_type

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = self._content_type
        resp.data = self._body


def _assets_dir() -> str:
    directory = os.path.abspath(str(swagger_ui_path))
    if not os.path.isfile(os.path.join(directory, "swagger-ui-bundle.js")):
        raise RuntimeError(f"Swagger UI assets not found in {directory}")
    return directory


def add_docs_routes(app: falcon.App, version: str) -> None:
    """Serve the OpenAPI document, the Swagger UI page and its assets (no CDN) on ``app``."""
    document = json.dumps(openapi_document(version), separators=(",", ":")).encode()
    page = _DOCS_HTML.format(assets=DOCS_ASSETS_PREFIX, init=DOCS_INIT_PATH).encode()
    initializer = (_INITIALIZER_JS % json.dumps(OPENAPI_PATH)).encode()

    app.add_route(OPENAPI_PATH, _FixedBody(document, falcon.MEDIA_JSON))
    app.add_route(DOCS_PATH, _FixedBody(page, falcon.MEDIA_HTML))
    app.add_route(DOCS_INIT_PATH, _FixedBody(initializer, falcon.MEDIA_JS))
    app.add_static_route(DOCS_ASSETS_PREFIX, _assets_dir())
