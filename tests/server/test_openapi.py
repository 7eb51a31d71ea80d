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

from server.demo import DEMO_MODEL_IDS
from server.openapi import (DOCS_INIT_PATH, DOCS_PATH, MODEL_ID_PATTERN, OPERATION_SCOPES, add_docs_routes,
                            openapi_document)

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
    ("get", "/api/v1/aliases"): {"200", "401", "403"},
    ("put", "/api/v1/aliases/{model_name}/{alias}"): {"200", "400", "401", "403"},
    ("delete", "/api/v1/aliases/{model_name}/{alias}"): {"200", "401", "403", "404"},
    ("get", "/v2"): {"200", "401", "403"},
    ("get", "/v2/health/live"): {"200"},
    ("get", "/v2/health/ready"): {"200", "503"},
    ("get", "/v2/models/{model_name}"): {"200", "401", "403", "404"},
    ("get", "/v2/models/{model_name}/versions/{model_version}"): {"200", "401", "403", "404"},
    ("get", "/v2/models/{model_name}/ready"): {"200", "401", "403", "404", "503"},
    ("get", "/v2/models/{model_name}/versions/{model_version}/ready"): {"200", "401", "403", "404", "503"},
    ("post", "/v2/models/{model_name}/infer"): {"200", "400", "401", "403", "404", "413", "415", "422"},
    ("post", "/v2/models/{model_name}/versions/{model_version}/infer"):
        {"200", "400", "401", "403", "404", "413", "415", "422"},
    ("post", "/v2/repository/index"): {"200", "401", "403"},
    ("post", "/v2/repository/models/{model_name}/load"): {"200", "401", "403", "404", "422"},
    ("post", "/v2/repository/models/{model_name}/unload"): {"200", "401", "403", "404"},
    ("get", "/metrics"): {"200", "401", "403"},
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


def examples_of(node: dict) -> list:
    """The example values a media type or parameter gives: `example` and each of `examples`."""
    return ([node["example"]] if "example" in node else []) + [e["value"] for e in node.get("examples", {}).values()]


def test_every_example_matches_its_schema(document):
    checked = 0
    media_types = []
    for _, operation in operations(document):
        bodies = [operation["requestBody"]] if "requestBody" in operation else []
        for part in [*operation["responses"].values(), *bodies]:
            media_types += resolve(document, part).get("content", {}).values()
        for parameter in operation.get("parameters", []):
            media_types.append(resolve(document, parameter))
    for node in media_types:
        for example in examples_of(node):
            schema_validator(document, node["schema"]).validate(example)
            checked += 1
    for name, schema in document["components"]["schemas"].items():
        if "example" in schema:
            schema_validator(document, schema).validate(schema["example"])
            checked += 1
    assert checked >= 60


def test_score_request_offers_the_accepted_payload_shapes(document):
    operation = document["paths"]["/api/v1/score/"]["post"]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    values = [example["value"] for example in examples.values()]
    assert [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]] in values  # rows
    assert [5.1, 3.5, 1.4, 0.2] in values  # one row
    assert any(isinstance(v, dict) and "data" in v for v in values)  # {"data": rows}
    # The model: by model_id, or by model_name and a version or alias (so none is required alone).
    parameters = {p["name"]: p for p in map(lambda p: resolve(document, p), operation["parameters"])}
    assert set(parameters) == {"model_id", "model_name", "version"}
    assert all(p["in"] == "query" and p["required"] is False for p in parameters.values())


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


# ---------------------------------------------------------------------------------- the app

# Pages for people, not API operations: the Swagger UI page and its script (its assets are a static route).
NOT_API = {DOCS_PATH, DOCS_INIT_PATH}


def served_routes(app: falcon.App) -> dict[tuple[str, str], object]:
    """(method, URI template) -> resource, for every responder a resource of the app has."""
    found, stack = {}, list(app._router._roots)
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.resource is None or node.uri_template in NOT_API:
            continue
        for method, responder in node.method_map.items():
            # Falcon fills the other methods with its own 405 and OPTIONS responders, bound to no resource.
            if getattr(responder, "__self__", None) is node.resource:
                found[(method.lower(), node.uri_template.rstrip("/"))] = node.resource
    return found


@pytest.fixture
def app(make_client) -> falcon.App:
    return make_client().app


def test_every_served_route_is_documented_and_every_documented_operation_is_served(app, document):
    served = served_routes(app)
    documented = {(method, path.rstrip("/")) for method, path in (key for key, _ in operations(document))}
    assert sorted(set(served) - documented) == [], "served but not documented"
    assert sorted(documented - set(served)) == [], "documented but not served"


def test_each_documented_scope_is_the_one_its_resource_enforces(app, document):
    served = served_routes(app)
    for (method, path), operation in operations(document):
        resource = served.get((method, path.rstrip("/")))
        assert resource is not None, f"{method} {path} is not served"
        assert getattr(resource, "scope", None) == operation["x-scope"], f"{method} {path}"
        assert OPERATION_SCOPES[operation["operationId"]] == operation["x-scope"]
        if operation["x-scope"] is None:
            assert operation["security"] == [], f"{method} {path}"
        else:
            assert operation["security"] == [{"apiKey": []}], f"{method} {path}"
            assert {"401", "403"} <= set(operation["responses"]), f"{method} {path}"
            assert f"scope `{operation['x-scope']}`" in operation["description"]


def test_operation_ids_are_unique(document):
    ids = [operation["operationId"] for _, operation in operations(document)]
    assert len(ids) == len(set(ids)) == len(OPERATION_SCOPES)


def demo_examples(media: dict) -> dict[str, list]:
    """Demo model id -> the example bodies for it (each example names its model in `x-model-id`)."""
    by_model: dict[str, list] = {}
    for example in media["examples"].values():
        by_model.setdefault(example["x-model-id"], []).append(example["value"])
    return by_model


def test_score_examples_cover_every_demo_model_and_each_scores(make_client, document):
    """What "Try it out" sends for each example, sent to the app: each model answers, in the documented shape."""
    client = make_client()
    operation = document["paths"]["/api/v1/score/"]["post"]
    by_model = demo_examples(operation["requestBody"]["content"]["application/json"])
    assert set(by_model) == set(DEMO_MODEL_IDS)
    answer_schema = resolve(document, operation["responses"]["200"])["content"]["application/json"]["schema"]
    for model_id, bodies in by_model.items():
        assert client.simulate_post(f"/api/v1/loadmodel/{model_id}").status_code == 200
        for body in bodies:
            result = client.simulate_post("/api/v1/score/", params={"model_id": model_id}, json=body)
            assert result.status_code == 200, (model_id, body, result.text)
            schema_validator(document, answer_schema).validate(result.json)


@pytest.mark.parametrize("path", ["/v2/models/{model_name}/infer",
                                  "/v2/models/{model_name}/versions/{model_version}/infer"])
def test_infer_examples_cover_every_demo_model_and_each_infers(make_client, document, path):
    client = make_client()
    operation = document["paths"][path]["post"]
    body = resolve(document, operation["requestBody"])
    by_model = demo_examples(body["content"]["application/json"])
    assert set(by_model) == set(DEMO_MODEL_IDS)
    answer = resolve(document, operation["responses"]["200"])["content"]["application/json"]
    for model_id, requests in by_model.items():
        assert client.simulate_post(f"/v2/repository/models/{model_id}/load").json == {}
        metadata = client.simulate_get(f"/v2/models/{model_id}")
        assert metadata.status_code == 200, metadata.text
        metadata_schema = resolve(document, document["paths"]["/v2/models/{model_name}"]["get"]["responses"]["200"])
        schema_validator(document, metadata_schema["content"]["application/json"]["schema"]).validate(metadata.json)
        concrete = path.replace("{model_name}", model_id).replace("{model_version}", metadata.json["versions"][0])
        for request in requests:
            result = client.simulate_post(concrete, json=request)
            assert result.status_code == 200, (model_id, request, result.text)
            schema_validator(document, answer["schema"]).validate(result.json)
            assert result.json["model_name"] == model_id


def test_every_get_answers_in_its_documented_shape(make_client, document):
    client = make_client()
    iris = "demo-sklearn-iris"
    assert client.simulate_post(f"/v2/repository/models/{iris}/load").status_code == 200
    checked = 0
    for (method, path), operation in operations(document):
        if method != "get":
            continue
        result = client.simulate_get(path.format(model_id=iris, model_name=iris, model_version="1"))
        status = str(result.status_code)
        assert status in operation["responses"], (path, result.text)
        content = resolve(document, operation["responses"][status])["content"]
        media_type = result.headers["content-type"].split(";")[0]
        assert media_type in content, path
        if media_type == "application/json":
            schema_validator(document, content[media_type]["schema"]).validate(result.json)
            checked += 1
    assert checked >= 15


def test_every_component_is_used(document):
    used = set(re.findall(r'"\$ref": "(#/components/[^"]+)"', json.dumps(document)))
    defined = {f"#/components/{kind}/{name}" for kind, items in document["components"].items()
               if kind != "securitySchemes" for name in items}
    assert sorted(defined - used) == []


def test_alias_examples_work_on_the_demo_models(make_client, document):
    client = make_client()
    assert client.simulate_post("/api/v1/loadmodel/demo-sklearn-iris").status_code == 200
    item = document["paths"]["/api/v1/aliases/{model_name}/{alias}"]
    name, alias = (resolve(document, p)["example"] for p in item["put"]["parameters"])
    [first, *_] = item["put"]["requestBody"]["content"]["application/json"]["examples"].values()
    path = f"/api/v1/aliases/{name}/{alias}"
    for method, body in (("put", first["value"]), ("delete", None)):
        result = client.simulate_request(method.upper(), path, json=body)
        assert result.status_code == 200, (method, result.text)
        answer = resolve(document, item[method]["responses"]["200"])["content"]["application/json"]["schema"]
        schema_validator(document, answer).validate(result.json)
        if method == "put":
            listed = client.simulate_get("/api/v1/aliases").json
            assert listed["aliases"][name][alias] == {"versions": first["value"]["versions"], "shadow": None}
