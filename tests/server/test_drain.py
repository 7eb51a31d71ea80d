"""SIGTERM drains gracefully, against real gunicorn on 127.0.0.1: readiness turns false, new
connections are refused, everything sent before is answered, and the server is gone within the
grace period."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

from falcon import testing

from server.app import build_registry, create_app
from server.warmup import Warmup

from ..processes import wait_until
from .test_metrics import scrape, value
from .test_worker import IRIS, read_until_closed, server, upload  # noqa: F401 (server: the fixture)
from .zips import SCORE_SLOW

GRACE_S = 20
READINESS = ("/api/v1/health/ready", "/v2/health/ready")
REFUSED_WITHIN_S = 2.0


def request(path: str, body: bytes = b"", close: bool = False) -> bytes:
    head = [f"{'POST' if body else 'GET'} {path} HTTP/1.1", "Host: x", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *(["Connection: close"] if close else [])]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def parse(raw: bytes) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of one answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ", 2)[1]), headers, json.loads(body[:int(headers["Content-Length"])])


def read_answer(sock: socket.socket) -> bytes:
    """One answer read by its Content-Length, leaving the connection open."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += sock.recv(65536)
    head, _, body = raw.partition(b"\r\n\r\n")
    length = int(next(line.split(b": ")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


class FastStream(threading.Thread):
    """1-row scores one after another, each on a fresh connection, until a connection is refused."""

    def __init__(self, address: tuple[str, int], limit: int = 2000):
        super().__init__(daemon=True)
        self.address, self.limit = address, limit
        self.outcomes: list[tuple[float, object]] = []  # (when the request was sent, status or what failed)

    def run(self) -> None:
        body = json.dumps([[5.1, 3.5, 1.4, 0.2]]).encode()
        for _ in range(self.limit):
            try:
                sock = socket.create_connection(self.address, timeout=10)
            except OSError as exc:  # nothing was sent: a client may safely go elsewhere
                self.outcomes.append((time.monotonic(), type(exc).__name__))
                return
            with sock:
                sock.sendall(request(f"/api/v1/score/?model_id={IRIS}", body, close=True))
                sent = time.monotonic()
                try:
                    raw = read_until_closed(sock, timeout=10)
                    self.outcomes.append((sent, parse(raw)[0] if raw else "no answer"))
                except (OSError, ValueError, IndexError) as exc:
                    self.outcomes.append((sent, repr(exc)))


def test_sigterm_answers_what_was_sent_refuses_what_comes_after_and_exits_in_time(server, tmp_path):
    app = server(MIS_WORKERS="2", MIS_GRACEFUL_TIMEOUT_S=str(GRACE_S))
    slow = upload(app, tmp_path, SCORE_SLOW, "slow")
    host, port = app.url.removeprefix("http://").split(":")
    address = (host, int(port))

    idle = socket.create_connection(address, timeout=10)  # a kept-alive connection, idle at SIGTERM
    idle.sendall(request("/api/v1/healthcheck/"))
    assert parse(read_answer(idle))[0] == 200
    stream = FastStream(address)
    stream.start()
    wait_until(lambda: len(stream.outcomes) >= 20, timeout=30)
    fresh = socket.create_connection(address, timeout=10)  # connected, its request not sent yet
    slow_calls = []
    for _ in range(4):  # kept-alive connections whose requests are in progress at SIGTERM
        sock = socket.create_connection(address, timeout=15)
        sock.sendall(request(f"/api/v1/score/?model_id={slow}", b"[[1]]"))
        slow_calls.append(sock)
    wait_until(lambda: value(scrape(app.url), "mis_requests_in_flight") == 5, timeout=10)  # 4, and the scrape

    terminated = time.monotonic()
    app.process.send_signal(signal.SIGTERM)

    idle.settimeout(1)  # well before the slow requests end: the workers are still draining
    assert idle.recv(1) == b""  # closed at once (not reset, not after the keep-alive timeout)
    stream.join(timeout=30)
    assert not stream.is_alive()
    before = [outcome for sent, outcome in stream.outcomes if sent < terminated]
    after = [(sent - terminated, outcome) for sent, outcome in stream.outcomes if sent >= terminated]
    assert len(before) >= 20 and set(before) == {200}, before
    refused_after, last = after[-1]
    assert last == "ConnectionRefusedError" and refused_after < REFUSED_WITHIN_S, after
    assert all(outcome in (200, 503) for _, outcome in after[:-1]), after

    for sock in slow_calls:  # every request in progress finished, and its connection was let go
        status, headers, body = parse(read_until_closed(sock, timeout=15))
        assert (status, body["prediction"], headers["Connection"]) == (200, [1], "close")
    # A connection made before SIGTERM may still send its first request (within the header timeout),
    # even once everything else is done, and hears that readiness turned false.
    time.sleep(0.5)  # the scenario, not a wait for readiness: this client is slower than the rest
    fresh.sendall(request("/api/v1/health/ready"))
    status, headers, body = parse(read_until_closed(fresh, timeout=10))
    assert (status, body["status"], headers["Connection"]) == (503, "draining", "close")

    assert app.process.wait(timeout=GRACE_S) == 0
    assert time.monotonic() - terminated < GRACE_S
    for sock in [idle, fresh, *slow_calls]:
        sock.close()
    log = app.log_path.read_text()
    assert "WORKER TIMEOUT" not in log and "SIGKILL" not in log  # none had to be killed


def test_the_drain_hook_turns_both_readiness_routes_false(make_config):
    config = make_config()
    registry = build_registry(config)
    warmup = Warmup(registry, config.preload)
    warmup.run()
    client = testing.TestClient(create_app(config, registry, warmup))
    assert [client.simulate_get(path).status_code for path in READINESS] == [200, 200]
    client.app.on_drain()  # what the worker calls first on SIGTERM
    v1, v2 = (client.simulate_get(path) for path in READINESS)
    assert (v1.status_code, v1.json["status"]) == (503, "draining")
    assert (v2.status_code, v2.json["ready"]) == (503, False)
