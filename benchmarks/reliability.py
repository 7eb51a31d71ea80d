"""Reliability measurements, our worker side by side with gunicorn's sync worker on 127.0.0.1.

    .venv/bin/python -m benchmarks.reliability [--rounds 3] [--duration 5]

1. Slow-client flood: 200 connections trickle their headers one byte a second while health and
   1-row scoring are timed on fresh connections (p50 / p99 / failures, 2 s client timeout).
2. Throughput (wrk, 16 connections) of the empty endpoint and of 1-row iris scoring: the worker
   model must not cost the performance issue its targets.
3. Ours only: iris throughput while 4 clients keep calling a model that hangs, against iris alone;
   and the time from a hung model's first call to its quarantine (503).

Each round starts fresh servers; medians over rounds are printed. Stops every process by PID.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import requests

from benchmarks.score_wrk import run_wrk
from server.demo import ensure_demo_catalog
from tests.processes import GunicornProcess
from tests.server.test_worker import SCORE_HANGS, upload

IRIS = "demo-sklearn-iris"
SLOW_CLIENTS = 200
PEERS = {"ours": {}, "sync": {"GUNICORN_CMD_ARGS": "--worker-class sync"}}


def start(tmp: Path, catalog: Path, name: str, **env: str) -> GunicornProcess:
    data = tmp / name
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(catalog, data / "catalog")
    return GunicornProcess(data, tmp / f"{name}.log", MIS_WORKERS="2", MIS_PRELOAD=IRIS, MIS_LOG_LEVEL="warning",
                           **env).start()


def percentile(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def slow_client_flood(server: GunicornProcess, probes: int = 100) -> dict:
    host, port = server.url.removeprefix("http://").split(":")
    sockets, stop = [], threading.Event()
    for _ in range(SLOW_CLIENTS):
        sock = socket.socket()
        sock.settimeout(2)
        try:
            sock.connect((host, int(port)))
            sock.sendall(b"G")
        except OSError:
            pass
        sockets.append(sock)

    def trickle():  # one byte a second to every connection, while the probes run
        while not stop.wait(1.0):
            for sock in sockets:
                try:
                    sock.send(b"E")
                except OSError:
                    pass

    threading.Thread(target=trickle, daemon=True).start()
    latencies, failures = [], 0
    try:
        for i in range(probes):
            started = time.perf_counter()
            try:
                if i % 2:
                    requests.get(f"{server.url}/api/v1/healthcheck/", timeout=2).raise_for_status()
                else:
                    requests.post(f"{server.url}/api/v1/score/", params={"model_id": IRIS}, json=[[5.1, 3.5, 1.4, 0.2]],
                                  timeout=2).raise_for_status()
                latencies.append(1000 * (time.perf_counter() - started))
            except requests.RequestException:
                failures += 1
                if failures >= 5:  # the point is made; do not wait out every timeout
                    break
    finally:
        stop.set()
        for sock in sockets:
            sock.close()
    return {"p50_ms": percentile(latencies, 0.5) if latencies else None,
            "p99_ms": percentile(latencies, 0.99) if latencies else None, "failed": failures,
            "answered": len(latencies)}


def hung_model(server: GunicornProcess, tmp: Path, duration: int) -> dict:
    hung = upload(server, tmp, SCORE_HANGS, "hangs")
    alone = run_wrk(server.url, IRIS, duration, 16, tmp)["rps"]
    stop = threading.Event()

    def keep_calling():
        while not stop.is_set():
            requests.post(f"{server.url}/api/v1/score/", params={"model_id": hung}, json=[[1.0]], timeout=30)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        callers = [pool.submit(keep_calling) for _ in range(4)]
        time.sleep(0.5)  # the hung calls are in flight before wrk starts
        beside = run_wrk(server.url, IRIS, duration, 16, tmp)["rps"]
        stop.set()
        for caller in callers:
            caller.result(timeout=60)
    return {"iris_rps_alone": alone, "iris_rps_beside_hung": beside, "ratio": beside / alone}


def time_to_quarantine(server: GunicornProcess, tmp: Path) -> float:
    hung = upload(server, tmp, SCORE_HANGS, "hangs-q")
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: requests.post(f"{server.url}/api/v1/score/", params={"model_id": hung},
                                              json=[[1.0]], timeout=30), range(3)))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = requests.post(f"{server.url}/api/v1/score/", params={"model_id": hung}, json=[[1.0]], timeout=30)
        if answer.status_code == 503:
            return time.perf_counter() - started
    raise RuntimeError("the hung model was not quarantined within 30 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (Debian package `wrk`)")

    results: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="mis-reliability-") as tmp_name:
        tmp = Path(tmp_name)
        catalog = tmp / "catalog"
        ensure_demo_catalog(catalog)
        for _ in range(args.rounds):
            for peer, env in PEERS.items():
                server = start(tmp, catalog, peer, **env)
                try:
                    results.setdefault(f"{peer} flood", []).append(slow_client_flood(server))
                finally:
                    server.stop()
                server = start(tmp, catalog, peer, **env)
                try:
                    for model, path in (("health", None), ("iris", IRIS)):
                        rps = run_wrk(server.url, path, args.duration, 16, tmp)["rps"] if path else _wrk_get(
                            server.url, args.duration)
                        results.setdefault(f"{peer} {model} req/s", []).append(rps)
                finally:
                    server.stop()
            server = start(tmp, catalog, "hung", MIS_PREDICT_TIMEOUT_S="2", MIS_QUARANTINE_STRIKES="1000")
            try:
                results.setdefault("ours hung", []).append(hung_model(server, tmp, args.duration))
            finally:
                server.stop()
            server = start(tmp, catalog, "quarantine", MIS_PREDICT_TIMEOUT_S="2", MIS_QUARANTINE_STRIKES="3")
            try:
                results.setdefault("ours quarantine s", []).append(time_to_quarantine(server, tmp))
            finally:
                server.stop()

    print(f"median of {args.rounds} rounds; {SLOW_CLIENTS} slow clients; wrk -c16 -d{args.duration}s")
    for name, runs in results.items():
        if isinstance(runs[0], dict):
            med = {k: statistics.median(r[k] for r in runs) if all(r[k] is not None for r in runs) else None
                   for k in runs[0]}
            print(f"{name:24} " + "  ".join(f"{k}={_fmt(v)}" for k, v in med.items()))
        else:
            print(f"{name:24} {_fmt(statistics.median(runs))}")
    for model in ("health", "iris"):
        ours, sync = (statistics.median(results[f"{p} {model} req/s"]) for p in PEERS)
        print(f"{model} throughput ours / sync: {ours / sync:.2f}x")


def _wrk_get(url: str, duration: int) -> float:
    out = subprocess.run(["wrk", "-t1", "-c16", f"-d{duration}s", f"{url}/api/v1/healthcheck/"],
                         capture_output=True, text=True, check=True, timeout=duration + 60).stdout
    return float(out.split("Requests/sec:")[1].split()[0])


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
