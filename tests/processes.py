"""Starting, polling and stopping the processes tests and benchmarks run on 127.0.0.1.

Plain Python (no pytest), so `benchmarks/` uses the same code: `python -m benchmarks.score_wrk`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05):
    """Poll `predicate` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def answers_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def stop_group(process: subprocess.Popen, grace_s: float = 0) -> None:
    """SIGTERM (given a grace period), then SIGKILL to the process group, which a process started
    with start_new_session=True leads: no child it left behind (a hung worker) outlives it."""
    if grace_s and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class GunicornProcess:
    """The server as `make run` starts it, on a free loopback port, with MIS_* overrides."""

    def __init__(self, data_dir: Path, log: Path, python: str = sys.executable, **env: str):
        self.url = f"http://127.0.0.1:{free_port()}"
        self.data_dir, self.log_path, self.python, self.env = data_dir, log, python, env
        self.process: subprocess.Popen | None = None

    def start(self) -> "GunicornProcess":
        auth = {} if "MIS_API_KEYS_FILE" in self.env else {"MIS_AUTH": "off"}
        env = {**os.environ, "MIS_BIND": self.url.removeprefix("http://"), "MIS_DATA_DIR": str(self.data_dir),
               **auth, **self.env}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([self.python, "-m", "gunicorn", "-c", "server/gunicorn.conf.py"],
                                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        try:
            wait_until(self._ready, timeout=120, interval=0.2)
        except BaseException:  # a server that never became ready must not outlive the test
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        assert self.process.poll() is None, f"gunicorn exited: {self.log_path.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/health/ready", timeout=5) as response:
                return response.status == 200
        except urllib.error.HTTPError as answer:  # 503 while loading; a failed warmup will not get better
            body = answer.read().decode(errors="replace")
            assert '"status":"failed"' not in body, f"the warmup failed: {body}\n{self.log_path.read_text()[-3000:]}"
            return False
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process, grace_s=30)
