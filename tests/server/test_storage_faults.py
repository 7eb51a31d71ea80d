"""A store that fills up, goes read-only, or is not there yet.

The real faults run gunicorn on 127.0.0.1 with the store on its own 2 MiB tmpfs (mounting needs
root; skipped otherwise): the disk really fills up and really goes read-only. The client must get
JSON (507 full, 503 read-only) and the store must hold nothing half-saved: no uploads/<id>, no
artifacts/<id>, no state.json change, nothing in tmp/. The in-process tests simulate a full disk
at each step of an upload, so the all-or-nothing rule is checked even where mounting is refused.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import subprocess
import time
import types
from pathlib import Path

import pytest
import requests

from server.app import build_registry
from server.backends import local_store as store_module
from server.backends.local_store import local_storage
from server.backends.store_dir import StoreDir, storage_fault, sweep_staging
from server.catalog import ModelInfo
from server.errors import InsufficientStorage, StoreUnavailable
from server.warmup import retry_delays

from ..processes import GunicornProcess, answers_ok, wait_until
from .zips import helper_artifact, score_artifact

KiB = 1024
WORKERS = 2
IRIS, WINE = "demo-sklearn-iris", "demo-lightgbm-wine"
SETOSA = [5.1, 3.5, 1.4, 0.2]


# -- the typed errors -------------------------------------------------------------------------

@pytest.mark.parametrize("code, error", [
    (errno.ENOSPC, InsufficientStorage), (errno.EDQUOT, InsufficientStorage), (errno.EROFS, StoreUnavailable),
    (errno.EACCES, StoreUnavailable), (errno.EIO, StoreUnavailable), (errno.ENOENT, StoreUnavailable)])
def test_storage_faults_become_typed_errors_that_name_no_path(code, error):
    fault = storage_fault(OSError(code, os.strerror(code), "/srv/secret/store/tmp/tmpab12"), "save the upload")
    assert type(fault) is error and fault.status == {InsufficientStorage: 507, StoreUnavailable: 503}[error]
    assert "could not save the upload" in fault.message and os.strerror(code) in fault.message
    assert "/srv" not in json.dumps(fault.to_dict())


def test_other_os_errors_are_not_storage_faults():
    assert storage_fault(OSError(errno.EINVAL, "Invalid argument"), "save the upload") is None


def test_warmup_retries_back_off_to_ten_seconds():
    delays = retry_delays()
    assert [next(delays) for _ in range(8)] == [0.5, 1, 2, 4, 8, 10, 10, 10]


# -- a full disk at each step of an upload, simulated in process --------------------------------

def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/hidden/store/path")


def extract_half(artifact_zip, dest, max_bytes):
    (dest / "score.py").write_text("# half of it")
    raise enospc()


def write_half_an_entry(directory, info):
    (directory / "metadata.json").write_text("{")
    raise enospc()


def dump_half(data, out):
    out.write("{")
    raise enospc()


FULL_DISK_AT = {
    "unpacking": ("extract_artifact", extract_half),
    "saving the upload": ("write_entry", write_half_an_entry),
    "recording it loaded": ("json", types.SimpleNamespace(loads=json.loads, dump=dump_half)),
}


def store_contents(store_dir: Path) -> dict[str, bytes | None]:
    """Every path under the store with its bytes (None for a folder)."""
    return {str(p.relative_to(store_dir)): None if p.is_dir() else p.read_bytes()
            for p in sorted(store_dir.rglob("*")) if p.name != "filler"}


@pytest.mark.parametrize("step", FULL_DISK_AT)
def test_simulated_full_disk_at_each_upload_step_answers_507_and_saves_nothing(
        make_client, make_config, monkeypatch, tmp_path, step):
    client = make_client()
    store_dir = make_config().store_dir
    assert client.simulate_post(f"/api/v1/loadmodel/{IRIS}").status_code == 200
    before, listed = store_contents(store_dir), client.simulate_get("/api/v1/listmodels/").json
    monkeypatch.setattr(store_module, *FULL_DISK_AT[step])

    form = requests.Request("POST", "http://127.0.0.1/", data={"model_name": "four"},
                            files={"file": ("a.zip", helper_artifact(tmp_path / "a.zip", 4).read_bytes())}).prepare()
    answer = client.simulate_post("/api/v1/uploadmodel/", body=form.body, headers=dict(form.headers))
    assert answer.status_code == 507, answer.text
    assert answer.json["code"] == "insufficient_storage" and "could not" in answer.json["error"]
    assert "/hidden" not in answer.text and "Traceback" not in answer.text
    monkeypatch.undo()
    assert store_contents(store_dir) == before
    assert client.simulate_get("/api/v1/listmodels/").json == listed
    other_worker = build_registry(make_config())
    assert other_worker.loaded_ids() == {IRIS}


# -- a worker killed while it saves an upload ---------------------------------------------------
# The faults above raise, and whatever saves an upload cleans up after an exception, so they cannot
# tell an upload staged in tmp/ and renamed into place from one written at uploads/<id> directly.
# A process killed midway runs no cleanup: only staging keeps its half out of uploads/.

def save_and_get_killed_midway(root: str, staged: str) -> None:
    """A worker (in its own process) killed by SIGKILL (the OOM killer, a kubelet) after moving
    the upload's artifact in and before its metadata is written."""
    def killed(directory, info):
        os.kill(os.getpid(), signal.SIGKILL)

    store_module.write_entry = killed
    local_storage(Path(root), max_artifact_bytes=KiB * KiB).uploads.save(
        ModelInfo(id="upload-killed", name="killed", source="upload"), Path(staged))


def test_a_worker_killed_while_saving_an_upload_leaves_nothing_under_uploads(tmp_path):
    directory = StoreDir(tmp_path / "store")
    store = local_storage(directory.root, max_artifact_bytes=KiB * KiB)
    staged = store.workspace.receive(helper_artifact(tmp_path / "a.zip", 1).open("rb"), limit=KiB * KiB)
    worker = multiprocessing.get_context("spawn").Process(target=save_and_get_killed_midway,
                                                          args=(str(directory.root), str(staged)))
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():
        worker.kill()
        worker.join()
    assert worker.exitcode == -signal.SIGKILL, "the worker was to die while saving"
    assert list(directory.uploads.iterdir()) == [], "a half-saved upload is left in uploads/, where no sweep goes"
    assert store.uploads.list() == [] and store.uploads.get("upload-killed") is None
    sweep_staging(directory.root, older_than_s=0)  # what gunicorn's master does at the next start
    assert [p for p in directory.root.rglob("*") if p.is_file() and p.name != "state.lock"] == []


# -- real faults: gunicorn with the store on a small tmpfs --------------------------------------

class Server(GunicornProcess):
    """gunicorn with WORKERS workers on the copied demo catalog; `start` waits until
    /api/v1/health/<probe> answers 200 (`live` for a server that cannot be ready yet)."""

    def __init__(self, data_dir: Path, log: Path, probe: str, **env: str):
        super().__init__(data_dir, log, MIS_WORKERS=str(WORKERS), MIS_DEMO_MODELS="false", **env)
        self.probe = probe

    def _ready(self) -> bool:
        assert self.process.poll() is None, f"gunicorn exited: {self.log_path.read_text()[-3000:]}"
        return answers_ok(f"{self.url}/api/v1/health/{self.probe}")

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, self.url + path, timeout=30, **kwargs)

    def upload(self, archive: Path) -> requests.Response:
        with open(archive, "rb") as body:
            return self.call("POST", "/api/v1/uploadmodel/", files={"file": ("artifact.zip", body)},
                             data={"model_name": "big"})

    def listed(self) -> dict[str, bool]:
        return {m["id"]: m["loaded"] for m in self.call("GET", "/api/v1/listmodels/").json()["models"]}

    def every_worker_has(self, model_id: str) -> None:
        """Poll over fresh connections until each worker has said it has `model_id` loaded."""
        seen: set[int] = set()

        def all_have_it():
            info = self.call("GET", "/api/v1/serverinfo/").json()
            if model_id in {m["model_id"] for m in info["models"]}:
                seen.add(info["worker_pid"])
            return len(seen) == WORKERS

        wait_until(all_have_it, timeout=60)


@pytest.fixture
def servers(data_dir):
    started: list[Server] = []

    def start(probe: str = "ready", **env: str) -> Server:
        server = Server(data_dir, data_dir / "gunicorn.log", probe, **env)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def small_store(data_dir):
    """data_dir/store on its own 2 MiB tmpfs. Request it before `servers`, so that gunicorn is
    stopped before it is unmounted."""
    store_dir = data_dir / "store"
    store_dir.mkdir()
    try:
        mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(store_dir))
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here (it needs root): {getattr(exc, 'stderr', b'') or exc}")
    try:
        yield store_dir
    finally:
        subprocess.run(["umount", str(store_dir)], check=True, timeout=30)


def fill(store_dir: Path, leave: int) -> Path:
    """Fill the tmpfs until it is full, then give back `leave` bytes."""
    filler = store_dir / "filler"
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(bytes(64 * KiB))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def big_artifact(path: Path) -> Path:
    """An artifact of about 600 KiB that does not compress: it needs that much room twice, once as
    the staged zip and once unpacked."""
    return score_artifact(path, "def load_model():\n    return 1\n\ndef predict(data, model=load_model()):\n"
                                "    return {'prediction': [model for _ in data]}\n",
                          **{"model.bin": os.urandom(600 * KiB)})


def assert_fault(answer: requests.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["code"] == code and "could not" in answer.json()["error"]
    assert "Traceback" not in answer.text and "/store" not in answer.text


def settled(server: Server, store_dir: Path, model_id: str) -> None:
    """Every worker has loaded `model_id` and no write is in flight."""
    server.every_worker_has(model_id)
    wait_until(lambda: not any((store_dir / "tmp").iterdir()), timeout=30)


@pytest.mark.parametrize("room", ["none", "for the staged zip only"])
def test_upload_to_a_full_disk_answers_507_and_saves_nothing(small_store, servers, tmp_path, room):
    server = servers(MIS_PRELOAD=IRIS)
    settled(server, small_store, IRIS)
    archive = big_artifact(tmp_path / "big.zip")
    before, listed = store_contents(small_store), server.listed()
    filler = fill(small_store, leave=0 if room == "none" else archive.stat().st_size + 64 * KiB)

    assert_fault(server.upload(archive), 507, "insufficient_storage")
    assert store_contents(small_store) == before  # no uploads/<id>, artifacts/<id>, state change or tmp/ file
    assert server.listed() == listed

    filler.unlink()  # room again: the same upload goes through, whole
    answer = server.upload(archive)
    assert answer.status_code == 201, answer.text
    model_id = answer.json()["model_id"]
    assert server.listed()[model_id] is True
    server.every_worker_has(model_id)
    assert "Traceback" not in server.log_path.read_text()


def test_read_only_store_answers_503_and_idempotent_loads_still_200(small_store, servers, tmp_path):
    server = servers(MIS_PRELOAD=IRIS)
    settled(server, small_store, IRIS)
    before = store_contents(small_store)
    mount("-o", "remount,ro", str(small_store))

    for _ in range(3 * WORKERS):  # fresh connections, so every worker is likely asked
        answer = server.call("POST", f"/api/v1/loadmodel/{IRIS}")
        assert answer.status_code == 200 and answer.json()["status"] == "already_loaded", answer.text
    assert_fault(server.call("POST", f"/api/v1/loadmodel/{WINE}"), 503, "store_unavailable")
    assert_fault(server.upload(helper_artifact(tmp_path / "a.zip", 1)), 503, "store_unavailable")
    assert_fault(server.call("DELETE", f"/api/v1/removemodel/{IRIS}"), 503, "store_unavailable")
    assert server.call("POST", "/api/v1/score/", params={"model_id": IRIS}, json=[SETOSA]).json()["prediction"] == [0]
    assert server.listed()[IRIS] is True
    assert store_contents(small_store) == before

    mount("-o", "remount,rw", str(small_store))
    assert server.call("POST", f"/api/v1/loadmodel/{WINE}").json()["status"] == "loaded"
    assert "Traceback" not in server.log_path.read_text()


def test_readiness_comes_back_by_itself_with_the_store(small_store, servers):
    """A worker that starts while the store is read-only cannot preload (unpacking needs a write):
    not ready, but it keeps trying, and is ready soon after the store is writable again."""
    mount("-o", "remount,ro", str(small_store))  # a fresh, empty store: even its folders are missing
    server = servers(probe="live", MIS_PRELOAD=IRIS)
    wait_until(lambda: "warmup waits for the model store" in server.log_path.read_text(), timeout=60)
    answer = server.call("GET", "/api/v1/health/ready")
    assert answer.status_code == 503 and answer.json()["pending"] == [IRIS], answer.text

    mount("-o", "remount,rw", str(small_store))
    wait_until(lambda: answers_ok(f"{server.url}/api/v1/health/ready"), timeout=30)  # backoff is capped at 10 s
    server.every_worker_has(IRIS)
    assert server.call("POST", "/api/v1/score/", params={"model_id": IRIS}, json=[SETOSA]).json()["prediction"] == [0]


def test_a_restart_sweeps_staging_leftovers(servers, data_dir):
    """What uploads killed midway (worker or machine gone) left in tmp/ goes at the next start."""
    first = servers(MIS_PRELOAD="")
    first.stop()
    tmp = data_dir / "store" / "tmp"
    leftovers = [tmp / "tmpkilled-extraction", tmp / "tmpkilled-upload.zip", tmp / "tmpkilled-state"]
    (leftovers[0] / "sub").mkdir(parents=True)
    (leftovers[0] / "sub" / "model.bin").write_bytes(b"x" * KiB)
    leftovers[1].write_bytes(b"PK" * KiB)
    leftovers[2].write_text('{"loaded": [')
    two_hours_ago = time.time() - 2 * 3600
    for path in [leftovers[0] / "sub" / "model.bin", leftovers[0] / "sub", *leftovers]:
        os.utime(path, (two_hours_ago, two_hours_ago))

    servers(MIS_PRELOAD="")
    assert not any(path.exists() for path in leftovers)
