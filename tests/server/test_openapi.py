"""The OpenAPI document and the routes that serve it and the Swagger UI page."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import falcon
import falcon.testing
import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from server.openapi import MODEL_ID_PATTERN, add_docs_routes, openapi_document

VERSION = "9.8.7-test"

# Every operation of the API and the statuses its description must document.
EXPECTED_OPERATIONS = {
    ("get", "/api/v1/listmodels/"): {"200", "400", "401", "403"},
    ("get", "/api/v1/getmodelinfo/{model_id}"): {"200", "400", "401", "403", "404"},
    ("post", "/api/v1/loadmodel/{model_id}"): {"200", "400", "401", "403", "404", "422"},
    ("post", "/api/v1/uploadmodel/"): {"201", "400", "401", "403", "413", "415", "422"},
    ("post", "/api/v1/promotemodel/{model_id}"): {"200", "400", "401", "403", "404"},
    ("delete", "/api/v1/removemodel/{model_id}"): {"200", "401", "403", "404"},
    ("post", "/api/v1/score/"): {"200", "400", "401", "403", "404", "413", "415", "422"},
    ("get", "/api/v1/serverinfo/"): {"200", "401", "403"},
    ("get", "/api/v1/healthcheck/"): {"200"},
    ("get", "/api/v1/health/live"): {"200"},
    ("get", "/api/v1/health/ready"): {"200", "503"},
    ("get", "/api/v1/openapi.json"): {"200"},
}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture(scope="module")
def document() -> dict:
    return openapi_document(VERSION)


@pytest.fixture(scope="module")
def client() -> falcon.testing.TestClient:
    app = falcon.App()
    add_docs_routes(app, VERSION)
    return falcon.testing.TestClient(app)


def operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield (method, path), operation


def resolve(document: dict, node: dict) -> dict:
    while "$ref" in node:
        target: object = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]  # type: ignore[index]
        node = target  # type: ignore[assignment]
    return node


def schema_validator(document: dict, schema: dict) -> OAS30Validator:
    # Carry the components along so that "#/components/..." references resolve.
    return OAS30Validator({**schema, "components": document["components"]})


# ---------------------------------------------------------------------------------- document


def test_document_validates_against_the_openapi_specification(document):
    validate(document)
    assert document["openapi"] == "3.0.3"
    assert document["info"]["version"] == VERSION


def test_document_is_json_and_each_call_returns_a_fresh_copy(document):
    assert json.loads(json.dumps(document)) == document
    mutated = openapi_document(VERSION)
    mutated["paths"].clear()
    mutated["components"]["schemas"]["Error"]["properties"].clear()
    assert openapi_document(VERSION) == document


def test_document_describes_exactly_the_api_operations(document):
    assert {key for key, _ in operations(document)} == set(EXPECTED_OPERATIONS)


@pytest.mark.parametrize("key", sorted(EXPECTED_OPERATIONS), ids=lambda k: f"{k[0]} {k[1]}")
def test_operation_documents_success_and_error_responses(document, key):
    method, path = key
    operation = document["paths"][path][method]
    assert EXPECTED_OPERATIONS[key] <= set(operation["responses"])
    assert operation["tags"] and operation["operationId"] and operation["summary"]


def test_error_responses_carry_the_common_error_schema(document):
    error_schema = document["components"]["schemas"]["Error"]
    assert error_schema["required"] == ["error", "code"]
    for (method, path), operation in operations(document):
        for status, response in operation["responses"].items():
            if not status.startswith("4"):
                continue
            schema = response_schema(document, response)
            names = {schema.get("$ref")} | {part.get("$ref") for part in
                                            resolve(document, schema).get("allOf", [])}
            assert "#/components/schemas/Error" in names, (method, path, status)


def response_schema(document: dict, response: dict) -> dict:
    return resolve(document, response)["content"]["application/json"]["schema"]


def test_special_error_bodies_name_their_extra_fields(document):
    score = document["paths"]["/api/v1/score/"]["post"]["responses"]
    forbidden = resolve(document, score["403"])["content"]["application/json"]["example"]
    assert {"server_env", "model_env"} <= set(forbidden)
    rejected = resolve(document, score["422"])["content"]["application/json"]["example"]
    assert {"expected", "received"} <= set(rejected)


def test_every_example_matches_its_schema(document):
    checked = 0
    responses = [r for _, op in operations(document) for r in op["responses"].values()]
    for response in responses:
        for media in resolve(document, response).get("content", {}).values():
            if "example" in media:
                schema_validator(document, media["schema"]).validate(media["example"])
                checked += 1
    for name, schema in document["components"]["schemas"].items():
        if "example" in schema:
            schema_validator(document, schema).validate(schema["example"])
            checked += 1
    assert checked >= 10


def test_score_request_offers_the_accepted_payload_shapes(document):
    operation = document["paths"]["/api/v1/score/"]["post"]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    values = [example["value"] for example in examples.values()]
    assert [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]] in values  # rows
    assert [5.1, 3.5, 1.4, 0.2] in values  # one row
    assert any(isinstance(v, dict) and "data" in v for v in values)  # {"data": rows}
    [model_id] = [p for p in operation["parameters"]]
    assert resolve(document, model_id)["in"] == "query"
    assert resolve(document, model_id)["required"] is True


def test_upload_is_multipart_with_file_and_model_name(document):
    operation = document["paths"]["/api/v1/uploadmodel/"]["post"]
    form = resolve(document, operation["requestBody"]["content"]["multipart/form-data"]["schema"])
    assert form["required"] == ["file", "model_name"]
    assert form["properties"]["file"]["format"] == "binary"
    assert form["properties"]["version"]["default"] == "1"
    assert "Location" in operation["responses"]["201"]["headers"]


def test_listmodels_documents_paging(document):
    operation = document["paths"]["/api/v1/listmodels/"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert set(params) == {"compartment_id", "project_id", "no_of_models", "page"}
    assert params["no_of_models"]["schema"] == {
        "type": "integer", "minimum": 1, "maximum": 1000, "default": 400}
    assert "opc-next-page" in operation["responses"]["200"]["headers"]


@pytest.mark.parametrize("model_id", ["a", "demo-iris_sklearn.v1", "A" * 255,
                                      "ocid1.datasciencemodel.oc1.iad.amaaaaaa"])
def test_model_id_pattern_accepts_valid_ids(model_id):
    assert re.match(MODEL_ID_PATTERN, model_id)


@pytest.mark.parametrize("model_id", ["", "-a", ".a", "a..b", "a/b", "a b", "A" * 256, "é"])
def test_model_id_pattern_rejects_invalid_ids(model_id):
    assert not re.match(MODEL_ID_PATTERN, model_id)


# ---------------------------------------------------------------------------------- serving


def test_openapi_json_is_served(client, document):
    result = client.simulate_get("/api/v1/openapi.json")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("application/json")
    assert result.json == document


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def test_docs_page_references_only_local_assets(client):
    result = client.simulate_get("/docs")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/html")
    assert "https://" not in result.text and "http://" not in result.text
    parser = _References()
    parser.feed(result.text)
    assert len(parser.urls) >= 4
    for url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        assert client.simulate_get(url).status_code == 200, url


def test_docs_initializer_points_at_the_local_document(client):
    result = client.simulate_get("/docs/swagger-initializer.js")
    assert result.status_code == 200
    assert "javascript" in result.headers["content-type"]
    assert '"/api/v1/openapi.json"' in result.text
    assert "validatorUrl: null" in result.text  # no call to validator.swagger.io
    assert "http://" not in result.text and "https://" not in result.text


@pytest.mark.parametrize(("asset", "content_type"), [
    ("swagger-ui-bundle.js", "javascript"),
    ("swagger-ui-standalone-preset.js", "javascript"),
    ("swagger-ui.css", "text/css"),
])
def test_swagger_ui_assets_are_served_from_package_files(client, asset, content_type):
    result = client.simulate_get(f"/docs/assets/{asset}")
    assert result.status_code == 200
    assert content_type in result.headers["content-type"]
    assert len(result.content) > 1000


@pytest.mark.parametrize("path", ["/docs/assets/nope.js", "/docs/assets/../__init__.py"])
def test_unknown_or_escaping_asset_paths_are_not_found(client, path):
    assert client.simulate_get(path).status_code == 404
