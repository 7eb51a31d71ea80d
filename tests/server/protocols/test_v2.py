"""The Open Inference Protocol (V2) in-process: tensors in and out, binary data, the repository
extension, and the same core, gating and keys as /api/v1."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from server.demo import DEMO_MODELS

from ..keys import keys_document, mount_keys, new_key
from .test_v1 import assert_error, upload
from ..zips import score_artifact

IRIS = "demo-sklearn-iris"
SETOSA, VIRGINICA = [5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]
SEVENS = """
def load_model():
    return None

def predict(data, model=None):
    return [7 for _ in data]
"""


@pytest.fixture
def loaded(client):
    for demo in DEMO_MODELS:
        assert client.simulate_post(f"/api/v1/loadmodel/{demo.id}").status_code == 200
    return client


def infer(client, name, body, version=None, **kwargs):
    """`body`: a request to send as JSON, or bytes as they are."""
    path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/infer"
    if isinstance(body, bytes):
        return client.simulate_post(path, body=body, headers={"Content-Type": "application/json", **kwargs.pop("headers", {})},
                                    **kwargs)
    return client.simulate_post(path, json=body, **kwargs)


def tensor(data, shape, datatype="FP64", name="input-0"):
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def v1_prediction(client, model_id, rows):
    return client.simulate_post("/api/v1/score", params={"model_id": model_id}, json=rows).json["prediction"]


def test_server_metadata_and_health(client):
    assert client.simulate_get("/v2").json["extensions"] == ["model_repository", "binary_tensor_data"]
    assert client.simulate_get("/v2/health/live").json == {"live": True}
    assert client.simulate_get("/v2/health/ready").json == {"ready": True}


@pytest.mark.parametrize("demo", DEMO_MODELS, ids=lambda d: d.id)
def test_every_framework_answers_as_v1_does_by_id_and_by_name(loaded, demo):
    X = demo.load_data()[0][:5]
    expected = v1_prediction(loaded, demo.id, X.tolist())
    metadata = loaded.simulate_get(f"/v2/models/{demo.id}").json
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, X.shape[1]]}]
    # ADS's XGBoost artifact loads a Booster, whose predict already is the positive class's probability
    with_proba = demo.framework != "xgboost"
    assert [o["name"] for o in metadata["outputs"]] == ["predict", "predict_proba"][:1 + with_proba]
    assert metadata["platform"] == demo.framework and metadata["versions"] == ["1"]
    for name in (demo.id, demo.name):
        flat = infer(loaded, name, {"inputs": [tensor(X.reshape(-1).tolist(), list(X.shape))]}).json
        nested = infer(loaded, name, {"inputs": [tensor(X.tolist(), list(X.shape), "FP32")]}).json
        assert flat["model_version"] == "1" and flat["parameters"]["model_id"] == demo.id
        # no `outputs` asked for: every output the metadata lists, as the protocol says
        assert [o["name"] for o in flat["outputs"]] == [o["name"] for o in metadata["outputs"]]
        output = flat["outputs"][0]
        assert output["name"] == "predict" and output["shape"] == [5]
        assert output["datatype"] == metadata["outputs"][0]["datatype"]  # the answer is what metadata declares
        assert np.allclose(output["data"], expected)
        assert np.allclose(nested["outputs"][0]["data"], expected, atol=1e-5)  # FP32 rounding


def test_a_classifier_gives_labels_and_probabilities_as_named_outputs(loaded):
    body = {"inputs": [tensor([SETOSA, VIRGINICA], [2, 4])], "outputs": [{"name": "predict_proba"}, {"name": "predict"}]}
    proba, labels = infer(loaded, IRIS, body).json["outputs"]
    assert labels == {"name": "predict", "datatype": "FP64", "shape": [2], "data": [0.0, 2.0]}
    assert proba["name"] == "predict_proba" and proba["shape"] == [2, 3]
    rows = np.asarray(proba["data"]).reshape(2, 3)
    assert np.allclose(rows.sum(axis=1), 1) and rows.argmax(axis=1).tolist() == [0, 2]


def test_one_tensor_per_feature_is_a_table_of_named_columns(loaded):
    names = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
    columns = [tensor([s, v], [2, 1] if i % 2 else [2], name=n) for i, (n, s, v) in enumerate(zip(names, SETOSA, VIRGINICA))]
    assert infer(loaded, IRIS, {"inputs": columns[::-1]}).json["outputs"][0]["data"] == [0, 2]
    assert_error(infer(loaded, IRIS, {"inputs": [*columns[:3], tensor([1.0, 2.0], [2], name="colour")]}), 422,
                 "invalid_input")


def binary_request(body: dict, arrays: list[bytes]) -> tuple[bytes, dict]:
    head = json.dumps(body).encode()
    return head + b"".join(arrays), {"Inference-Header-Content-Length": str(len(head)),
                                     "Content-Type": "application/octet-stream"}


def read_binary_answer(result) -> tuple[dict, bytes]:
    size = int(result.headers["inference-header-content-length"])
    return json.loads(result.content[:size]), result.content[size:]


def test_binary_tensor_data_in_and_out(loaded):
    rows = np.asarray([SETOSA, VIRGINICA], dtype="<f4")
    body = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
                        "parameters": {"binary_data_size": rows.nbytes}}],
            "outputs": [{"name": "predict", "parameters": {"binary_data": True}}, {"name": "predict_proba"}]}
    data, headers = binary_request(body, [rows.tobytes()])
    result = loaded.simulate_post(f"/v2/models/{IRIS}/infer", body=data, headers=headers)
    assert result.status_code == 200 and result.headers["content-type"] == "application/octet-stream"
    answer, tail = read_binary_answer(result)
    labels, proba = answer["outputs"]
    assert labels["parameters"]["binary_data_size"] == len(tail) == 16
    assert np.frombuffer(tail, dtype="<f8").tolist() == [0.0, 2.0]
    assert len(proba["data"]) == 6  # JSON, as asked


def bytes_elements(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def test_bytes_tensors_reach_a_model_as_text_in_json_and_binary(client, tmp_path):
    echo = score_artifact(tmp_path / "echo.zip", """
        def load_model():
            return None

        def predict(data, model=None):
            return {"prediction": [" ".join(str(v) for v in row) for row in data]}
        """)
    model_id = upload(client, echo, model_name="echo").json["model_id"]
    words = [["a", "b"], ["c", "é"]]
    as_json = infer(client, "echo", {"inputs": [tensor(words, [2, 2], "BYTES")]}).json["outputs"][0]
    assert as_json == {"name": "predict", "datatype": "BYTES", "shape": [2], "data": ["a b", "c é"]}
    element_bytes = bytes_elements(["a", "b", "c", "é"])
    body = {"inputs": [{"name": "input-0", "shape": [2, 2], "datatype": "BYTES",
                        "parameters": {"binary_data_size": len(element_bytes)}}],
            "parameters": {"binary_data_output": True}}
    data, headers = binary_request(body, [element_bytes])
    answer, tail = read_binary_answer(client.simulate_post(f"/v2/models/{model_id}/infer", body=data, headers=headers))
    assert answer["outputs"][0]["parameters"]["binary_data_size"] == len(tail)
    assert tail == bytes_elements(["a b", "c é"])


@pytest.mark.parametrize("body, headers, status, fragment", [
    ({"inputs": [tensor([1.0, 2.0, 3.0], [2, 2])]}, {}, 400, "shape holds 4 elements"),
    ({"inputs": [tensor([[1.0, 2.0], [3.0]], [2, 2])]}, {}, 400, "ragged"),
    ({"inputs": [tensor([1, 2, 3, 4], [1, 4], "FP128")]}, {}, 400, "datatype must be one of"),
    ({"inputs": [tensor([300, 2, 3, 4], [1, 4], "UINT8")]}, {}, 400, "out of UINT8's range"),
    ({"inputs": [tensor([1.5, 2, 3, 4], [1, 4], "INT32")]}, {}, 400, "does not fit datatype INT32"),
    ({"inputs": [tensor(["a", "b", "c", "d"], [1, 4], "FP64")]}, {}, 400, "does not fit datatype FP64"),
    ({"inputs": [tensor([1.0] * 4, [1, -4])]}, {}, 400, "non-negative"),
    ({"inputs": [tensor([], [10**9, 10**9])]}, {}, 400, "shape holds"),
    ({"inputs": []}, {}, 400, "non-empty list"),
    ({"inputs": [tensor(SETOSA, [1, 4])], "outputs": [{"name": "secrets"}]}, {}, 400, "not 'secrets'"),
    ({"inputs": [tensor(SETOSA[:3], [1, 3])]}, {}, 422, "expected 4 features"),
    ({"inputs": [tensor([SETOSA], [1, 1, 4])]}, {}, 422, "[rows, features]"),
    ({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "parameters": {"binary_data_size": 32}}]},
     {}, 400, "does not fit the binary data"),
    ({"inputs": [tensor(SETOSA, [1, 4])], "id": 7}, {}, 400, "`id` must be a string"),
    (json.dumps({"inputs": [tensor(SETOSA, [1, 4])], "id": "\ud800"}).encode(), {}, 400, "lone surrogate"),
    ({"inputs": [{**tensor(SETOSA, [1, 4]), "parameters": "x"}]}, {}, 400, "parameters must be an object"),
    ({"inputs": [tensor(SETOSA, [1, 4])], "parameters": [1]}, {}, 400, "parameters must be an object"),
    ({"inputs": [tensor(SETOSA, [1, 4])], "outputs": [{"name": "predict", "parameters": 5}]}, {}, 400,
     "parameters must be an object"),
    ({"inputs": [tensor(SETOSA, [1, 4])], "parameters": {"binary_data_output": "false"}}, {}, 400, "true or false"),
    ({"inputs": [tensor(SETOSA, [1, 4])], "outputs": [{"name": "predict"}, {"name": "predict"}]}, {}, 400, "twice"),
    ({"inputs": [tensor([], [2**63, 0])]}, {}, 400, "below 2**31"),
    ({"inputs": [tensor([1.0], [1] * 70)]}, {}, 400, "at most 8"),
    ({"inputs": [tensor(SETOSA, [1, 4])]}, {"Inference-Header-Content-Length": "\u00b2"}, 400, "JSON header's length"),
])
def test_malformed_inference_requests_say_what_is_wrong(loaded, body, headers, status, fragment):
    result = infer(loaded, IRIS, body, headers=headers)
    assert result.status_code == status, result.text
    assert fragment in result.json["error"] and "Traceback" not in result.text


def odd(**fields) -> dict:
    """A request whose one input has `fields` changed (None: removed)."""
    head = {**tensor(SETOSA, [1, 4]), **fields}
    return {"inputs": [{k: v for k, v in head.items() if v is not None}]}


def deep(levels: int) -> dict:
    data = 1.0
    for _ in range(levels):
        data = [data]
    return odd(data=data, shape=[1])


@pytest.mark.parametrize("body, fragment", [
    (odd(datatype={"FP64": 1}), "input 'input-0': datatype must be"), (odd(datatype=["FP64"]), "datatype must be"),
    (odd(datatype=64), "datatype must be"), (odd(datatype=True), "datatype must be"),
    (odd(datatype=None), "datatype must be"),
    (odd(name={"n": 1}), "inputs[0]: name must be a string of 1 to 256"), (odd(name=["input-0"]), "inputs[0]: name must be"),
    (odd(name=5), "inputs[0]: name must be"), (odd(name=""), "inputs[0]: name must be"),
    (odd(name=None), "inputs[0]: name must be"), (odd(name="n" * 300), "inputs[0]: name must be"),
    (odd(shape="1,4"), "input 'input-0': shape must be"), (odd(shape={"0": 4}), "shape must be"),
    (odd(shape=[1.0, 4]), "shape must be"), (odd(shape=[[1, 4]]), "shape must be"), (odd(shape=[True, 4]), "shape must be"),
    (odd(shape=4), "shape must be"), (odd(shape=None), "shape must be"),
    (odd(parameters=[1]), "input 'input-0': parameters must be"), (odd(parameters=7), "parameters must be"),
    (odd(parameters={"binary_data_size": "32"}), "binary_data_size"),
    (odd(parameters={"binary_data_size": [32]}), "binary_data_size"),
    (odd(parameters={"binary_data_size": 1.5}), "binary_data_size"),
    (odd(parameters={"binary_data_size": True}), "binary_data_size"),
    (odd(data={"a": 1}), "input 'input-0'"), (odd(data="abcd"), "input 'input-0'"), (odd(data=None), "input 'input-0'"),
    (odd(data=[[5.1, 3.5], [1.4, {"x": 0.2}]]), "input 'input-0'"), (deep(100), "input 'input-0': data is ragged or nested too deep"),
    ({"inputs": {"name": "input-0"}}, "non-empty list"), ({"inputs": "input-0"}, "non-empty list"),
    ({"inputs": [5]}, "inputs[0] must be an object"), ({"inputs": [None]}, "inputs[0] must be an object"),
    ({"inputs": [[tensor(SETOSA, [1, 4])]]}, "inputs[0] must be an object"),
    ({**odd(), "outputs": {"name": "predict"}}, "`outputs` must be"), ({**odd(), "outputs": "predict"}, "`outputs` must be"),
    ({**odd(), "outputs": [5]}, "`outputs` must be"), ({**odd(), "outputs": [{"name": ["predict"]}]}, "not ['predict']"),
    ({**odd(), "outputs": [{"name": {"n": 1}}]}, "this model gives the outputs"),
    ({**odd(), "parameters": "x"}, "parameters must be an object"), ({**odd(), "id": {"a": 1}}, "`id` must be"),
])
def test_inputs_of_odd_json_types_are_400_naming_the_input(loaded, body, fragment):
    body = assert_error(infer(loaded, IRIS, body), 400, "bad_request")
    assert fragment in body["error"]


def test_binary_framing_errors_are_400(loaded):
    rows = np.asarray([SETOSA], dtype="<f8").tobytes()
    body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "parameters": {"binary_data_size": 32}}]}
    data, headers = binary_request(body, [rows + b"extra"])
    assert "belong to no input" in loaded.simulate_post(f"/v2/models/{IRIS}/infer", body=data, headers=headers).json["error"]
    for length in ("0", "-1", "x", str(len(data) + 1)):
        result = loaded.simulate_post(f"/v2/models/{IRIS}/infer", body=data,
                                      headers={**headers, "Inference-Header-Content-Length": length})
        assert_error(result, 400, "bad_request")
    result = loaded.simulate_post(f"/v2/models/{IRIS}/infer", body=b"\x00\x01", headers={"Content-Type": "image/png"})
    assert_error(result, 415, "unsupported_media_type")


def test_unknown_and_unloaded_models_are_404(client):
    assert_error(client.simulate_get("/v2/models/nope"), 404, "model_not_loaded")
    assert_error(infer(client, IRIS, {"inputs": [tensor(SETOSA, [1, 4])]}), 404, "model_not_loaded")
    assert_error(client.simulate_get(f"/v2/models/{IRIS}/ready"), 404, "model_not_loaded")


def test_the_repository_extension_loads_lists_and_unloads_without_deleting_uploads(client, tmp_path):
    index = client.simulate_post("/v2/repository/index").json
    assert {(e["id"], e["state"], e["reason"]) for e in index} == {(d.id, "UNAVAILABLE", "not loaded") for d in DEMO_MODELS}
    assert client.simulate_post("/v2/repository/index", json={"ready": True}).json == []
    assert client.simulate_post(f"/v2/repository/models/{IRIS}/load", json={}).json == {}
    assert client.simulate_get(f"/v2/models/{IRIS}/ready").json == {"name": IRIS, "version": "1", "ready": True}
    assert [e["id"] for e in client.simulate_post("/v2/repository/index", json={"ready": True}).json] == [IRIS]

    constant = score_artifact(tmp_path / "c.zip", SEVENS)
    model_id = upload(client, constant, model_name="constant").json["model_id"]
    assert client.simulate_post("/v2/repository/models/constant/unload", json={}).json == {}
    assert_error(infer(client, "constant", {"inputs": [tensor([1.0], [1, 1])]}), 404, "model_not_loaded")
    assert client.simulate_get(f"/api/v1/getmodelinfo/{model_id}").json["loaded"] is False  # still stored
    assert client.simulate_post("/v2/repository/models/constant/load").json == {}  # an empty body, as clients send
    assert infer(client, "constant", {"inputs": [tensor([1.0], [1, 1])]}).json["outputs"][0]["data"] == [7]
    assert_error(client.simulate_post("/v2/repository/models/nope/load"), 404, "model_not_found")
    assert_error(client.simulate_post("/v2/repository/index", json={"ready": "yes"}), 400, "bad_request")


def test_gating_and_keys_are_the_same_as_v1(make_client, tmp_path):
    score_key, admin_key = new_key(), new_key()
    keys_file = mount_keys(tmp_path / "keys", keys_document({"app": (["score"], score_key), "ops": (["admin"], admin_key)}))
    client = make_client(MIS_API_KEYS_FILE=str(keys_file), MIS_ENV="prod")
    as_score, as_admin = ({"Authorization": f"Bearer {k}"} for k in (score_key, admin_key))
    assert client.simulate_get("/v2/health/ready").status_code == 200  # open, as /api/v1's
    assert_error(client.simulate_get("/v2"), 401, "unauthorized")
    assert_error(client.simulate_post(f"/v2/repository/models/{IRIS}/load", headers=as_score), 403, "forbidden")
    assert client.simulate_post(f"/v2/repository/models/{IRIS}/load", headers=as_admin).status_code == 200
    # the demo model is for env dev: a prod server refuses it on every protocol
    result = infer(client, IRIS, {"inputs": [tensor(SETOSA, [1, 4])]}, headers=as_score)
    assert_error(result, 403, "env_mismatch")


def test_a_one_text_feature_model_is_called_as_its_metadata_says(client, tmp_path):
    schema = json.dumps({"schema": [{"name": "city", "dtype": "object", "order": 0}]})
    archive = score_artifact(tmp_path / "city.zip", """
        def load_model():
            return None

        def predict(data, model=None):
            return [len(city) for city in data["city"]]
        """, **{"input_schema.json": schema})
    upload(client, archive, model_name="cities")
    [declared] = client.simulate_get("/v2/models/cities").json["inputs"]
    assert declared == {"name": "city", "datatype": "BYTES", "shape": [-1]}
    answer = infer(client, "cities", {"inputs": [tensor(["Oslo", "Rome", "Lima"], [3], "BYTES", name="city")]})
    assert answer.json["outputs"][0]["data"] == [4.0, 4.0, 4.0]


def test_a_prediction_that_is_no_json_is_the_models_failure(client, tmp_path):
    archive = score_artifact(tmp_path / "set.zip", """
        def load_model():
            return None

        def predict(data, model=None):
            return {"prediction": {1, 2}}
        """)
    upload(client, archive, model_name="sets")
    assert_error(infer(client, "sets", {"inputs": [tensor([1.0], [1, 1])]}), 422, "model_predict_failed")


def test_unloading_a_name_unloads_every_copy_of_it(client, tmp_path):
    constant = score_artifact(tmp_path / "c.zip", SEVENS)
    first, second = (upload(client, constant, model_name="twin").json["model_id"] for _ in range(2))
    assert client.simulate_post("/v2/repository/models/twin/unload").status_code == 200
    for model_id in (first, second):
        assert client.simulate_get(f"/api/v1/getmodelinfo/{model_id}").json["loaded"] is False
    assert_error(infer(client, "twin", {"inputs": [tensor([1.0], [1, 1])]}), 404, "model_not_loaded")


def test_each_protocol_words_what_to_do_in_its_own_routes(make_client, data_dir):
    """The core's errors carry what the caller can do; a V2 client is never told to call /api/v1."""
    from server.backends.local_store import local_storage

    client = make_client(MIS_ENV="prod", MIS_PRELOAD=IRIS)  # the demo model is for env dev
    refused_v1 = client.simulate_post("/api/v1/score", params={"model_id": IRIS}, json=[SETOSA])
    refused_v2 = infer(client, IRIS, {"inputs": [tensor(SETOSA, [1, 4])]})
    assert_error(refused_v1, 403, "env_mismatch")
    assert_error(refused_v2, 403, "env_mismatch")
    assert f"POST /api/v1/promotemodel/{IRIS}" in refused_v1.json["error"]
    assert f"`mis promote {IRIS} --env prod`" in refused_v2.json["error"] and "/api/v1" not in refused_v2.json["error"]

    local_storage(data_dir / "store", 1 << 20).quarantine.record_strike(IRIS, "it hung", limit=1, window_s=60)
    quarantined_v1 = client.simulate_post("/api/v1/score", params={"model_id": IRIS}, json=[SETOSA])
    quarantined_v2 = infer(client, IRIS, {"inputs": [tensor(SETOSA, [1, 4])]})
    assert_error(quarantined_v1, 503, "model_quarantined")
    assert_error(quarantined_v2, 503, "model_quarantined")
    assert quarantined_v1.json["error"].endswith(f"; POST /api/v1/loadmodel/{IRIS} reloads it")
    assert quarantined_v2.json["error"].endswith(f"; POST /v2/repository/models/{IRIS}/load reloads it")


SLOW_CLASSIFIER = """
import time

class Slow:
    def predict_proba(self, rows):
        time.sleep(0.6)
        return [[0.25, 0.75] for _ in rows]

def load_model():
    return Slow()

def predict(data, model=None):
    time.sleep(0.6)
    return {"prediction": [1 for _ in data]}
"""


def test_each_output_asked_for_is_its_own_predict_with_the_whole_deadline(make_client, tmp_path):
    """Both outputs of a classifier (what a request naming none gets) take 1.2 s in all under a 1 s
    MIS_PREDICT_TIMEOUT_S: each is one predict, with the whole deadline and its own count."""
    client = make_client(MIS_PREDICT_TIMEOUT_S="1", MIS_QUARANTINE_STRIKES="1")
    model_id = upload(client, score_artifact(tmp_path / "slow.zip", SLOW_CLASSIFIER)).json["model_id"]
    for _ in range(2):
        result = infer(client, model_id, {"inputs": [tensor([1.0, 2.0], [1, 2])]})
        assert result.status_code == 200, result.text
        assert {o["name"]: o["data"] for o in result.json["outputs"]} == {"predict": [1], "predict_proba": [0.25, 0.75]}
    stats = next(m for m in client.simulate_get("/api/v1/serverinfo").json["models"] if m["model_id"] == model_id)
    assert (stats["requests"], stats["timeouts"]) == (4, 0)
