"""The real thing: gunicorn with several workers on 127.0.0.1, driven over HTTP with `requests`.

Sync workers close every connection, so each request is a fresh connection that any worker may
accept; polling until every worker pid has answered proves a state change reached all of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import requests

from server.demo import DEMO_MODELS

from ..processes import GunicornProcess, wait_until

WORKERS = 3


class Gunicorn(GunicornProcess):
    """The server with WORKERS workers, and helpers that talk to each of them."""

    def __init__(self, data_dir: Path, log: Path, **env: str):
        super().__init__(data_dir, log, MIS_WORKERS=str(WORKERS), **env)

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, timeout=60, **kwargs)

    def every_worker(self, check) -> set[int]:
        """Ask over fresh connections until each worker has passed `check(response_json_of_serverinfo)`."""
        passed: set[int] = set()

        def all_passed():
            info = self.get("/api/v1/serverinfo/").json()
            check(info)
            passed.add(info["worker_pid"])
            return len(passed) == WORKERS

        wait_until(all_passed, timeout=60, interval=0)
        return passed


@pytest.fixture
def gunicorn(tmp_path):
    servers: list[Gunicorn] = []

    def start(**env: str) -> Gunicorn:
        server = Gunicorn(tmp_path / "data", tmp_path / "gunicorn.log", **env).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def score(server: Gunicorn, model_id: str, rows) -> requests.Response:
    return server.post("/api/v1/score/", params={"model_id": model_id}, json=rows)


def expected_predictions(demo, rows: np.ndarray) -> list:
    estimator = demo.train()[0]
    if demo.framework == "xgboost":  # ADS's XGBoost score.py answers the booster's probability
        return estimator.predict_proba(rows)[:, 1].tolist()
    return estimator.predict(rows).tolist()


def test_first_start_builds_and_serves_the_demo_models(gunicorn):
    server = gunicorn()
    models = server.get("/api/v1/listmodels/").json()["models"]
    assert {m["id"] for m in models} == {d.id for d in DEMO_MODELS}
    pids = server.every_worker(lambda info: {m["model_id"] for m in info["models"]} == {d.id for d in DEMO_MODELS})
    assert len(pids) == WORKERS
    for demo in DEMO_MODELS:
        X = demo.load_data()[0][:20]
        assert np.allclose(score(server, demo.id, X.tolist()).json()["prediction"], expected_predictions(demo, X))


def test_one_state_for_all_workers_and_uploads_survive_a_restart(gunicorn, demo_catalog):
    server = gunicorn(MIS_PRELOAD="")
    server.every_worker(lambda info: info["models"] == [])

    uploaded = {}
    for demo in DEMO_MODELS:  # each an artifact built by oracle-ads, sent over HTTP
        with open(demo_catalog / demo.id / "artifact.zip", "rb") as archive:
            answer = server.post("/api/v1/uploadmodel/", files={"file": ("artifact.zip", archive)},
                                 data={"model_name": demo.name, "env": "dev", "version": "7"})
        assert answer.status_code == 201, answer.text
        uploaded[answer.json()["model_id"]] = demo

    def every_upload_scores_as_in_process(info):
        assert set(uploaded) <= {m["model_id"] for m in info["models"]}
        for model_id, demo in uploaded.items():
            X = demo.load_data()[0][:25]
            answer = score(server, model_id, X.tolist()).json()
            assert answer["model_version"] == "7"
            assert np.allclose(answer["prediction"], expected_predictions(demo, X), rtol=1e-6)

    server.every_worker(every_upload_scores_as_in_process)

    assert server.post("/api/v1/loadmodel/demo-lightgbm-wine").json()["status"] == "loaded"
    server.every_worker(lambda info: "demo-lightgbm-wine" in {m["model_id"] for m in info["models"]})

    removed = next(iter(uploaded))
    assert requests.delete(f"{server.url}/api/v1/removemodel/{removed}", timeout=30).status_code == 200
    server.every_worker(lambda info: removed not in {m["model_id"] for m in info["models"]})
    for _ in range(2 * WORKERS):
        assert score(server, removed, [[0.0]]).status_code == 404

    server.stop()
    restarted = gunicorn(MIS_PRELOAD="")
    kept = set(uploaded) - {removed}
    restarted.every_worker(lambda info: {m["model_id"] for m in info["models"]} == kept | {"demo-lightgbm-wine"})
    listed = {m["id"] for m in restarted.get("/api/v1/listmodels/").json()["models"]}
    assert kept <= listed and removed not in listed


def test_bad_requests_never_hurt_the_workers(gunicorn, tmp_path):
    server = gunicorn(MIS_PRELOAD="demo-sklearn-iris", MIS_MAX_BODY_BYTES="1024")
    cases = [
        ("post", "/api/v1/score/?model_id=demo-sklearn-iris", {"data": b"{oops"}, 400),
        ("post", "/api/v1/score/?model_id=demo-sklearn-iris", {"data": b"[" + b"1," * 2000 + b"1]"}, 413),
        ("post", "/api/v1/score/?model_id=demo-sklearn-iris", {"json": [[1, 2]]}, 422),
        # every body shape is checked against the model's 4 features, not only lists of rows
        ("post", "/api/v1/score/?model_id=demo-sklearn-iris", {"json": [1.0, 2.0]}, 422),
        ("post", "/api/v1/score/?model_id=demo-sklearn-iris", {"json": {"data": [[1, 2]]}}, 422),
        ("post", "/api/v1/score/?model_id=demo-sklearn-iris", {"json": {"a": [1.0]}}, 422),
        ("post", "/api/v1/score/?model_id=demo-sklearn-iris", {"json": {"data": {"a": [1.0]}}}, 422),
        ("post", "/api/v1/score/?model_id=../../etc/passwd", {"json": [[1]]}, 400),
        ("post", "/api/v1/uploadmodel/", {"files": {"file": ("x.zip", b"not a zip")}, "data": {"model_name": "x"}}, 400),
        ("get", "/api/v1/getmodelinfo/%00", {}, 400),
    ]
    for method, path, kwargs, status in cases:
        answer = getattr(requests, method)(server.url + path, timeout=30, **kwargs)
        assert answer.status_code == status, (path, answer.text)
        assert answer.json()["error"] and "Traceback" not in answer.text
    assert score(server, "demo-sklearn-iris", [[5.1, 3.5, 1.4, 0.2]]).json()["prediction"] == [0]
    assert "Traceback" not in server.log_path.read_text()
