"""The OpenAPI description of the server's APIs (/api/v1, the Open Inference Protocol under /v2,
/metrics) and the offline docs page.

The description is data: ``openapi.yaml`` beside this module. ``openapi_document(version)`` returns it
as a plain dict with what only the running server knows filled in: its version, and for each operation
the security its ``x-scope`` implies. ``add_docs_routes(app, version)`` serves it at
``/api/v1/openapi.json`` and a Swagger UI page at ``/docs`` whose scripts and styles come from the
``swagger-ui-bundle`` package files, so the page works with no internet.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import falcon
import yaml
from swagger_ui_bundle import swagger_ui_path

API_PREFIX = "/api/v1"
OPENAPI_PATH = f"{API_PREFIX}/openapi.json"
DOCS_PATH = "/docs"
DOCS_INIT_PATH = f"{DOCS_PATH}/swagger-initializer.js"
DOCS_ASSETS_PREFIX = f"{DOCS_PATH}/assets"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
SECURITY_SCHEME = "apiKey"

Document = dict[str, Any]


# libyaml's safe loader where PyYAML has it (ten times faster, at each worker's start), else PyYAML's own.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load(path: Path) -> Document:
    with path.open(encoding="utf-8") as file:
        return yaml.load(file, Loader=_SAFE_LOADER)  # nosec B506: a safe loader, chosen above


_DOCUMENT = _load(Path(__file__).with_name("openapi.yaml"))


def operations(document: Document):
    """(path, method, operation) of every operation of ``document``."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


# The API key scope each operation needs (None: open): the `x-scope` the document gives it, which a test
# holds equal to the `scope` its resource declares.
OPERATION_SCOPES: dict[str, str | None] = {op["operationId"]: op["x-scope"] for _, _, op in operations(_DOCUMENT)}
MODEL_ID_PATTERN: str = _DOCUMENT["components"]["parameters"]["ModelIdPath"]["schema"]["pattern"]


def openapi_document(version: str) -> Document:
    """Return a fresh OpenAPI 3.0.3 document (a JSON-serialisable dict) of the server's APIs."""
    document = copy.deepcopy(_DOCUMENT)
    document["info"]["version"] = version
    for _, _, operation in operations(document):
        _add_security(operation, operation["x-scope"])
    return document


def _add_security(operation: Document, scope: str | None) -> None:
    """An operation that needs a key says which scope, and answers 401/403 without it."""
    if scope is None:
        operation["security"] = []
        return
    operation["security"] = [{SECURITY_SCHEME: []}]
    operation["description"] = f"Needs an API key with scope `{scope}`. {operation.get('description', '')}".strip()
    responses = {"401": {"$ref": "#/components/responses/Unauthorized"},
                 "403": {"$ref": "#/components/responses/ScopeForbidden"},  # scoring's own 403 says both
                 **operation["responses"]}
    # A new dict, in status order: YAML aliases let operations share one responses mapping.
    operation["responses"] = dict(sorted(responses.items()))


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
