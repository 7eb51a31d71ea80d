"""Who may do what, what the logs say about it, and what errors tell whom: through the whole app."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest

from server.protocols import v1
from server.auth import ADMIN, SCORE
from server.config import SETTINGS
from server.openapi import OPERATION_SCOPES, openapi_document

from .keys import keys_document, mount_keys, new_key
from .protocols.test_v1 import IRIS, SETOSA, assert_error, multipart, store_listing
from .zips import SCORE_PREDICT_FAILS, helper_artifact, score_artifact

SCORING_KEY, ADMIN_KEY = new_key(), new_key()
SCORING, ADMINISTRATION = {"Authorization": f"Bearer {SCORING_KEY}"}, {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def keys_file(tmp_path):
    return mount_keys(tmp_path / "secret", keys_document({"scoring": ([SCORE], SCORING_KEY),
                                                          "ops": ([ADMIN], ADMIN_KEY)}))


@pytest.fixture
def secured(make_client, keys_file):
    def make(**env: str):
        return make_client(MIS_API_KEYS_FILE=str(keys_file), **env)

    return make


def upload(client, archive, headers, **fields):
    body, content_type = multipart({"model_name": "uploaded", **fields}, archive)
    return client.simulate_post("/api/v1/uploadmodel/", body=body, headers={"Content-Type": content_type, **headers})


def routes(app) -> dict[str, object]:
    """Every route of the app: URI template -> resource."""
    found, stack = {}, list(app._router._roots)
    while stack:
        node = stack.pop()
        if node.resource is not None:
            found[node.uri_template.rstrip("/")] = node.resource
        stack.extend(node.children)
    return found


def operations():
    """(method, concrete path, scope) of every documented operation."""
    for path, item in openapi_document("x")["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path.replace("{model_id}", IRIS), OPERATION_SCOPES[operation["operationId"]]


def access_lines(caplog, kind: str) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == f"mis.{kind}"]


# -- who may do what ---------------------------------------------------------------------------

def test_the_documented_scope_of_each_operation_is_the_one_enforced(client):
    document = openapi_document("x")
    for path, item in document["paths"].items():
        resource = routes(client.app)[path.rstrip("/")]
        for operation in item.values():
            assert getattr(resource, "scope", None) == OPERATION_SCOPES[operation["operationId"]], path


def test_every_state_change_is_admin_and_audited(client):
    for path, resource in routes(client.app).items():
        if path.startswith("/api/"):
            assert (getattr(resource, "scope", None) == ADMIN) == hasattr(resource, "audit"), path


@pytest.mark.parametrize("method, path, scope", list(operations()), ids=lambda v: str(v))
def test_every_operation_answers_without_a_key_only_if_open(secured, method, path, scope):
    client = secured()
    for headers in ({}, {"Authorization": f"Bearer {new_key()}"}, {"Authorization": f"Basic {ADMIN_KEY}"}):
        result = client.simulate_request(method, path, headers=headers, params={"model_id": IRIS}, json={})
        if scope is None:
            assert result.status_code in (200, 503), result.text  # readiness may still be loading
            continue
        assert_error(result, 401, "unauthorized")
        assert result.headers["www-authenticate"].startswith('Bearer realm="mis"')
    if scope == ADMIN:
        result = client.simulate_request(method, path, headers=SCORING, params={"model_id": IRIS}, json={})
        assert assert_error(result, 403, "forbidden")["required_scope"] == ADMIN


def test_refused_callers_change_nothing(secured, data_dir, tmp_path):
    client = secured()
    before = store_listing(data_dir / "store")
    for headers in ({}, SCORING):
        assert upload(client, helper_artifact(tmp_path / "a.zip", 1), headers).status_code in (401, 403)
        assert client.simulate_post(f"/api/v1/loadmodel/{IRIS}", headers=headers).status_code in (401, 403)
        assert client.simulate_post(f"/api/v1/promotemodel/{IRIS}", json={"env": "prod"},
                                    headers=headers).status_code in (401, 403)
        assert client.simulate_delete(f"/api/v1/removemodel/{IRIS}", headers=headers).status_code in (401, 403)
    assert store_listing(data_dir / "store") == before
    assert client.simulate_get(f"/api/v1/getmodelinfo/{IRIS}", headers=SCORING).json["env"] == "dev"


def test_a_scoring_key_scores_and_an_admin_key_does_everything(secured, tmp_path):
    client = secured()
    assert client.simulate_post(f"/api/v1/loadmodel/{IRIS}", headers=ADMINISTRATION).status_code == 200
    scored = client.simulate_post("/api/v1/score/", params={"model_id": IRIS}, json=[SETOSA], headers=SCORING)
    assert scored.status_code == 200 and scored.json["prediction"] == [0]
    assert client.simulate_post("/api/v1/score/", params={"model_id": IRIS}, json=[SETOSA],
                                headers=ADMINISTRATION).status_code == 200
    info = client.simulate_get("/api/v1/serverinfo/", headers=SCORING).json
    assert info["auth"] == {"mode": "bearer", "caller": "scoring", "scopes": [SCORE]}
    assert SCORING_KEY not in json.dumps(info) and ADMIN_KEY not in json.dumps(info)


def test_serverinfo_shows_the_installation_to_admin_keys_only(secured):
    client = secured()
    scoring = client.simulate_get("/api/v1/serverinfo/", headers=SCORING).json["runtime"]
    assert set(scoring) == {"slug", "python", "env_compat"}  # no install prefix, no exact library versions
    admin = client.simulate_get("/api/v1/serverinfo/", headers=ADMINISTRATION).json["runtime"]
    assert admin["prefix"] == sys.prefix and admin["libraries"]["numpy"] == np.__version__
    assert {k: admin[k] for k in scoring} == scoring


def test_health_and_docs_stay_open(secured):
    client = secured()
    for path in ("/api/v1/healthcheck", "/api/v1/health/live", "/api/v1/openapi.json", "/docs",
                 "/docs/assets/swagger-ui-bundle.js"):
        assert client.simulate_get(path).status_code == 200, path


# -- uploads never promote ---------------------------------------------------------------------

def test_an_upload_cannot_claim_a_gated_env_and_an_admin_promotes_it(secured, data_dir, tmp_path):
    client = secured(MIS_ENV="prod")
    before = store_listing(data_dir / "store")
    refused = upload(client, helper_artifact(tmp_path / "a.zip", 7), ADMINISTRATION, env="prod")
    assert assert_error(refused, 403, "upload_env_refused")["allowed"] == []
    assert "promotemodel" in refused.json["error"]
    assert store_listing(data_dir / "store") == before

    created = upload(client, helper_artifact(tmp_path / "a.zip", 7), ADMINISTRATION)
    assert created.status_code == 201 and created.json["env"] is None
    model_id = created.json["model_id"]

    def score(headers=SCORING):
        return client.simulate_post("/api/v1/score/", params={"model_id": model_id}, json=[[1]], headers=headers)

    assert_error(score(), 403, "env_mismatch")
    assert client.simulate_post(f"/api/v1/promotemodel/{model_id}", json={"env": "prod"},
                                headers=SCORING).status_code == 403
    promoted = client.simulate_post(f"/api/v1/promotemodel/{model_id}", json={"env": "prod"}, headers=ADMINISTRATION)
    assert promoted.json == {"model_id": model_id, "env": "prod", "status": "promoted"}
    assert score().json["prediction"] == [7]
    assert client.simulate_get(f"/api/v1/getmodelinfo/{model_id}", headers=SCORING).json["env"] == "prod"
    withdrawn = client.simulate_post(f"/api/v1/promotemodel/{model_id}", json={"env": None}, headers=ADMINISTRATION)
    assert withdrawn.json["status"] == "withdrawn"
    assert_error(score(), 403, "env_mismatch")


def test_an_operator_may_let_uploads_claim_chosen_envs(secured, tmp_path):
    client = secured(MIS_ENV="dev", MIS_UPLOAD_ENVS="dev")
    created = upload(client, helper_artifact(tmp_path / "a.zip", 3), ADMINISTRATION, env="dev")
    assert created.status_code == 201 and created.json["env"] == "dev"
    assert_error(upload(client, helper_artifact(tmp_path / "a.zip", 3), ADMINISTRATION, env="prod"),
                 403, "upload_env_refused")


def test_promoting_a_catalog_model_writes_the_catalog(secured, data_dir):
    client = secured(MIS_ENV="qa")
    client.simulate_post(f"/api/v1/loadmodel/{IRIS}", headers=ADMINISTRATION)
    assert_error(client.simulate_post("/api/v1/score/", params={"model_id": IRIS}, json=[SETOSA], headers=SCORING),
                 403, "env_mismatch")
    client.simulate_post(f"/api/v1/promotemodel/{IRIS}", json={"env": "qa"}, headers=ADMINISTRATION)
    assert client.simulate_post("/api/v1/score/", params={"model_id": IRIS}, json=[SETOSA],
                                headers=SCORING).status_code == 200
    metadata = json.loads((data_dir / "catalog" / IRIS / "metadata.json").read_text())
    assert {"key": "env", "value": "qa", "category": "Other"} in metadata["custom_metadata"]


@pytest.mark.parametrize("body", [{}, {"env": ""}, {"env": 3}, {"env": "a b"}, {"env": "x" * 65}, ["qa"], "qa"])
def test_a_promotion_names_an_env_or_null(secured, body):
    result = secured().simulate_post(f"/api/v1/promotemodel/{IRIS}", json=body, headers=ADMINISTRATION)
    assert "env" in assert_error(result, 400, "bad_request")["error"]


def test_promoting_an_unknown_model_is_404(secured):
    result = secured().simulate_post("/api/v1/promotemodel/nope", json={"env": "qa"}, headers=ADMINISTRATION)
    assert_error(result, 404, "model_not_found")


# -- logs --------------------------------------------------------------------------------------

def test_one_access_line_per_request_and_an_audit_line_per_state_change(secured, tmp_path, caplog):
    client = secured()
    with caplog.at_level(logging.INFO):
        client.simulate_post(f"/api/v1/loadmodel/{IRIS}", headers=SCORING)  # denied
        client.simulate_post(f"/api/v1/loadmodel/{IRIS}", headers={**ADMINISTRATION, "X-Request-ID": "ticket-42"})
        model_id = upload(client, helper_artifact(tmp_path / "a.zip", 1), ADMINISTRATION).json["model_id"]
        client.simulate_post(f"/api/v1/promotemodel/{model_id}", json={"env": "dev"}, headers=ADMINISTRATION)
        client.simulate_post("/api/v1/score/", params={"model_id": IRIS}, json=[SETOSA], headers=SCORING)
        client.simulate_delete(f"/api/v1/removemodel/{model_id}", headers=ADMINISTRATION)
        client.simulate_delete(f"/api/v1/removemodel/{model_id}", headers=ADMINISTRATION)  # gone: fails
    access = access_lines(caplog, "access")
    assert [(a["method"], a["status"], a["key"], a["model"]) for a in access] == [
        ("POST", 403, "scoring", IRIS), ("POST", 200, "ops", IRIS), ("POST", 201, "ops", model_id),
        ("POST", 200, "ops", model_id), ("POST", 200, "scoring", IRIS), ("DELETE", 200, "ops", model_id),
        ("DELETE", 404, "ops", model_id),
    ]
    assert access[1]["request_id"] == "ticket-42" and access[1]["path"] == f"/api/v1/loadmodel/{IRIS}"
    assert all(a["latency_ms"] >= 0 and a["client"] and a["time"].endswith("Z") for a in access)
    audit = access_lines(caplog, "audit")
    assert [(a["action"], a["key"], a["model"], a["result"]) for a in audit] == [
        ("load", "scoring", IRIS, "denied"), ("load", "ops", IRIS, "ok"), ("upload", "ops", model_id, "ok"),
        ("promote", "ops", model_id, "ok"), ("remove", "ops", model_id, "ok"), ("remove", "ops", model_id, "failed"),
    ]
    assert audit[1]["request_id"] == "ticket-42"
    assert SCORING_KEY not in caplog.text and ADMIN_KEY not in caplog.text


def test_request_ids_are_echoed_when_sane_and_made_up_otherwise(client):
    assert client.simulate_get("/api/v1/healthcheck", headers={"X-Request-ID": "abc-1"}).headers["x-request-id"] == "abc-1"
    for hostile in ("", "a" * 129, "evil\"}{", "two words"):
        given = client.simulate_get("/api/v1/healthcheck", headers={"X-Request-ID": hostile}).headers["x-request-id"]
        assert given != hostile and len(given) == 32


# -- error detail ------------------------------------------------------------------------------

@pytest.mark.parametrize("policy, scoring_sees, admin_sees", [
    ("admin", False, True), ("all", True, True), ("none", False, False),
])
def test_a_models_own_words_reach_only_whom_the_policy_allows(secured, tmp_path, caplog, policy, scoring_sees,
                                                              admin_sees):
    client = secured(MIS_ERROR_DETAIL=policy)
    model_id = upload(client, score_artifact(tmp_path / "a.zip", SCORE_PREDICT_FAILS), ADMINISTRATION).json["model_id"]
    for headers, sees in ((SCORING, scoring_sees), (ADMINISTRATION, admin_sees)):
        with caplog.at_level(logging.WARNING):
            result = client.simulate_post("/api/v1/score/", params={"model_id": model_id}, json=[[1]], headers=headers)
        body = assert_error(result, 422, "model_predict_failed")
        assert "ZeroDivisionError" in body["error"]  # the class helps every caller
        assert ("the model divides by zero" in json.dumps(body)) == sees
        logged = [r.getMessage() for r in caplog.records if r.name == "server.app"]
        assert f"request {result.headers['x-request-id']}: " in logged[-1]
        assert "the model divides by zero" in logged[-1]  # the log always has it


def test_a_callers_denial_from_the_head_alone_is_audited(secured, caplog):
    """The worker asks the app, from the head alone, whether this caller may call the route (see
    the gunicorn tests for the real socket); the app's answer is logged like any other."""
    app = secured().app
    with caplog.at_level(logging.INFO), pytest.raises(Exception) as caught:
        app.admit("//api/v1/uploadmodel/", method="POST", authorization=f"Bearer {SCORING_KEY}",
                  request_id="up-1", client="127.0.0.1")
    assert caught.value.status == 403
    audit = access_lines(caplog, "audit")
    assert [(a["action"], a["key"], a["result"], a["request_id"]) for a in audit] == [
        ("upload", "scoring", "denied", "up-1")]
    with pytest.raises(Exception):
        app.admit("/api/v1/score", authorization=None)  # every scoped route, not only uploads
    assert app.admit("/api/v1/healthcheck/", authorization=None).caller is None
    admitted = app.admit("/api/v1/uploadmodel", authorization=f"Bearer {ADMIN_KEY}")
    assert (admitted.body_limit, admitted.caller.name, admitted.audit) == (int(SETTINGS["MIS_MAX_UPLOAD_BYTES"].default),
                                                                            "ops", "upload")
    assert app.admit("/api/v1/score", authorization=f"Bearer {SCORING_KEY}").body_limit == app.max_body_bytes


def test_resources_declare_scopes_from_the_auth_module():
    assert {v1.Score.scope, v1.UploadModel.scope} == {SCORE, ADMIN}
