"""The real thing: gunicorn with several workers on 127.0.0.1, driven over HTTP with `requests`.

Sync workers close every connection, so each request is a fresh connection that any worker may
accept; polling until every worker pid has answered proves a state change reached all of them.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import requests

from server.auth import ADMIN, SCORE
from server.demo import DEMO_MODELS

from ..processes import REPO, GunicornProcess, free_port, stop_group, wait_until
from .keys import keys_document, mount_keys, new_key
from .test_aliases import VERSION_MODEL
from .zips import score_artifact

WORKERS = 3


class Gunicorn(GunicornProcess):
    """The server with WORKERS workers, and helpers that talk to each of them."""

    def __init__(self, data_dir: Path, log: Path, headers: dict | None = None, **env: str):
        super().__init__(data_dir, log, MIS_WORKERS=str(WORKERS), **env)
        self.headers = headers or {}  # sent with every request unless a call gives its own

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **{"headers": self.headers, **kwargs})

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, timeout=60, **{"headers": self.headers, **kwargs})

    def delete(self, path: str, **kwargs) -> requests.Response:
        return requests.delete(self.url + path, timeout=30, **{"headers": self.headers, **kwargs})

    def put(self, path: str, **kwargs) -> requests.Response:
        return requests.put(self.url + path, timeout=30, **{"headers": self.headers, **kwargs})

    def every_worker(self, check) -> set[int]:
        """Ask over fresh connections until `check(response_json_of_serverinfo)` was true in each worker."""
        passed: set[int] = set()

        def all_passed():
            info = self.get("/api/v1/serverinfo/").json()
            if check(info):
                passed.add(info["worker_pid"])
            return len(passed) == WORKERS

        wait_until(all_passed, timeout=60, interval=0)
        return passed


@pytest.fixture
def gunicorn(tmp_path):
    servers: list[Gunicorn] = []

    def start(headers: dict | None = None, **env: str) -> Gunicorn:
        server = Gunicorn(tmp_path / "data", tmp_path / "gunicorn.log", headers, **env).start()
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
    assert "Control socket" not in server.log_path.read_text()  # no management socket (gunicorn.conf.py)
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
        return True

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


# -- security ----------------------------------------------------------------------------------

def raw_upload_head(server: Gunicorn, authorization: str | None) -> bytes:
    """Announce a 100 MB upload and send none of it: a caller who may not upload is answered
    from the head alone, before the body would have been stored."""
    head = ("POST /api/v1/uploadmodel/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 104857600\r\n"
            + (f"Authorization: {authorization}\r\n" if authorization else "") + "\r\n")
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=10) as client:
        client.sendall(head.encode())
        return client.recv(65536)


def test_keys_guard_every_state_change_reload_without_restart_and_never_reach_a_log(gunicorn, tmp_path, demo_catalog):
    scoring, admin = new_key(), new_key()
    keys_file = mount_keys(tmp_path / "secret", keys_document({"scoring": ([SCORE], scoring), "ops": ([ADMIN], admin)}))
    as_scoring, as_admin = {"Authorization": f"Bearer {scoring}"}, {"Authorization": f"Bearer {admin}"}
    server = gunicorn(headers=as_scoring, MIS_API_KEYS_FILE=str(keys_file), MIS_ENV="prod", MIS_PRELOAD="",
                      MIS_METADATA_TTL_S="1")
    artifact = (demo_catalog / "demo-sklearn-iris" / "artifact.zip").read_bytes()

    def upload(headers, **fields):
        return server.post("/api/v1/uploadmodel/", headers=headers, files={"file": ("a.zip", artifact)},
                           data={"model_name": "iris", **fields})

    state_changes = {
        "load": lambda headers: server.post("/api/v1/loadmodel/demo-sklearn-iris", headers=headers),
        "upload": upload,
        "promote": lambda headers: server.post("/api/v1/promotemodel/demo-sklearn-iris", json={"env": "prod"},
                                               headers=headers),
        "remove": lambda headers: server.delete("/api/v1/removemodel/demo-sklearn-iris", headers=headers),
    }
    for action, call in state_changes.items():
        refused = call({})
        assert refused.status_code == 401 and refused.json()["code"] == "unauthorized", action
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="mis"'
        assert call({"Authorization": "Bearer " + new_key()}).status_code == 401, action
        assert call(as_scoring).json()["required_scope"] == ADMIN, action
    assert server.get("/api/v1/listmodels/", headers={}).status_code == 401
    assert raw_upload_head(server, None).startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert raw_upload_head(server, f"Bearer {scoring}").startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert not list((server.data_dir / "store").glob("uploads/*"))

    # An upload cannot land in the gated env; an admin promotes it, and every worker then scores it.
    assert upload(as_admin, env="prod").json()["code"] == "upload_env_refused"
    assert not list((server.data_dir / "store").glob("uploads/*"))
    model_id = upload(as_admin).json()["model_id"]
    assert score(server, model_id, [[5.1, 3.5, 1.4, 0.2]]).json()["code"] == "env_mismatch"
    assert server.post(f"/api/v1/promotemodel/{model_id}", json={"env": "prod"}, headers=as_admin).status_code == 200
    wait_until(lambda: all(score(server, model_id, [[5.1, 3.5, 1.4, 0.2]]).json().get("prediction") == [0]
                           for _ in range(3 * WORKERS)), timeout=30)

    # Rotation: the Secret changes under the running server; every worker takes the new key and drops the old.
    rotated = new_key()
    mount_keys(keys_file.parent, keys_document({"scoring": ([SCORE], rotated), "ops": ([ADMIN], admin)}))
    server.headers = {"Authorization": f"Bearer {rotated}"}
    server.every_worker(lambda info: info.get("auth", {}).get("caller") == "scoring")  # 401 until reloaded
    wait_until(lambda: all(server.get("/api/v1/serverinfo/", headers=as_scoring).status_code == 401
                           for _ in range(3 * WORKERS)), timeout=30)
    assert server.delete(f"/api/v1/removemodel/{model_id}", headers=as_admin).status_code == 200

    log = server.log_path.read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith('{"time"')]
    audit = [(a["action"], a["key"], a["result"]) for a in lines if a["log"] == "audit"]
    for action in state_changes:
        assert (action, None, "denied") in audit and (action, "scoring", "denied") in audit, action
    assert ("upload", "ops", "ok") in audit and ("promote", "ops", "ok") in audit and ("remove", "ops", "ok") in audit
    assert ("upload", "ops", "denied") in audit  # the refused env claim
    assert any(a["log"] == "access" and a["status"] == 200 and a["model"] == model_id for a in lines)
    for secret in (scoring, admin, rotated):
        assert secret not in log


@pytest.mark.parametrize("env, message", [
    ({"MIS_BIND": "0.0.0.0:{port}"}, "MIS_API_KEYS_FILE is not set"),
    ({"MIS_BIND": "0.0.0.0:{port}", "MIS_AUTH": "off"}, "allowed only on a loopback MIS_BIND"),
    ({"MIS_API_KEYS_FILE": "{keys}"}, "not JSON"),
    # gunicorn's own --bind would take MIS_BIND's place, and with it the loopback rule of MIS_AUTH=off
    ({"MIS_AUTH": "off", "GUNICORN_CMD_ARGS": "--bind 0.0.0.0:{port}"}, "set MIS_BIND instead of gunicorn's --bind"),
])
def test_the_server_refuses_to_start_unsafely_saying_what_to_set(tmp_path, env, message):
    keys = mount_keys(tmp_path / "secret", '{"keys": [')
    env = {name: value.format(port=free_port(), keys=keys) for name, value in env.items()}
    started = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "server/gunicorn.conf.py"], cwd=REPO,
                             env={**os.environ, "MIS_DATA_DIR": str(tmp_path / "data"), **env},
                             capture_output=True, text=True, timeout=120)
    assert started.returncode != 0
    assert message in started.stderr and "Traceback" not in started.stderr


def worker_pids(master_pid: int) -> list[int]:
    return [int(pid) for pid in Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()]


@pytest.mark.parametrize("broken", ["{not json", None], ids=["malformed", "removed"])
def test_a_keys_file_broken_after_the_start_survives_worker_restarts(gunicorn, tmp_path, broken):
    """Running workers keep the last good keys; a worker that starts meanwhile (a model killed the
    last one, say) inherits the master's, instead of failing to boot and taking the server down."""
    scoring = new_key()
    keys_file = mount_keys(tmp_path / "secret", keys_document({"scoring": ([SCORE], scoring)}))
    server = gunicorn(headers={"Authorization": f"Bearer {scoring}"}, MIS_API_KEYS_FILE=str(keys_file),
                      MIS_PRELOAD="")
    if broken is None:
        (keys_file.parent / "..data" / keys_file.name).unlink()  # the Secret's file is gone
    else:
        mount_keys(keys_file.parent, broken)  # a bad Secret update
    # Requests make the workers look at the file; they go on being served with the last good keys.
    wait_until(lambda: server.get("/api/v1/serverinfo/").status_code == 200
               and "keeping the last good keys" in server.log_path.read_text(), timeout=30)
    victim = worker_pids(server.process.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in worker_pids(server.process.pid)
               and len(worker_pids(server.process.pid)) == WORKERS, timeout=60)
    assert server.process.poll() is None
    server.every_worker(lambda info: info["auth"]["caller"] == "scoring")  # the new worker too


def test_every_caller_without_the_scope_is_answered_from_the_head(gunicorn, tmp_path):
    """Whatever spelling of the path routes to a protected operation, a caller who may not call it
    is answered before a byte of its body is read; an admin's upload that the worker refuses
    itself (over MIS_MAX_UPLOAD_BYTES) is audited under the admin's name."""
    scoring, admin = new_key(), new_key()
    keys_file = mount_keys(tmp_path / "secret", keys_document({"scoring": ([SCORE], scoring), "ops": ([ADMIN], admin)}))
    server = gunicorn(MIS_API_KEYS_FILE=str(keys_file), MIS_PRELOAD="", MIS_MAX_UPLOAD_BYTES="4096")
    for path in ("/api/v1/uploadmodel/", "//api/v1/uploadmodel", "///api/v1/uploadmodel/", "/api/v1/score/",
                 "//api/v1/promotemodel/x"):
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                "Content-Length: 1048576\r\nExpect: 100-continue\r\n\r\n")
        with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=10) as client:
            client.sendall(head.encode())
            assert client.recv(65536).startswith(b"HTTP/1.1 401 Unauthorized\r\n"), path

    too_big = requests.post(server.url + "/api/v1/uploadmodel/", files={"file": ("a.zip", b"\0" * 8192)},
                            data={"model_name": "m"}, headers={"Authorization": f"Bearer {admin}"}, timeout=10)
    assert too_big.status_code == 413

    def audited():
        lines = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.startswith('{"time"')]
        return [(a["action"], a["key"], a["status"]) for a in lines if a["log"] == "audit"]

    wait_until(lambda: ("upload", "ops", 413) in audited(), timeout=10)
    assert ("upload", None, 401) in audited() and ("promote", None, 401) in audited()


SCORE_QUOTES_ITS_INPUT = """
def load_model():
    return {"paris", "oslo"}

def predict(data, model=None):
    if data[0][0] not in model:
        raise ValueError(f"unknown city {data[0][0]}")  # an ordinary message that quotes the input
    return {"prediction": [1]}
"""


def test_a_scoring_caller_cannot_forge_a_log_line_through_a_models_words(gunicorn, tmp_path):
    """Diagnostics (stderr) and the JSON lines (stdout) end up in one stream in most runtimes, as
    here: a model's exception text that quotes the input must not start a line of its own."""
    scoring, admin = new_key(), new_key()
    keys_file = mount_keys(tmp_path / "secret", keys_document({"scoring": ([SCORE], scoring), "ops": ([ADMIN], admin)}))
    server = gunicorn(MIS_API_KEYS_FILE=str(keys_file), MIS_PRELOAD="")
    archive = score_artifact(tmp_path / "echo.zip", SCORE_QUOTES_ITS_INPUT).read_bytes()
    model_id = server.post("/api/v1/uploadmodel/", headers={"Authorization": f"Bearer {admin}"},
                           files={"file": ("a.zip", archive)}, data={"model_name": "echo"}).json()["model_id"]
    forged = json.dumps({"time": "2030-01-01T00:00:00.000Z", "log": "audit", "action": "remove", "key": "ops",
                         "model": "demo-sklearn-iris", "result": "ok", "status": 200})
    answer = server.post("/api/v1/score/", params={"model_id": model_id}, json=[["x\n" + forged]],
                         headers={"Authorization": f"Bearer {scoring}"})
    assert answer.status_code == 422 and forged not in answer.text
    request_id = answer.headers["X-Request-ID"]
    wait_until(lambda: f"request {request_id}: " in server.log_path.read_text(), timeout=10)
    assert not [line for line in server.log_path.read_text().splitlines() if line.startswith('{"time": "2030')]


SCORE_COUNTS_ITS_LOADS = """
import os

def load_model():
    with open(os.environ["MIS_TEST_LOADS_FILE"], "a") as loads:
        loads.write(f"{os.getpid()}\\n")
    return 7

def predict(data, model=None):
    return {"prediction": [model for _ in data]}
"""


def test_configured_models_are_loaded_once_in_the_master_and_shared_by_every_worker(gunicorn, tmp_path):
    catalog = tmp_path / "data" / "catalog" / "counted"
    catalog.mkdir(parents=True)
    score_artifact(catalog / "artifact.zip", SCORE_COUNTS_ITS_LOADS)
    (catalog / "metadata.json").write_text(json.dumps({"id": "counted", "name": "counted", "artifact": "artifact.zip"}))
    loads = tmp_path / "loads.txt"
    server = gunicorn(MIS_PRELOAD="counted", MIS_DEMO_MODELS="false", MIS_TEST_LOADS_FILE=str(loads))
    server.every_worker(lambda info: score(server, "counted", [[1]]).json()["prediction"] == [7])
    assert loads.read_text().split() == [str(server.process.pid)]  # the master's load, inherited


def test_a_burst_of_keep_alive_connections_is_spread_over_the_workers(gunicorn):
    """A client pool opening its connections at once must not land them all on one worker (which
    would then serve alone, on one core, for as long as they live)."""
    server = gunicorn(MIS_PRELOAD="")
    server.every_worker(lambda info: True)  # every worker is up and listening
    port = int(server.url.rsplit(":", 1)[1])
    connections = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(6 * WORKERS)]
    try:
        owners = []
        for conn in connections:  # keep-alive: each answer comes from the worker that accepted it
            conn.sendall(b"GET /api/v1/serverinfo/ HTTP/1.1\r\nHost: x\r\n\r\n")
            head, _, body = conn.recv(65536).partition(b"\r\n\r\n")
            owners.append(json.loads(body)["worker_pid"])
    finally:
        for conn in connections:
            conn.close()
    shares = sorted(owners.count(pid) for pid in set(owners))
    assert len(shares) == WORKERS and shares[-1] <= 4 * WORKERS, shares


def listening_sockets(pid: int, port: int) -> set[int]:
    """The TCP sockets (inodes) listening on `port` that process `pid` holds."""
    listening = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        for line in (table.read_text().splitlines()[1:] if table.exists() else []):
            fields = line.split()  # sl, local address:port, remote, state (0A: LISTEN), ..., inode
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                listening.add(int(fields[9]))
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # an fd closed meanwhile
            target = os.readlink(fd)
            if target.startswith("socket:["):
                held.add(int(target.removeprefix("socket:[").removesuffix("]")))
    return listening & held


def test_each_worker_listens_on_a_socket_of_its_own(gunicorn):
    """What spreads a burst over the workers: each worker holds a listening socket on the server's
    port that no other process holds, in the kernel's SO_REUSEPORT group with the others (binding
    the port beside them needs it). gunicorn 23 gives the workers only the master's shared socket,
    and server/worker.py (_own_listeners) adds one; gunicorn 24 and later open one per worker."""
    server = gunicorn(MIS_PRELOAD="")
    server.every_worker(lambda info: True)  # every worker is up and listening
    port = int(server.url.rsplit(":", 1)[1])
    master = listening_sockets(server.process.pid, port)
    workers = {pid: listening_sockets(pid, port) for pid in worker_pids(server.process.pid)}
    assert len(workers) == WORKERS, workers
    holders = collections.Counter(inode for held in [master, *workers.values()] for inode in held)
    for pid, held in workers.items():
        assert any(holders[inode] == 1 for inode in held), \
            f"worker {pid} listens on {held}, each held by other processes too (the master: {master})"


def test_a_frozen_worker_is_killed_after_mis_timeout_s_and_replaced(gunicorn):
    """MIS_TIMEOUT_S is also gunicorn's heartbeat limit (gunicorn.conf.py): a worker whose event loop
    froze (stopped here, as a model holding the GIL in C code would leave it) is killed after it and
    replaced, while the live workers, whose loops beat every second, are left alone."""
    server = gunicorn(MIS_PRELOAD="", MIS_TIMEOUT_S="6")  # gunicorn's own default is 30 s
    answered: set[int] = set()

    def every_worker_answered() -> bool:
        answer = server.get("/api/v1/serverinfo/")
        if answer.status_code == 200:  # a worker's first serverinfo can take seconds: a 504 asks again
            answered.add(answer.json()["worker_pid"])
        return len(answered) == WORKERS

    wait_until(every_worker_answered, timeout=60, interval=0)  # every worker is up and beating
    frozen, *live = worker_pids(server.process.pid)
    os.kill(frozen, signal.SIGSTOP)
    stopped = time.monotonic()
    wait_until(lambda: frozen not in worker_pids(server.process.pid), timeout=20)
    killed_after = time.monotonic() - stopped
    wait_until(lambda: len(worker_pids(server.process.pid)) == WORKERS, timeout=60)
    assert set(live) < set(worker_pids(server.process.pid)), "a live worker was killed too"
    assert 4 < killed_after < 14, f"the frozen worker was killed {killed_after:.1f} s on; MIS_TIMEOUT_S is 6"
    assert f"WORKER TIMEOUT (pid:{frozen})" in server.log_path.read_text()
    assert server.get("/api/v1/healthcheck/").status_code == 200


def test_a_stock_v2_client_round_trips_every_framework_and_an_alias_reaches_every_worker(gunicorn):
    """tritonclient (Triton's own HTTP client, as KServe and MLServer users have it) against the
    server as deployed: metadata, JSON and binary tensors, and the repository extension."""
    import tritonclient.http as v2

    # Nothing preloaded, so no worker's warmup is still loading when the test unloads a model: a
    # late warmup would mark it loaded again, for every worker (a race of its own, left open).
    server = gunicorn(MIS_PRELOAD="")
    client = v2.InferenceServerClient(url=server.url.removeprefix("http://"), network_timeout=60)
    try:
        for demo in DEMO_MODELS:
            client.load_model(demo.id)
        server.every_worker(lambda info: {d.id for d in DEMO_MODELS} <= {m["model_id"] for m in info["models"]})
        assert client.is_server_live() and client.is_server_ready()
        assert client.get_server_metadata()["extensions"] == ["model_repository", "binary_tensor_data"]
        index = client.get_model_repository_index()
        assert {(e["id"], e["state"]) for e in index} == {(d.id, "READY") for d in DEMO_MODELS}
        for demo in DEMO_MODELS:
            X = demo.load_data()[0][:20]
            metadata = client.get_model_metadata(demo.name)
            assert metadata["inputs"][0]["shape"] == [-1, X.shape[1]] and metadata["platform"] == demo.framework
            for binary in (True, False):
                tensor = v2.InferInput("input-0", list(X.shape), "FP64")
                tensor.set_data_from_numpy(X, binary_data=binary)
                result = client.infer(demo.name, [tensor], outputs=[v2.InferRequestedOutput("predict", binary_data=binary)])
                assert np.allclose(result.as_numpy("predict"), expected_predictions(demo, X), rtol=1e-6)
                assert result.get_response()["model_version"] == "1"

        iris = "demo-sklearn-iris"
        client.unload_model(iris)
        assert not client.is_model_ready(iris)
        server.every_worker(lambda info: iris not in {m["model_id"] for m in info["models"]})
        client.load_model(iris)
        assert client.is_model_ready(iris)
        server.every_worker(lambda info: iris in {m["model_id"] for m in info["models"]})
    finally:
        client.close()

    # An alias set through one worker routes requests in every other one at once.
    name = quote(next(d.name for d in DEMO_MODELS if d.id == iris))  # aliases belong to names
    assert server.put(f"/api/v1/aliases/{name}/stable", json={"versions": {"1": 1}}).status_code == 200
    rows = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}],
            "outputs": [{"name": "predict"}]}
    pids = set()

    def every_worker_routes_by_the_alias() -> bool:
        with requests.Session() as session:  # one keep-alive connection: both requests reach one worker
            pid = session.get(f"{server.url}/api/v1/serverinfo", timeout=30).json()["worker_pid"]
            answer = session.post(f"{server.url}/v2/models/{name}/versions/stable/infer", json=rows, timeout=30)
        assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [0.0], answer.text
        pids.add(pid)
        return len(pids) == WORKERS

    wait_until(every_worker_routes_by_the_alias, timeout=60, interval=0)


def test_an_alias_splits_traffic_by_weight_and_mirrors_it_unseen_under_gunicorn(gunicorn, tmp_path):
    server = gunicorn(MIS_PRELOAD="")
    ids = {}
    for version in ("1", "2", "3"):
        archive = score_artifact(tmp_path / f"v{version}.zip", VERSION_MODEL.format(answer=version, delay=0))
        with open(archive, "rb") as handle:
            answer = server.post("/api/v1/uploadmodel/", files={"file": ("a.zip", handle)},
                                 data={"model_name": "churn", "version": version})
        assert answer.status_code == 201, answer.text
        ids[version] = answer.json()["model_id"]
    spec = {"versions": {"1": 80, "2": 20}, "shadow": {"version": "3", "percent": 100}}
    assert server.put("/api/v1/aliases/churn/default", json=spec).status_code == 200

    n, served = 400, {"1": 0, "2": 0}
    for _ in range(n):  # fresh connections, spread over the 3 workers: each routes by the shared alias
        answer = server.post("/api/v1/score", params={"model_name": "churn"}, json=[[0.0]]).json()
        assert answer["prediction"] == [int(answer["model_version"])]  # the version that answered, never the shadow
        served[answer["model_version"]] += 1
    # binomial(400, 0.2): mean 80, sd 8; 5 sd either side
    assert abs(served["2"] - n * 0.2) < 5 * (n * 0.2 * 0.8) ** 0.5, served

    def shadow_lines() -> list[dict]:
        return [json.loads(line) for line in server.log_path.read_text().splitlines() if '"log":"shadow"' in line]

    wait_until(lambda: len(shadow_lines()) == n, timeout=60)  # every request mirrored, each logged once
    assert {(line["model"], line["outcome"], line["prediction"], line["agrees"]) for line in shadow_lines()} == {
        (ids["3"], "ok", "[3]", False)}
    assert {line["primary"] for line in shadow_lines()} == {ids["1"], ids["2"]}


def test_a_second_server_on_a_taken_address_exits_saying_so_and_the_first_serves_alone(gunicorn, tmp_path):
    first = gunicorn(MIS_PRELOAD="")
    second = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "server/gunicorn.conf.py"], cwd=REPO,
                              env={**os.environ, "MIS_BIND": first.url.removeprefix("http://"), "MIS_AUTH": "off",
                                   "MIS_DATA_DIR": str(tmp_path / "second"), "MIS_DEMO_MODELS": "false"},
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = second.communicate(timeout=60)
    finally:
        stop_group(second)  # had it joined the address, its workers would be serving there now
    assert second.returncode != 0 and "Traceback" not in stderr
    assert f"another process already listens on MIS_BIND {first.url.removeprefix('http://')}" in stderr
    for _ in range(20):  # every connection still reaches a worker of the first server
        with requests.get(f"{first.url}/api/v1/serverinfo/", timeout=10) as answer:
            assert parent_of(answer.json()["worker_pid"]) == first.process.pid


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
