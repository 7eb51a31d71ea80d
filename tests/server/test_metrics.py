"""GET /metrics: Prometheus samples summed over real gunicorn workers, dead workers' live gauges
dropped, bounded labels, and the `metrics` scope."""

from __future__ import annotations

import concurrent.futures
import os
import signal
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from server.auth import ADMIN, METRICS, SCORE

from ..processes import GunicornProcess, wait_until
from .keys import keys_document, mount_keys, new_key
from .protocols.test_v1 import IRIS, SETOSA, multipart
from .test_worker import raw_exchange, server, upload  # noqa: F401 (server: the fixture)
from .zips import SCORE_LOAD_FAILS, score_artifact

WINE = "demo-lightgbm-wine"
SCORE_HANGS_MARKED = """
import os, pathlib, threading, time

def load_model():
    return None

def predict(data, model=None):
    pathlib.Path(os.environ["HUNG_MARKS"], f"{os.getpid()}-{threading.get_ident()}").touch()
    time.sleep(3600)
"""
SCORING_KEY, MONITORING_KEY, ADMIN_KEY = new_key(), new_key(), new_key()
SCORING, MONITORING, ADMINISTRATION = ({"Authorization": f"Bearer {key}"}
                                       for key in (SCORING_KEY, MONITORING_KEY, ADMIN_KEY))
UNKNOWN = ("no-such-model", "upload-" + "f" * 32)  # names a caller made up


def parse(text: str) -> list[tuple[str, dict, float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def scrape(url: str, headers: dict | None = None) -> list[tuple[str, dict, float]]:
    answer = requests.get(f"{url}/metrics", headers=headers or {}, timeout=10)  # a fresh connection each
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    return parse(answer.text)


def value(samples, name: str, **labels: str) -> float:
    """The sample with exactly these labels (0 when there is none: a series starts at its first event)."""
    found = [v for n, l, v in samples if n == name and l == labels]
    assert len(found) <= 1, found
    return found[0] if found else 0.0


def buckets(samples, name: str, **labels: str) -> list[float]:
    """A histogram's bucket counts in `le` order."""
    found = sorted((float(l["le"]), v) for n, l, v in samples
                   if n == f"{name}_bucket" and {k: x for k, x in l.items() if k != "le"} == labels)
    assert found and found[-1][0] == float("inf"), found
    return [v for _, v in found]


def request_labels(endpoint: str, model: str = "", version: str = "", protocol: str = "v1") -> dict:
    return {"protocol": protocol, "endpoint": endpoint, "model": model, "version": version}


def keys_file(tmp_path: Path) -> Path:
    return mount_keys(tmp_path / "secret", keys_document({"scoring": ([SCORE], SCORING_KEY),
                                                          "monitoring": ([METRICS], MONITORING_KEY),
                                                          "ops": ([ADMIN], ADMIN_KEY)}))


def score(app: GunicornProcess, model_id: str, headers: dict | None = None, timeout: float = 30) -> requests.Response:
    return requests.post(f"{app.url}/api/v1/score/", params={"model_id": model_id}, json=[SETOSA],
                         headers=headers or {}, timeout=timeout)


# -- summed over workers -----------------------------------------------------------------------

def test_requests_spread_over_workers_are_summed_in_every_scrape(server, tmp_path):
    app = server(MIS_WORKERS="3", MIS_API_KEYS_FILE=str(keys_file(tmp_path)))
    scores = 40
    answers = [score(app, IRIS, SCORING) for _ in range(scores)]  # each on a fresh connection
    assert all(a.status_code == 200 for a in answers)
    version = answers[0].json()["model_version"]

    # The kernel spread them: each worker counts its own in serverinfo, and more than one served.
    served: dict[int, int] = {}

    def every_worker_seen() -> bool:
        info = requests.get(f"{app.url}/api/v1/serverinfo/", headers=SCORING, timeout=10).json()
        served[info["worker_pid"]] = next(m["requests"] for m in info["models"] if m["model_id"] == IRIS)
        return len(served) == 3

    wait_until(every_worker_seen, timeout=30)
    assert sum(served.values()) == scores and sum(1 for n in served.values() if n) >= 2, served

    for _ in range(6):  # whichever worker answers the scrape, it sums all three
        samples = scrape(app.url, MONITORING)
        iris = request_labels("/api/v1/score", IRIS, version)
        assert value(samples, "mis_requests_total", **iris, code="200") == scores
        # Histograms: cumulative buckets, the last (+Inf) equal to _count, equal to the counter.
        latency = buckets(samples, "mis_request_duration_seconds", **iris)
        assert latency == sorted(latency) and latency[-1] == scores
        assert value(samples, "mis_request_duration_seconds_count", **iris) == scores
        assert value(samples, "mis_request_duration_seconds_sum", **iris) > 0
        predict = buckets(samples, "mis_predict_duration_seconds", model=IRIS, version=version)
        assert predict == sorted(predict) and predict[-1] == scores
        assert value(samples, "mis_predict_duration_seconds_count", model=IRIS, version=version) == scores
        assert value(samples, "mis_models_loaded") == 1  # iris (MIS_PRELOAD), once for the server, not per worker
        assert value(samples, "mis_requests_in_flight") == 1  # this scrape itself


def test_names_a_caller_made_up_never_become_label_values(server, tmp_path):
    app = server(MIS_WORKERS="2", MIS_API_KEYS_FILE=str(keys_file(tmp_path)))
    for name in UNKNOWN:
        assert score(app, name, SCORING).status_code == 404
        assert requests.get(f"{app.url}/api/v1/getmodelinfo/{name}", headers=SCORING, timeout=10).status_code == 404
    assert requests.get(f"{app.url}/api/v2/{UNKNOWN[0]}", timeout=10).status_code == 404  # no route at all
    text = requests.get(f"{app.url}/metrics", headers=MONITORING, timeout=10).text
    assert not any(name in text for name in UNKNOWN)
    samples = parse(text)
    assert value(samples, "mis_requests_total", **request_labels("/api/v1/score"), code="404") == 2
    assert value(samples, "mis_requests_total", **request_labels("/api/v1/getmodelinfo/{model_id}"), code="404") == 2
    assert value(samples, "mis_requests_total", **request_labels("unmatched", protocol="other"), code="404") == 1


def test_metrics_need_the_metrics_scope_and_refusals_are_counted(server, tmp_path):
    app = server(MIS_WORKERS="2", MIS_API_KEYS_FILE=str(keys_file(tmp_path)))
    assert requests.get(f"{app.url}/metrics", timeout=10).status_code == 401
    refused = requests.get(f"{app.url}/metrics", headers=SCORING, timeout=10)
    assert refused.status_code == 403 and refused.json()["required_scope"] == METRICS
    assert score(app, IRIS, MONITORING).status_code == 403  # a monitoring key scores nothing
    assert requests.get(f"{app.url}/api/v1/serverinfo/", headers=MONITORING, timeout=10).status_code == 403
    assert requests.get(f"{app.url}/metrics", headers=ADMINISTRATION, timeout=10).status_code == 200
    # What the worker answers itself (refusals before the app runs) is counted too, by route when known.
    too_big = (b"POST /api/v1/score/?model_id=x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               b"Content-Type: application/json\r\nContent-Length: 99999999\r\n\r\n" % SCORING_KEY.encode())
    assert raw_exchange(app.url, too_big).startswith(b"HTTP/1.1 413 ")
    assert raw_exchange(app.url, b"this is not HTTP\r\n\r\n").startswith(b"HTTP/1.1 400 ")

    samples = scrape(app.url, MONITORING)
    assert value(samples, "mis_requests_total", **request_labels("/metrics", protocol="other"), code="401") == 1
    assert value(samples, "mis_requests_total", **request_labels("/metrics", protocol="other"), code="403") == 1
    assert value(samples, "mis_requests_total", **request_labels("/metrics", protocol="other"), code="200") == 1
    assert value(samples, "mis_requests_total", **request_labels("/api/v1/score"), code="403") == 1
    assert value(samples, "mis_requests_total", **request_labels("/api/v1/score"), code="413") == 1
    assert value(samples, "mis_requests_total", **request_labels("unmatched", protocol="other"), code="400") == 1


# -- dead workers ------------------------------------------------------------------------------

def workers_of(master_pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == master_pid:
            children.append(int(stat.parent.name))
    return children


def test_a_dead_workers_requests_leave_the_in_flight_gauge_and_its_quarantine_is_counted(server, tmp_path):
    started = tmp_path / "started"  # the hung model marks each predict it begins
    started.mkdir()
    app = server(MIS_WORKERS="2", MIS_PREDICT_TIMEOUT_S="60", MIS_QUARANTINE_STRIKES="1", HUNG_MARKS=str(started))
    hung = upload(app, tmp_path, SCORE_HANGS_MARKED, "hangs")

    def in_flight(samples) -> float:
        return value(samples, "mis_requests_in_flight")

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        calls = [pool.submit(lambda: requests.post(f"{app.url}/api/v1/score/", params={"model_id": model},
                                                   json=[SETOSA], timeout=60)) for model in (hung, hung)]
        # both predicts begun (so their workers' in-flight records name the model), then counted
        wait_until(lambda: len(list(started.iterdir())) == 2, timeout=20)
        wait_until(lambda: in_flight(scrape(app.url)) == 3, timeout=20)  # two hung, and the scrape itself
        workers = workers_of(app.process.pid)
        assert len(workers) == 2
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        for call in calls:  # nobody is left to answer them
            assert isinstance(call.exception(timeout=30), requests.ConnectionError)

    def settled():
        try:
            samples = scrape(app.url)
        except requests.ConnectionError:  # the replacements are still starting
            return None
        return samples if not set(workers) & set(workers_of(app.process.pid)) else None

    samples = wait_until(settled, timeout=60)
    assert in_flight(samples) == 1  # only this scrape: the dead workers' requests are gone
    # Each worker died holding the hung model alone: the master quarantined it, and counted it once.
    assert value(samples, "mis_model_quarantines_total", model=hung) == 1
    assert score(app, hung, timeout=10).status_code == 503


# -- the model lifecycle, in one process ---------------------------------------------------------

def test_loads_evictions_and_load_failures_are_counted(make_client, tmp_path):
    client = make_client(MIS_MAX_LOADED_MODELS="1")

    def samples():
        result = client.simulate_get("/metrics")
        assert result.status_code == 200
        return parse(result.text)

    before = samples()
    for model_id in (IRIS, WINE):  # loading wine unloads iris from memory...
        assert client.simulate_post(f"/api/v1/loadmodel/{model_id}").status_code == 200
    scored = client.simulate_post("/api/v1/score/", params={"model_id": IRIS}, json=[SETOSA])  # ...and back
    assert scored.status_code == 200
    body, content_type = multipart({"model_name": "broken"}, score_artifact(tmp_path / "broken.zip", SCORE_LOAD_FAILS))
    assert client.simulate_post("/api/v1/uploadmodel/", body=body,
                                headers={"Content-Type": content_type}).status_code == 422
    after = samples()

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("mis_model_evictions_total", model=IRIS) == 1 and delta("mis_model_evictions_total", model=WINE) == 1
    assert delta("mis_model_load_duration_seconds_count", model=IRIS) == 2  # loaded, then loaded again
    assert delta("mis_model_load_duration_seconds_count", model=WINE) == 1
    failed = [l["model"] for n, l, v in after
              if n == "mis_model_load_failures_total" and v > value(before, n, **l)]
    assert len(failed) == 1 and failed[0].startswith("upload-")  # a real (if now forgotten) model, not a name
    assert value(after, "mis_models_loaded") == 2  # wine is still loaded for the server, if not in memory here
    version = scored.json["model_version"]
    assert delta("mis_requests_total", **request_labels("/api/v1/score", IRIS, version), code="200") == 1
