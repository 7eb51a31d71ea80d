"""Every /api/v1 operation through Falcon's TestClient: success paths and each failure's 4xx JSON."""

import base64
import http.server
import io
import json
import logging
import threading

import numpy as np
import pandas as pd
import pytest
from falcon import testing

from server.backends import local_store as store_module
from server.demo import DEMO_MODEL_IDS, DEMO_MODELS

from ...processes import wait_until
from ..backends.test_local_store import Clock
from ..frameworks.bodies import DATAFRAME, NDARRAY, SERIES, npy
from ..zips import HOSTILE_KINDS, LONG_NAME, SCORE_LOAD_FAILS, SCORE_SLOW, helper_artifact, hostile_zips, score_artifact

IRIS = "demo-sklearn-iris"
SETOSA = [5.1, 3.5, 1.4, 0.2]


def upload(client, archive, **fields):
    """POST a multipart upload form; `file` may be given as bytes or a path."""
    body, content_type = multipart({"model_name": "uploaded", **fields}, archive)
    return client.simulate_post("/api/v1/uploadmodel/", body=body, headers={"Content-Type": content_type})


def multipart(fields: dict, archive) -> tuple[bytes, str]:
    boundary = "mis-test-boundary"
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    if archive is not None:
        data = archive if isinstance(archive, bytes) else archive.read_bytes()
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n'
                  "Content-Type: application/zip\r\n\r\n".encode() + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def assert_error(result, status: int, code: str):
    assert result.status_code == status, result.text
    assert result.headers["content-type"].startswith("application/json")
    assert result.json["code"] == code and result.json["error"]
    assert "Traceback" not in result.text
    return result.json


def store_listing(store):
    return sorted(str(p.relative_to(store)) for p in store.rglob("*"))


# -- listing and metadata ------------------------------------------------------------------

def test_listmodels(client):
    body = client.simulate_get("/api/v1/listmodels/").json
    assert body["count"] == 3 and body["next_page"] is None
    assert {m["id"] for m in body["models"]} == {IRIS, "demo-xgboost-breast-cancer", "demo-lightgbm-wine"}
    assert {m["framework"] for m in body["models"]} == {"scikit-learn", "xgboost", "lightgbm"}
    assert all(m["env"] == "dev" and m["loaded"] is False for m in body["models"])


def test_listmodels_pages_with_a_token(client):
    first = client.simulate_get("/api/v1/listmodels/", params={"no_of_models": 2})
    assert first.json["count"] == 2 and first.headers["opc-next-page"] == first.json["next_page"]
    rest = client.simulate_get("/api/v1/listmodels/", params={"no_of_models": 2, "page": first.json["next_page"]})
    assert rest.json["count"] == 1 and rest.json["next_page"] is None
    filtered = client.simulate_get("/api/v1/listmodels/", params={"compartment_id": "local", "project_id": "local"})
    assert filtered.json["count"] == 3
    assert client.simulate_get("/api/v1/listmodels/", params={"compartment_id": "elsewhere"}).json["count"] == 0


def page_token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize("params, code", [
    ({"no_of_models": 0}, "bad_request"), ({"no_of_models": "many"}, "bad_request"),
    ({"no_of_models": 5000}, "bad_request"), ({"page": "not-a-token"}, "invalid_page"),
    ({"page": page_token("[" * 100_000)}, "invalid_page"),  # past the length cap
    ({"page": page_token("[" * 2000)}, "invalid_page"),  # within it: json.loads would recurse too deep
    ({"page": page_token('["catalog", ' + "[" * 2000 + "]")}, "invalid_page"),
    ({"page": page_token('["upload", 5]')}, "invalid_page"), ({"page": page_token('["other", null]')}, "invalid_page"),
    ({"page": page_token('["catalog", ["x"]]')}, "invalid_page"), ({"page": page_token('{"upload": null}')}, "invalid_page"),
    ({"page": page_token('["catalog", "a", "b"]')}, "invalid_page"), ({"page": page_token('["catalog", "\\x"]')}, "invalid_page"),
    ({"page": base64.urlsafe_b64encode(b'["catalog", "\xff"]').decode()}, "invalid_page"),
])
def test_listmodels_rejects_bad_queries(client, params, code):
    assert_error(client.simulate_get("/api/v1/listmodels/", params=params), 400, code)



def test_getmodelinfo(client):
    info = client.simulate_get(f"/api/v1/getmodelinfo/{IRIS}").json
    assert (info["id"], info["framework"], info["lifecycle_state"], info["env"]) == (IRIS, "scikit-learn", "ACTIVE", "dev")
    assert {"key": "env", "value": "dev", "category": "Other"} in info["custom_metadata"]
    assert any(item["key"] == "Framework" for item in info["taxonomy_metadata"])
    assert len(info["input_schema"]["schema"]) == 4 and info["output_schema"] is not None
    assert "artifact" not in info


def test_getmodelinfo_failures(client):
    assert_error(client.simulate_get("/api/v1/getmodelinfo/missing-model"), 404, "model_not_found")
    assert_error(client.simulate_get("/api/v1/getmodelinfo/bad..id"), 400, "invalid_model_id")


# A path segment reaches the responders decoded: `%2e%2e` arrives as `..`, `%5C` as a backslash. An
# encoded slash does not: the WSGI server (and the TestClient) decodes `..%2F..%2Fetc` into PATH_INFO,
# so that path has more segments than any route and Falcon answers 404 before a responder runs.
@pytest.mark.parametrize("segment, model_id", [("..", ".."), ("%2e%2e", ".."),
                                               ("..%5C..%5Cetc%5Cpasswd", "..\\..\\etc\\passwd")])
@pytest.mark.parametrize("method, operation", [("GET", "getmodelinfo"), ("POST", "loadmodel"),
                                               ("DELETE", "removemodel")])
def test_path_traversal_ids_reach_the_responder_and_are_refused(client, method, operation, segment, model_id):
    result = client.simulate_request(method, f"/api/v1/{operation}/{segment}")
    assert assert_error(result, 400, "invalid_model_id")["model_id"] == model_id  # what the responder got


def test_path_traversal_in_the_score_query_is_refused(iris_client):
    result = iris_client.simulate_post("/api/v1/score/", params={"model_id": "../../etc/passwd"}, json=[SETOSA])
    assert assert_error(result, 400, "invalid_model_id")["model_id"] == "../../etc/passwd"
    assert_error(iris_client.simulate_get("/api/v1/getmodelinfo/..%2F..%2Fetc%2Fpasswd"), 404, "not_found")


# -- load, score, remove -------------------------------------------------------------------

def test_load_score_remove(client):
    loaded = client.simulate_post(f"/api/v1/loadmodel/{IRIS}")
    assert loaded.status_code == 200 and loaded.json["status"] == "loaded" and loaded.json["load_ms"] > 0
    assert client.simulate_post(f"/api/v1/loadmodel/{IRIS}").json["status"] == "already_loaded"
    scored = client.simulate_post("/api/v1/score/", params={"model_id": IRIS}, json=[SETOSA, [6.7, 3.0, 5.2, 2.3]])
    assert scored.status_code == 200
    assert scored.json["prediction"] == [0, 2] and scored.json["model_version"] == "1"
    one_row = client.simulate_post("/api/v1/score/", params={"model_id": IRIS}, json=SETOSA)
    assert one_row.json["prediction"] == [0]
    assert 0 < scored.json["timing"]["predict_ms"] <= scored.json["timing"]["total_ms"]
    assert client.simulate_delete(f"/api/v1/removemodel/{IRIS}").json == {"model_id": IRIS, "status": "removed"}
    assert_error(client.simulate_post("/api/v1/score/", params={"model_id": IRIS}, json=[SETOSA]), 404, "model_not_loaded")
    assert_error(client.simulate_delete(f"/api/v1/removemodel/{IRIS}"), 404, "model_not_loaded")


def test_load_failures(client):
    assert_error(client.simulate_post("/api/v1/loadmodel/missing-model"), 404, "model_not_found")
    assert_error(client.simulate_post("/api/v1/loadmodel/.hidden"), 400, "invalid_model_id")
    assert_error(client.simulate_get(f"/api/v1/loadmodel/{IRIS}"), 405, "method_not_allowed")


@pytest.fixture
def iris_client(client):
    client.simulate_post(f"/api/v1/loadmodel/{IRIS}")
    return client


@pytest.mark.parametrize("kwargs, status, code", [
    ({"body": "{not json"}, 400, "bad_request"),
    ({"body": ""}, 400, "bad_request"),
    ({"body": "[" * 100_000 + "]" * 100_000}, 400, "bad_request"),
    ({"json": [[1, 2, 3]]}, 422, "invalid_input"),
    ({"json": [[1, 2, 3, 4, 5]]}, 422, "invalid_input"),
    ({"json": [[None, 3.5, 1.4, 0.2]]}, 422, "model_predict_failed"),  # LogisticRegression takes no NaN
    ({"body": "[1,2,3,4]", "headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type"),
])
def test_score_rejects_bad_input(iris_client, kwargs, status, code):
    result = iris_client.simulate_post("/api/v1/score/", params={"model_id": IRIS}, **kwargs)
    body = assert_error(result, status, code)
    if code == "invalid_input":
        assert body["expected"] == 4
    assert iris_client.simulate_post("/api/v1/score/", params={"model_id": IRIS}, json=[SETOSA]).json["prediction"] == [0]


def test_score_needs_a_model_id(iris_client):
    assert_error(iris_client.simulate_post("/api/v1/score/", json=[SETOSA]), 400, "bad_request")
    assert_error(iris_client.simulate_post("/api/v1/score/", params={"model_id": "nope"}, json=[SETOSA]), 404,
                 "model_not_found")


def test_score_body_over_the_limit_is_413(make_client):
    client = make_client(MIS_MAX_BODY_BYTES="64")
    client.simulate_post(f"/api/v1/loadmodel/{IRIS}")
    assert_error(client.simulate_post("/api/v1/score/", params={"model_id": IRIS}, json=[SETOSA] * 10), 413,
                 "payload_too_large")
    assert client.simulate_post("/api/v1/score/", params={"model_id": IRIS}, json=[SETOSA]).status_code == 200


def test_env_gating_answers_403_naming_both_envs(make_client):
    client = make_client(MIS_ENV="prod")
    client.simulate_post(f"/api/v1/loadmodel/{IRIS}")
    body = assert_error(client.simulate_post("/api/v1/score/", params={"model_id": IRIS}, json=[SETOSA]), 403,
                        "env_mismatch")
    assert (body["server_env"], body["model_env"]) == ("prod", "dev")
    assert "'prod'" in body["error"] and "'dev'" in body["error"]
    info = client.simulate_get("/api/v1/serverinfo/").json
    assert info["environment"] == "prod" and info["env_gating"] is True

# -- every scoring body form, end to end on the demo ADS artifacts -----------------------------

def score(client, model_id, payload=None, **kwargs):
    """POST `payload` as JSON, or the raw text given as `body=`."""
    return client.simulate_post("/api/v1/score/", params={"model_id": model_id}, json=payload, **kwargs)


def positional_forms(rows) -> dict:
    """The forms of ADS's score.py that carry rows without column names."""
    return {
        "rows": rows.tolist(),
        '{"data": rows}': {"data": rows.tolist()},
        "ADS list": {"data": rows.tolist(), "data_type": "<class 'list'>"},
        "ADS numpy": {"data": npy(rows), "data_type": NDARRAY},
        "ADS DataFrame of rows": {"data": json.dumps(rows.tolist()), "data_type": DATAFRAME},
    }


def named_forms(rows, names) -> dict:
    """The forms that name their columns; those in reverse order must score the same."""
    frame = pd.DataFrame(rows, columns=names)
    return {
        "columns": frame.to_dict(orient="list"),
        "columns, reversed": frame[names[::-1]].to_dict(orient="list"),
        '{"data": columns}': {"data": frame.to_dict(orient="list")},
        "ADS DataFrame": {"data": frame.to_json(), "data_type": DATAFRAME},
        "ADS DataFrame, reversed": {"data": frame[names[::-1]].to_json(), "data_type": DATAFRAME},
        "DataFrame JSON text": frame.to_json(),
        "ADS DataFrame records": {"data": frame.to_json(orient="records"), "data_type": DATAFRAME},
    }


@pytest.fixture
def demo_client(client):
    for model_id in DEMO_MODEL_IDS:
        client.simulate_post(f"/api/v1/loadmodel/{model_id}")
    return client


@pytest.mark.parametrize("demo", DEMO_MODELS, ids=lambda demo: demo.id)
def test_every_ads_body_form_scores_the_demo_artifacts(demo_client, demo):
    rows = demo.load_data()[0][::40]
    expected = score(demo_client, demo.id, rows.tolist()).json["prediction"]
    assert len(expected) == len(rows)
    assert score(demo_client, demo.id, rows[0].tolist()).json["prediction"] == expected[:1]  # one row
    for form, body in {**positional_forms(rows), **named_forms(rows, demo.feature_names())}.items():
        result = score(demo_client, demo.id, body)
        assert result.status_code == 200 and result.json["prediction"] == expected, (form, result.text)


def test_a_wrong_width_or_wrong_columns_is_422_in_every_body_form(demo_client):
    demo = next(d for d in DEMO_MODELS if d.id == "demo-xgboost-breast-cancer")  # 30 features
    rows, names = demo.load_data()[0][:2, :29], demo.feature_names()
    for form, body in positional_forms(rows).items():
        error = assert_error(score(demo_client, demo.id, body), 422, "invalid_input")
        assert (error["expected"], error["received"]) == (30, 29), form
    for form, body in named_forms(rows, names[:29]).items():
        error = assert_error(score(demo_client, demo.id, body), 422, "invalid_input")
        assert (error["missing"], error["unexpected"]) == ([names[29]], []), form
    error = assert_error(score(demo_client, demo.id, {"a": [1.0]}), 422, "invalid_input")
    assert (error["missing"], error["unexpected"]) == (names, ["a"])


@pytest.mark.parametrize("body, message", [
    ({"data": list(range(30)), "data_type": SERIES}, "a pandas Series is one-dimensional"),
    ({"data": npy(np.ones(30)), "data_type": NDARRAY}, "the numpy array has shape [30]"),
    ({"data": "rows"}, "not JSON text"),
    ({"data": "/etc/hostname", "data_type": DATAFRAME}, "not JSON text"),
    ({"a": 1.0}, "cannot be read as a table"),
    ([[1.0] * 30, [1.0] * 29], "rows must be lists of values, all of the same length"),
])
def test_a_body_the_server_cannot_read_as_rows_is_422(demo_client, body, message):
    error = assert_error(score(demo_client, "demo-xgboost-breast-cancer", body), 422, "invalid_input")
    assert message in error["error"]


def test_null_and_nan_are_missing_values_and_infinity_is_refused(demo_client):
    cancer = "demo-xgboost-breast-cancer"
    row = [float(v) for v in next(d for d in DEMO_MODELS if d.id == cancer).load_data()[0][0]]
    with_null = score(demo_client, cancer, [[None] * 10 + row[10:]])
    with_nan = score(demo_client, cancer, body=json.dumps([[float("nan")] * 10 + row[10:]]))  # the token NaN
    assert with_null.status_code == with_nan.status_code == 200
    assert with_null.json["prediction"] == with_nan.json["prediction"]
    assert with_null.json["prediction"] != score(demo_client, cancer, [row]).json["prediction"]  # NaN is not 0
    refused = assert_error(score(demo_client, IRIS, [[None, 3.5, 1.4, 0.2]]), 422, "model_predict_failed")
    assert "Input X contains NaN" in refused["detail"]  # the model's own words: the demo's caller is admin
    for model_id, width in [(IRIS, 4), (cancer, 30)]:
        for infinity in ("Infinity", "-Infinity", "1e999"):
            body = "[[" + ", ".join([infinity] + ["1.0"] * (width - 1)) + "]]"
            error = assert_error(score(demo_client, model_id, body=body), 422, "invalid_input")
            assert "non-finite values (Infinity)" in error["error"]


# -- upload --------------------------------------------------------------------------------

def test_upload_then_score(client, tmp_path):
    result = upload(client, helper_artifact(tmp_path / "a.zip", 9), env="dev", version="3")
    assert result.status_code == 201
    model_id = result.json["model_id"]
    assert result.json == {"model_id": model_id, "model_name": "uploaded", "version": "3", "env": "dev",
                           "status": "loaded"}
    assert result.headers["location"] == f"/api/v1/getmodelinfo/{model_id}"
    assert client.simulate_post("/api/v1/score/", params={"model_id": model_id}, json=[[0]]).json["prediction"] == [9]
    info = client.simulate_get(f"/api/v1/getmodelinfo/{model_id}").json
    assert (info["source"], info["env"], info["loaded"]) == ("upload", "dev", True)

NON_FINITE_SCORE = """
import numpy as np

def load_model():
    return None

def predict(data, model=None):
    return {"prediction": [float("nan"), np.float64("inf"), np.array([-np.inf, 0.5])]}
"""


def test_a_prediction_of_nan_or_infinity_answers_null(client, tmp_path):
    model_id = upload(client, score_artifact(tmp_path / "a.zip", NON_FINITE_SCORE)).json["model_id"]
    result = client.simulate_post("/api/v1/score/", params={"model_id": model_id}, json=[[1.0]])
    assert result.status_code == 200

    def bare_constant(name):
        raise AssertionError(f"the response holds a bare {name}, which is not JSON")

    assert json.loads(result.text, parse_constant=bare_constant)["prediction"] == [None, None, [None, 0.5]]


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_hostile_uploads_are_refused_and_store_nothing(make_client, make_config, tmp_path, kind):
    client = make_client(MIS_MAX_ARTIFACT_BYTES=str(1024 * 1024))
    store = make_config().store_dir
    before = store_listing(store)
    result = upload(client, hostile_zips(tmp_path / "zips")[kind])
    assert result.status_code in (400, 413), result.text
    assert result.json["code"] in ("invalid_artifact", "payload_too_large")
    assert store_listing(store) == before
    assert client.simulate_get("/api/v1/listmodels/").json["count"] == 3


def test_an_upload_with_an_unwritable_member_name_is_refused_naming_it(client, make_config, tmp_path):
    store = make_config().store_dir
    before = store_listing(store)
    body = assert_error(upload(client, hostile_zips(tmp_path / "zips")["name too long"]), 400, "invalid_artifact")
    assert body["member"] == LONG_NAME[:80] + "..." and "longer than the file system allows" in body["error"]
    assert store_listing(store) == before


def test_upload_form_failures(make_client, make_config, tmp_path):
    client = make_client(MIS_MAX_UPLOAD_BYTES="4096")
    store = make_config().store_dir
    archive = helper_artifact(tmp_path / "a.zip", 1)
    assert_error(upload(client, None), 400, "bad_request")
    assert_error(upload(client, archive, model_name="x" * 256), 400, "bad_request")
    assert_error(upload(client, archive, env="dev\x00"), 400, "bad_request")
    body, content_type = multipart({}, archive)
    assert_error(client.simulate_post("/api/v1/uploadmodel/", body=body, headers={"Content-Type": content_type}),
                 400, "bad_request")
    assert_error(upload(client, archive.read_bytes() + bytes(8000)),
                 413, "payload_too_large")
    assert_error(client.simulate_post("/api/v1/uploadmodel/", json={"file": "x"}), 415, "unsupported_media_type")
    result = client.simulate_post("/api/v1/uploadmodel/", body=b"--x\r\ngarbage",
                                  headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert 400 <= result.status_code < 500 and "error" in result.json
    assert_error(upload(client, score_artifact(tmp_path / "b.zip", SCORE_LOAD_FAILS)), 422, "model_load_failed")
    assert list((store / "uploads").iterdir()) == [] and list((store / "artifacts").iterdir()) == []


# -- server info and health ----------------------------------------------------------------

def test_serverinfo_reports_models_and_no_secrets(iris_client):
    iris_client.simulate_post("/api/v1/score/", params={"model_id": IRIS}, json=[SETOSA])
    info = iris_client.simulate_get("/api/v1/serverinfo/").json
    assert info["environment"] is None and info["env_gating"] is False and info["catalog"] == "local"
    assert info["workers"] >= 1 and info["worker_pid"] > 0
    [model] = info["models"]
    assert (model["model_id"], model["requests"], model["errors"]) == (IRIS, 1, 0)
    text = str(info).lower()
    assert "key" not in text and "tenancy" not in text and "secret" not in text


def test_health_endpoints(client):
    assert client.simulate_get("/api/v1/healthcheck/").json == {"status": "ok"}
    assert client.simulate_get("/api/v1/health/live").json == {"status": "alive"}
    assert client.simulate_get("/api/v1/health/ready").json == {"status": "ready"}


def test_readiness_waits_for_configured_models(make_config):
    from server.app import build_registry, create_app
    from server.warmup import Warmup

    config = make_config(MIS_PRELOAD=f"{IRIS},missing-model")
    registry = build_registry(config)
    warmup = Warmup(registry, config.preload)
    client = testing.TestClient(create_app(config, registry, warmup))
    not_started = client.simulate_get("/api/v1/health/ready")
    assert not_started.status_code == 503 and not_started.json["status"] == "loading"
    warmup.run()
    failed = client.simulate_get("/api/v1/health/ready")
    assert failed.status_code == 503 and list(failed.json["failed"]) == ["missing-model"]
    assert client.simulate_get("/api/v1/health/live").status_code == 200
    assert IRIS in registry.loaded_ids()


def test_unknown_route_is_a_json_404(client):
    assert_error(client.simulate_get("/api/v2/whatever"), 404, "not_found")

def test_an_unexpected_error_is_a_500_that_keeps_its_details_in_the_log(make_config, monkeypatch, caplog):
    from server.app import build_registry, create_app
    from server.warmup import Warmup

    config = make_config()
    registry = build_registry(config)

    def broken(*args, **kwargs):
        raise RuntimeError("secret /etc/path detail")

    monkeypatch.setattr(registry, "list_models", broken)
    client = testing.TestClient(create_app(config, registry, Warmup(registry, config.preload)))
    with caplog.at_level(logging.ERROR):
        result = client.simulate_get("/api/v1/listmodels/")
    assert result.status_code == 500 and set(result.json) == {"error", "code"}
    assert result.json["code"] == "internal_error"
    for detail in ("secret", "/etc/path", "RuntimeError", "Traceback"):
        assert detail not in result.text
    assert "RuntimeError: secret /etc/path detail" in caplog.text and "Traceback" in caplog.text


def test_every_route_is_documented(client):
    from server.openapi import openapi_document

    documented = {path.rstrip("/") for path in openapi_document("x")["paths"]}
    routes = set()
    for node in client.app._router._roots:
        stack = [node]
        while stack:
            current = stack.pop()
            if current.resource is not None:
                routes.add(current.uri_template.rstrip("/"))
            stack.extend(current.children)
    assert {r for r in routes if r.startswith("/api/")} == {d for d in documented if d.startswith("/api/")}


SCORE_READS_JSON = """
import pandas as pd

def load_model():
    return None

def predict(data, model=None):
    payload = data.get("data", data) if isinstance(data, dict) else data
    frame = pd.read_json(payload) if isinstance(payload, str) else pd.DataFrame(payload)
    return {"prediction": frame.to_numpy().tolist()}
"""


def test_a_body_naming_a_file_or_url_never_reaches_read_json(client, tmp_path):
    """A schema-less artifact whose score.py does what ADS's does with a string: pd.read_json."""
    secret = tmp_path / "secret.json"
    secret.write_text('[["a file of the server"]]')
    hits = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the base class's name
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'[["fetched"]]')

        def log_message(self, *args):
            pass

    internal = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=internal.serve_forever, daemon=True).start()
    try:
        model_id = upload(client, score_artifact(tmp_path / "a.zip", SCORE_READS_JSON)).json["model_id"]
        url = f"http://127.0.0.1:{internal.server_port}/opc/v2/instance/"
        for data in (str(secret), f"file://{secret}", url):
            for body in (data, {"data": data}):
                result = client.simulate_post("/api/v1/score/", params={"model_id": model_id}, json=body)
                assert "file or URL" in assert_error(result, 422, "invalid_input")["error"]
        assert hits == []
        # JSON text is still a table, as read_json reads it.
        result = client.simulate_post("/api/v1/score/", params={"model_id": model_id}, json={"data": '[[1, 2]]'})
        assert result.status_code == 200 and result.json["prediction"] == [[1, 2]]
    finally:
        internal.shutdown()
        internal.server_close()


SCORE_ANSWERS_A_SET = """
def load_model():
    return None

def predict(data, model=None):
    return {"prediction": {1, 2}}
"""


def test_a_prediction_that_is_no_json_is_the_models_failure_and_logged_as_answered(client, tmp_path, caplog):
    model_id = upload(client, score_artifact(tmp_path / "a.zip", SCORE_ANSWERS_A_SET)).json["model_id"]
    with caplog.at_level(logging.INFO):
        scored = client.simulate_post("/api/v1/score/", params={"model_id": model_id}, json=[[1]])
    assert "not JSON" in assert_error(scored, 422, "model_predict_failed")["error"]
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == "mis.access"]
    assert logged[-1]["status"] == 422


def test_a_model_loaded_again_for_a_request_says_so_in_its_timing(make_client):
    client = make_client(MIS_MAX_LOADED_MODELS="1")
    for model_id in (IRIS, "demo-lightgbm-wine"):
        assert client.simulate_post(f"/api/v1/loadmodel/{model_id}").status_code == 200
    first = client.simulate_post("/api/v1/score/", params={"model_id": IRIS}, json=[SETOSA]).json
    second = client.simulate_post("/api/v1/score/", params={"model_id": IRIS}, json=[SETOSA]).json
    assert first["timing"]["load_ms"] > 0 and "load_ms" not in second["timing"]
    memory = client.simulate_get("/api/v1/serverinfo/").json["memory"]
    assert memory == {"max_models": 1, "in_memory": 1, "unloaded_here": ["demo-lightgbm-wine"], "evictions": 2}


def test_an_upload_of_exactly_the_limit_is_taken_and_one_byte_more_is_413_and_stores_nothing(make_client, make_config,
                                                                                            tmp_path):
    archive = helper_artifact(tmp_path / "a.zip", 7)
    exact, content_type = multipart({"model_name": "sized"}, archive)
    over, _ = multipart({"model_name": "sized+"}, archive)
    assert len(over) == len(exact) + 1
    client = make_client(MIS_MAX_UPLOAD_BYTES=str(len(exact)))
    store = make_config().store_dir
    before = store_listing(store)
    error = assert_error(client.simulate_post("/api/v1/uploadmodel/", body=over, headers={"Content-Type": content_type}),
                         413, "payload_too_large")
    assert error["limit"] == len(exact)
    assert store_listing(store) == before
    taken = client.simulate_post("/api/v1/uploadmodel/", body=exact, headers={"Content-Type": content_type})
    assert taken.status_code == 201, taken.text
    assert client.simulate_post("/api/v1/score/", params={"model_id": taken.json["model_id"]},
                                json=[[0]]).json["prediction"] == [7]


def test_a_score_body_of_exactly_the_limit_is_taken_and_one_byte_more_is_413(make_client):
    body = json.dumps([SETOSA]).encode()
    client = make_client(MIS_MAX_BODY_BYTES=str(len(body) + 20))
    client.simulate_post(f"/api/v1/loadmodel/{IRIS}")
    exact = body + b" " * 20  # trailing whitespace: still the same JSON
    taken = client.simulate_post("/api/v1/score/", params={"model_id": IRIS}, body=exact,
                                 headers={"Content-Type": "application/json"})
    assert taken.status_code == 200 and taken.json["prediction"] == [0], taken.text
    refused = client.simulate_post("/api/v1/score/", params={"model_id": IRIS}, body=exact + b" ",
                                   headers={"Content-Type": "application/json"})
    assert assert_error(refused, 413, "payload_too_large")["limit"] == len(exact)


def test_predict_timeouts_quarantine_only_when_enough_fall_within_the_window(make_config, monkeypatch, tmp_path):
    """MIS_QUARANTINE_STRIKES=2 in MIS_QUARANTINE_WINDOW_S=60: two timeouts 61 s apart are one
    strike each, in separate windows; two within 60 s quarantine the model (503)."""
    from server.app import build_registry, create_app
    from server.warmup import Warmup

    config = make_config(MIS_PREDICT_TIMEOUT_S="0.5", MIS_QUARANTINE_STRIKES="2", MIS_QUARANTINE_WINDOW_S="60")
    registry = build_registry(config)
    client = testing.TestClient(create_app(config, registry, Warmup(registry, config.preload)))
    model_id = upload(client, score_artifact(tmp_path / "slow.zip", SCORE_SLOW)).json["model_id"]
    clock = Clock()
    monkeypatch.setattr(store_module, "time", clock)

    def times_out_and_strikes():
        before = registry.storage.quarantine.signature()
        result = client.simulate_post("/api/v1/score/", params={"model_id": model_id}, json=[[1.0]])
        assert assert_error(result, 504, "predict_timeout")["model_id"] == model_id
        wait_until(lambda: registry.storage.quarantine.signature() != before, timeout=30)  # the strike is written off the request's thread

    times_out_and_strikes()
    clock.advance(61)
    times_out_and_strikes()  # the first strike has aged out: one in the window
    times_out_and_strikes()  # the second within the window
    result = client.simulate_post("/api/v1/score/", params={"model_id": model_id}, json=[[1.0]])
    assert "(2 times in 60 s)" in assert_error(result, 503, "model_quarantined")["reason"]
