"""The /docs page renders in a real (headless) browser with no internet.

A bare Falcon app with only the docs routes is served on 127.0.0.1; Debian's chromium loads
/docs, Swagger UI fetches /api/v1/openapi.json and renders the operations.  The screenshot is
also copied to var/docs-screenshot.png for a human to look at.
"""

from __future__ import annotations

import os
import shutil
import socketserver
import struct
import subprocess
import threading
import time
import zlib
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import falcon
import pytest

from server.openapi import add_docs_routes

from ..processes import answers_ok, stop_group, wait_until

CHROMIUM = "/usr/bin/chromium"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 60
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"{CHROMIUM} not installed (Debian package 'chromium'): cannot render the docs page",
)


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _RecordingHandler(WSGIRequestHandler):
    requested: list[str] = []

    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        self.requested.append(self.path)


@pytest.fixture(scope="module")
def docs_server():
    app = falcon.App()
    add_docs_routes(app, "1.2.3")
    _RecordingHandler.requested = []
    server = make_server("127.0.0.1", 0, app, server_class=_ThreadingServer,
                         handler_class=_RecordingHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{server.server_port}"
    wait_until(lambda: answers_ok(f"{base_url}/docs"), timeout=10)
    try:
        yield base_url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _chromium(tmp_path: Path, *args: str) -> str:
    """Run chromium to completion (stopped by its process group on timeout); return stdout."""
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    command = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        stdout, stderr = "", "timed out"
    finally:
        stop_group(process)
    assert process.returncode == 0 or stdout, f"chromium failed: {stderr[-2000:]}"
    return stdout


def _rendered_dom(tmp_path: Path, url: str, *needles: str) -> str:
    """Dump the DOM until Swagger UI has rendered every needle, with a growing time budget."""
    deadline = time.monotonic() + DEADLINE_S
    budget_ms = 5000
    while True:
        dom = _chromium(tmp_path, f"--virtual-time-budget={budget_ms}", "--dump-dom", url)
        if all(needle in dom for needle in needles) or time.monotonic() > deadline:
            return dom
        budget_ms *= 2


def _png_size_and_colours(path: Path) -> tuple[int, int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    idat, offset = b"", 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        if data[offset + 4:offset + 8] == b"IDAT":
            idat += data[offset + 8:offset + 8 + length]
        offset += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def test_swagger_ui_renders_the_operations(docs_server, tmp_path):
    needles = ("/api/v1/score/", "/api/v1/uploadmodel/", "/api/v1/listmodels/",
               "/api/v1/health/ready", "Model Inference Server")
    dom = _rendered_dom(tmp_path, f"{docs_server}/docs", *needles)
    missing = [needle for needle in needles if needle not in dom]
    assert not missing, f"not rendered: {missing}\n{dom[:2000]}"
    assert "opblock" in dom  # Swagger UI's operation blocks, not just the raw document
    assert 'class="btn authorize' in dom  # the bearer scheme gives the page its Authorize button
    assert "/api/v1/openapi.json" in _RecordingHandler.requested
    assert "/docs/assets/swagger-ui-bundle.js" in _RecordingHandler.requested


def test_score_operation_expands_with_examples_and_errors(docs_server, tmp_path):
    # deepLinking: the fragment opens the score operation, so its body and responses render.
    needles = ("Several rows (2-D list)", "env_mismatch", "payload_too_large")
    dom = _rendered_dom(tmp_path, f"{docs_server}/docs#/scoring/score", *needles)
    missing = [needle for needle in needles if needle not in dom]
    assert not missing, f"not rendered: {missing}"
    assert "resolver error" not in dom.lower()


def test_docs_page_screenshot(docs_server, tmp_path):
    shot = tmp_path / "docs.png"
    _chromium(tmp_path, "--virtual-time-budget=10000", f"--screenshot={shot}",
              "--window-size=1280,2000", f"{docs_server}/docs")
    assert shot.is_file(), "chromium wrote no screenshot"
    width, height, distinct_bytes = _png_size_and_colours(shot)
    assert (width, height) == (1280, 2000)
    assert shot.stat().st_size > 20_000 and distinct_bytes > 50, "screenshot looks blank"
    keep = REPO_ROOT / "var" / "docs-screenshot.png"  # var/ is git-ignored
    keep.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, keep)


def test_v2_infer_operation_expands_with_its_demo_examples(docs_server, tmp_path):
    # The V2 schemas are recursive (TensorData) and shared by $ref: Swagger UI must resolve them all.
    needles = ("Iris (scikit-learn): two rows of 4 features", "Inference-Header-Content-Length",
               "application/octet-stream", "model_not_loaded")
    dom = _rendered_dom(tmp_path, f"{docs_server}/docs#/v2-inference/modelInferV2", *needles)
    missing = [needle for needle in needles if needle not in dom]
    assert not missing, f"not rendered: {missing}"
    assert "resolver error" not in dom.lower()
