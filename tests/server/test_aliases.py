"""Versions and aliases in-process: several versions of one name, `latest` and `default`, weighted
aliases (canary, A/B) and shadow traffic, over both protocols."""

from __future__ import annotations

import json
import logging
import math
import time

import pytest

from ..processes import wait_until
from .protocols.test_v1 import assert_error, upload
from .zips import score_artifact

VERSION_MODEL = """
import time

def load_model():
    return None

def predict(data, model=None):
    time.sleep({delay})
    return [{answer} for _ in data]
"""


def upload_version(client, tmp_path, version: str, answer: int, delay: float = 0.0) -> str:
    archive = score_artifact(tmp_path / f"v{version}.zip", VERSION_MODEL.format(answer=answer, delay=delay))
    result = upload(client, archive, model_name="churn", version=version)
    assert result.status_code == 201, result.text
    return result.json["model_id"]


@pytest.fixture
def versions(client, tmp_path) -> dict[str, str]:
    """Versions 1, 2 and 10 of `churn`, answering 1, 2 and 10."""
    return {v: upload_version(client, tmp_path, v, int(v)) for v in ("1", "2", "10")}


def score_v1(client, version=None) -> dict:
    params = {"model_name": "churn", **({"version": version} if version else {})}
    return client.simulate_post("/api/v1/score", params=params, json=[[0.0]]).json


def score_v2(client, version=None) -> dict:
    path = "/v2/models/churn" + (f"/versions/{version}" if version else "") + "/infer"
    return client.simulate_post(path, json={"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64",
                                                        "data": [0.0]}]}).json


def set_alias(client, alias, spec, name="churn"):
    return client.simulate_put(f"/api/v1/aliases/{name}/{alias}", json=spec)


def test_a_request_names_a_version_or_gets_the_latest(client, versions):
    assert score_v1(client)["prediction"] == [10]  # "10" is after "2": versions compare as numbers
    assert score_v1(client, "2")["model_version"] == "2"
    assert score_v1(client, "latest")["model_id"] == versions["10"]
    answer = score_v2(client, "1")
    assert (answer["model_version"], answer["outputs"][0]["data"]) == ("1", [1])
    assert client.simulate_get("/v2/models/churn").json["versions"] == ["1", "2", "10"]
    assert_error(client.simulate_post("/api/v1/score", params={"model_name": "churn", "version": "3"}, json=[[0.0]]),
                 404, "model_not_loaded")


def test_the_default_alias_routes_requests_that_name_no_version(client, versions):
    assert set_alias(client, "default", {"versions": {"2": 1}}).status_code == 200
    assert score_v2(client)["model_version"] == "2" and score_v1(client)["model_version"] == "2"
    assert score_v1(client, "latest")["model_version"] == "10"  # latest still means latest
    assert client.simulate_delete("/api/v1/aliases/churn/default").status_code == 200
    assert score_v1(client)["model_version"] == "10"


def test_a_weighted_alias_splits_traffic_within_statistical_tolerance(client, versions):
    assert set_alias(client, "canary", {"versions": {"1": 90, "2": 10}}).json == {
        "model_name": "churn", "alias": "canary", "versions": {"1": 90, "2": 10}, "shadow": None}
    n = 2000
    to_two = sum(score_v1(client, "canary")["model_version"] == "2" for _ in range(n))
    # binomial(2000, 0.1): mean 200, sd 13.4; 5 sd either side fails once in ~1.7 million runs
    assert abs(to_two - n * 0.1) < 5 * math.sqrt(n * 0.1 * 0.9), to_two
    assert client.simulate_get("/api/v1/aliases").json == {
        "aliases": {"churn": {"canary": {"versions": {"1": 90, "2": 10}, "shadow": None}}}}
    assert "canary" in client.simulate_get("/v2/models/churn").json["parameters"]["aliases"]


def test_shadow_traffic_is_logged_never_returned_and_never_waited_for(client, tmp_path, caplog, versions):
    slow = upload_version(client, tmp_path, "11", 11, delay=0.5)
    assert set_alias(client, "stable", {"versions": {"1": 1}, "shadow": {"version": "11", "percent": 100}}).status_code == 200
    caplog.set_level(logging.INFO, logger="mis.shadow")
    started = time.perf_counter()
    answers = [score_v1(client, "stable") for _ in range(3)]
    elapsed = time.perf_counter() - started
    assert [a["prediction"] for a in answers] == [[1]] * 3 and {a["model_id"] for a in answers} == {versions["1"]}
    assert elapsed < 1.0, elapsed  # three mirrored requests, 0.5 s each in the shadow (1.5 s if waited for)
    wait_until(lambda: len(caplog.records) >= 3, timeout=10)
    lines = [json.loads(record.msg) for record in caplog.records]
    assert len(lines) == 3
    assert {(line["model"], line["primary"], line["outcome"], line["agrees"], line["prediction"]) for line in lines} == {
        (slow, versions["1"], "ok", False, "[11]")}
    scrape = client.simulate_get("/metrics").text
    assert f'mis_shadow_requests_total{{model="{slow}",outcome="ok",version="11"}}' in scrape


def with_shadow(shadow) -> dict:
    return {"versions": {"1": 1}, "shadow": shadow}


def test_alias_changes_are_checked(client, versions):
    for spec in ({}, {"versions": {}}, {"versions": {"1": 0}}, {"versions": {"1": -1}}, {"versions": {"1": 1.5}},
                 {"versions": {"1": True}}, with_shadow({"version": "2", "percent": 0}),
                 with_shadow({"version": "2", "percent": 101}), with_shadow({"version": 2, "percent": 5}),
                 {"versions": {"1": 1}, "extra": 1}, [1, 2], "canary",
                 # odd JSON shapes: each is the usage text, never a 500
                 7, {"versions": None}, {"versions": ["1"]}, {"versions": "1"}, {"versions": {"1": None}},
                 {"versions": {"1": "1"}}, {"versions": {"1": [1]}}, {"versions": {"1": {"w": 1}}},
                 with_shadow(["version", "percent"]), with_shadow([{"version": "2"}]), with_shadow("version"),
                 with_shadow(5), with_shadow(True), with_shadow({}), with_shadow({"version": None, "percent": 5}),
                 with_shadow({"version": ["2"], "percent": 5}), with_shadow({"version": {"v": "2"}, "percent": 5}),
                 with_shadow({"version": "2", "percent": None}), with_shadow({"version": "2", "percent": "5"}),
                 with_shadow({"version": "2", "percent": [5]}), with_shadow({"version": "2", "percent": True}),
                 with_shadow({"version": "2", "percent": 5, "extra": 1})):
        body = assert_error(set_alias(client, "canary", spec), 400, "bad_request")
        assert body["error"].startswith('send {"versions"'), spec
    null = client.simulate_put("/api/v1/aliases/churn/canary", body="null", headers={"Content-Type": "application/json"})
    assert assert_error(null, 400, "bad_request")["error"].startswith('send {"versions"')
    assert "no loaded version '3'" in set_alias(client, "canary", {"versions": {"3": 1}}).json["error"]
    assert_error(set_alias(client, "latest", {"versions": {"1": 1}}), 400, "bad_request")
    assert_error(set_alias(client, "-x", {"versions": {"1": 1}}), 400, "bad_request")
    assert_error(client.simulate_delete("/api/v1/aliases/churn/canary"), 404, "model_not_found")
    assert client.simulate_get("/api/v1/aliases").json == {"aliases": {}}  # nothing refused was kept


def test_a_version_an_alias_routes_to_cannot_be_unloaded_or_removed_until_the_alias_changes(client, versions):
    assert set_alias(client, "stable", {"versions": {"1": 1}, "shadow": {"version": "2", "percent": 10}}).status_code == 200
    for version in ("1", "2"):  # routed to, and mirrored to
        body = assert_error(client.simulate_post(f"/v2/repository/models/{versions[version]}/unload"), 409, "alias_in_use")
        assert body["aliases"] == ["churn/stable"]
        assert_error(client.simulate_delete(f"/api/v1/removemodel/{versions[version]}"), 409, "alias_in_use")
    assert score_v1(client, "stable")["model_version"] == "1"  # nothing was unloaded
    assert client.simulate_post(f"/v2/repository/models/{versions['10']}/unload").status_code == 200  # not aliased
    assert set_alias(client, "stable", {"versions": {"2": 1}}).status_code == 200
    assert client.simulate_delete(f"/api/v1/removemodel/{versions['1']}").status_code == 200


def test_an_alias_cannot_take_a_version_name(client, tmp_path, versions):
    upload_version(client, tmp_path, "beta", 3)
    body = assert_error(set_alias(client, "beta", {"versions": {"1": 1}}), 400, "bad_request")
    assert "could never be reached" in body["error"]
