"""Two real gunicorn servers (separate data directories, as two pods) sharing one emulated
Object Storage bucket and Data Science catalog: what one does, the other serves."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time

import pytest
import requests

from ..processes import REPO, GunicornProcess, free_port, wait_until
from .conftest import BUCKET
from .oci_emulator import new_key, write_oci_config
from .protocols.test_v1 import multipart
from .zips import helper_artifact

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2]]


class Server(GunicornProcess):
    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, self.url + path, timeout=60, **kwargs)

    def score(self, model_id: str) -> requests.Response:
        return self.call("POST", "/api/v1/score", params={"model_id": model_id}, json=IRIS_ROWS)


@pytest.fixture
def servers(tmp_path, oci_env, catalog_models):
    started: list[Server] = []

    def start(*names: str, **extra: str) -> list[Server]:
        for name in names:
            server = Server(tmp_path / name, tmp_path / f"{name}.log", MIS_WORKERS="2", MIS_PRELOAD="",
                            **{**oci_env, **extra})
            started.append(server.start())
        return started[-len(names):]

    yield start
    for server in started:
        server.stop()


def test_two_servers_share_uploads_removals_and_loads(servers, oci_emulator, catalog_models, tmp_path):
    a, b = servers("a", "b")
    body, content_type = multipart({"model_name": "churn"}, helper_artifact(tmp_path / "u.zip", 7))
    sent = time.monotonic()
    answer = a.call("POST", "/api/v1/uploadmodel", data=body, headers={"Content-Type": content_type})
    assert answer.status_code == 201, answer.text
    model_id = answer.json()["model_id"]
    # Every worker of b (fresh connections land on either) serves it within the state TTL.
    wait_until(lambda: all(b.score(model_id).status_code == 200 for _ in range(6)), timeout=10, interval=0.02)
    print(f"upload on a -> servable on b after {time.monotonic() - sent:.2f} s (MIS_STATE_TTL_S=0.5)")
    assert b.score(model_id).json()["prediction"] == [7]

    assert b.call("DELETE", f"/api/v1/removemodel/{model_id}").status_code == 200
    for server in (a, b):
        wait_until(lambda: all(server.score(model_id).status_code == 404 for _ in range(6)), timeout=10)
    assert not [n for n in oci_emulator.bucket(BUCKET) if n.startswith(f"uploads/{model_id}")]

    # Loads from both servers at once, several per server: the shared set ends with every one.
    ids = list(catalog_models.values())
    answers: list[int] = []
    threads = [threading.Thread(target=lambda s=s, m=m: answers.append(s.call("POST", f"/api/v1/loadmodel/{m}").status_code))
               for m in ids for s in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers.count(200) == len(threads), answers
    for server in (a, b):
        wait_until(lambda: {m["id"] for m in server.call("GET", "/api/v1/listmodels").json()["models"] if m["loaded"]}
                   == set(ids), timeout=10)


def test_a_score_request_never_waits_on_the_backends(servers, oci_emulator, catalog_models, tmp_path):
    """Scores on a server with OCI backends against the same on local ones: the bucket and catalog
    see no request per score (only each worker's state round and metadata refresh), and latency is
    the local server's."""
    iris = catalog_models["demo-sklearn-iris"]
    (remote,) = servers("remote")
    (local,) = servers("local", MIS_CATALOG="local", MIS_STORE="local", MIS_DEMO_MODELS="true")
    assert remote.call("POST", f"/api/v1/loadmodel/{iris}").status_code == 200
    assert local.call("POST", "/api/v1/loadmodel/demo-sklearn-iris").status_code == 200
    timings = {}
    for name, server, model_id in (("local", local, "demo-sklearn-iris"), ("oci", remote, iris)):
        session = requests.Session()
        for _ in range(50):  # warm both workers
            session.post(server.url + "/api/v1/score", params={"model_id": model_id}, json=IRIS_ROWS, timeout=10)
        before, started = len(oci_emulator.log), time.monotonic()
        samples = []
        for _ in range(1000):
            t = time.perf_counter()
            assert session.post(server.url + "/api/v1/score", params={"model_id": model_id}, json=IRIS_ROWS,
                                timeout=10).status_code == 200
            samples.append(1000 * (time.perf_counter() - t))
        elapsed = time.monotonic() - started
        timings[name] = (statistics.median(samples), len(oci_emulator.log) - before, elapsed)
    median_ms, busy_calls, elapsed = timings["oci"]
    before = len(oci_emulator.log)
    time.sleep(elapsed)  # as long again with no request at all: what the background rounds cost alone
    idle_calls = len(oci_emulator.log) - before
    print(f"score p50: local {timings['local'][0]:.2f} ms, oci {median_ms:.2f} ms; backend calls in {elapsed:.1f} s: "
          f"{busy_calls} during 1000 scores, {idle_calls} idle")
    # Per worker and second, the background rounds alone: 2 state HEADs (TTL 0.5 s) and 2 re-reads of each of
    # the model's two records (catalog details, upload lookup; once per half TTL). No call per score.
    assert busy_calls <= 2 * 6 * (elapsed + 1) < 1000, (busy_calls, idle_calls)


@pytest.mark.parametrize("broken", ["missing config file", "key the service does not know"])
def test_broken_credentials_stop_the_server_at_start_with_one_line(tmp_path, oci_env, oci_emulator, broken):
    config_file = tmp_path / "missing" / "config"
    expected = (f"The server cannot start: MIS_OCI_AUTH=api_key: the OCI config file {config_file} does not exist: "
                "set MIS_OCI_CONFIG_FILE")
    if broken != "missing config file":
        config_file = write_oci_config(tmp_path / "other", new_key())
        expected = ("The server cannot start: OCI Data Science refused the credentials (401 NotAuthenticated): check "
                    "MIS_OCI_AUTH and, for api_key, the key and fingerprint in MIS_OCI_CONFIG_FILE / MIS_OCI_PROFILE")
    env = {**os.environ, **oci_env, "MIS_AUTH": "off", "MIS_BIND": f"127.0.0.1:{free_port()}",
           "MIS_DATA_DIR": str(tmp_path), "MIS_OCI_CONFIG_FILE": str(config_file)}
    done = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "server/gunicorn.conf.py"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == expected
