import io
import multiprocessing
import os
import sys
import time
import zipfile
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from server import store as store_module
from server.catalog import ModelInfo
from server.errors import InvalidArtifact, InvalidModelId, PayloadTooLarge
from server.store import LocalStore, sweep_staging

from .zips import bomb_artifact, helper_artifact, hostile_zips, write_zip

MiB = 1024 * 1024


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store", max_artifact_bytes=1 * MiB)


def leftovers(store: LocalStore) -> list:
    return [p for d in (store.artifacts, store.tmp, store.uploads) for p in d.iterdir()]


def escape_targets(store: LocalStore, archive: Path) -> list[Path]:
    """Where the archive's members would land outside the store's staging area if extraction
    followed their paths: staging is a folder in tmp/, so '../../evil.py' lands in the store's
    root and '/tmp/evil.py' at /tmp."""
    if not zipfile.is_zipfile(archive):
        return []
    staging = store.tmp / "staging"
    landing = (Path(os.path.normpath(staging / name)) for name in zipfile.ZipFile(archive).namelist())
    return [path for path in landing if not path.is_relative_to(store.tmp)]


def fingerprint(path: Path) -> tuple | None:
    return (path.stat().st_ino, path.stat().st_mtime_ns) if path.exists() else None


@pytest.mark.parametrize("kind", [
    "not a zip", "no score.py", "no runtime.yaml", "nested score.py", "absolute path", "parent path", "symlink",
    "zip bomb", "lying zip bomb"])
def test_hostile_zip_is_refused_and_leaves_nothing(store, tmp_path, kind):
    archive = hostile_zips(tmp_path / "zips")[kind]
    targets = escape_targets(store, archive)
    if kind in ("absolute path", "parent path"):
        assert targets, "the hostile member must have somewhere outside the staging area to land"
    before = {path: fingerprint(path) for path in targets}
    try:
        with pytest.raises((InvalidArtifact, PayloadTooLarge)) as caught:
            store.unpack("model-1", archive)
        assert caught.value.status in (400, 413)
        assert leftovers(store) == []
        assert {path: fingerprint(path) for path in targets} == before, "a member escaped the staging area"
    finally:
        for path, was in before.items():
            if was is None and path.is_file():  # put back what an escaping member created
                path.unlink()


def lie_about_size(archive: Path, member: str, claimed: int) -> Path:
    """Make the zip's central directory and the member's local header both claim `claimed` bytes
    (uncompressed) for `member`; the compressed data and its CRC stay the real ones."""
    data = bytearray(archive.read_bytes())
    name = member.encode()
    for signature, name_at, size_at in ((b"PK\x03\x04", 30, 22), (b"PK\x01\x02", 46, 24)):
        start = data.find(signature)
        while start != -1:
            if data[start + name_at : start + name_at + len(name)] == name:
                data[start + size_at : start + size_at + 4] = claimed.to_bytes(4, "little")
            start = data.find(signature, start + 4)
    archive.write_bytes(bytes(data))
    return archive


def test_extraction_counts_real_bytes_not_what_the_zip_directory_claims(store, tmp_path, monkeypatch):
    """A member that inflates to 8 MiB while the zip directory says 1 KiB (limit: 1 MiB).

    CPython's reader stops at the size the directory claims (and then fails the CRC), so to see
    what the store itself guarantees, the reader here trusts the compressed data instead, as
    other unzip implementations do: the byte budget counted while extracting must stop it.
    """
    archive = lie_about_size(bomb_artifact(tmp_path / "liar.zip", 8 * MiB), "model.bin", 1024)
    assert zipfile.ZipFile(archive).getinfo("model.bin").file_size == 1024
    trusting_init = zipfile.ZipExtFile.__init__

    def read_to_the_end_of_the_data(self, *args, **kwargs):
        trusting_init(self, *args, **kwargs)
        self._left = sys.maxsize  # ignore the claimed size: inflate everything that is there

    monkeypatch.setattr(zipfile.ZipExtFile, "__init__", read_to_the_end_of_the_data)
    with pytest.raises(PayloadTooLarge, match="expands past the limit of 1048576 bytes"):
        store.unpack("model-1", archive)
    assert leftovers(store) == []


def test_zip_bomb_reports_the_limit(store, tmp_path):
    with pytest.raises(PayloadTooLarge, match="expands past the limit of 1048576 bytes"):
        store.unpack("model-1", hostile_zips(tmp_path / "zips")["zip bomb"])


def test_unpack_extracts_once_and_reuses(store, tmp_path):
    target = store.unpack("model-1", helper_artifact(tmp_path / "a.zip", 1))
    assert (target / "score.py").is_file() and (target / "features.py").read_text() == "VALUE = 1\n"
    again = store.unpack("model-1", helper_artifact(tmp_path / "b.zip", 2))
    assert again == target and (target / "features.py").read_text() == "VALUE = 1\n"
    store.discard_unpacked("model-1")
    assert leftovers(store) == []


def test_model_ids_cannot_escape_the_store(store, tmp_path):
    for bad in ("../x", "a/b", "..", "", ".hidden", "a..b", "x" * 300):
        with pytest.raises(InvalidModelId):
            store.unpack(bad, helper_artifact(tmp_path / "a.zip", 1))
    assert leftovers(store) == []


def test_receive_refuses_more_than_the_limit(store):
    with pytest.raises(PayloadTooLarge):
        store.receive(io.BytesIO(b"x" * 2048), limit=1024)
    assert leftovers(store) == []
    staged = store.receive(io.BytesIO(b"x" * 1024), limit=1024)
    assert staged.read_bytes() == b"x" * 1024


def test_state_is_shared_and_signals_changes(tmp_path):
    first = LocalStore(tmp_path / "store", max_artifact_bytes=MiB)
    second = LocalStore(tmp_path / "store", max_artifact_bytes=MiB)
    assert second.state_signature() == (None, None) and second.loaded_ids() == frozenset()
    first.mark_loaded("a")
    signature = second.state_signature()
    assert signature is not None and second.loaded_ids() == {"a"}
    first.mark_loaded("a")  # no change, no rewrite
    assert second.state_signature() == signature
    first.mark_loaded("b")
    first.mark_removed("a")
    assert second.state_signature() != signature and second.loaded_ids() == {"b"}


WRITERS, ROUNDS = 3, 150


def change_state_concurrently(root: str, writer: int, start: Barrier) -> None:
    """One writer process: loads ROUNDS ids of its own and removes every other one again."""
    store = LocalStore(Path(root), max_artifact_bytes=MiB)
    start.wait(timeout=60)
    for i in range(ROUNDS):
        store.mark_loaded(f"w{writer}-{i}")
        if i % 2:
            store.mark_removed(f"w{writer}-{i}")


def test_concurrent_writers_lose_no_change_and_readers_never_see_half_a_state(store):
    """Worker processes change state.json at once: each change must be made under the lock (or
    one process overwrites another's) and replace the file whole (or a reader parses half)."""
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(WRITERS + 1)
    writers = [spawn.Process(target=change_state_concurrently, args=(str(store.root), w, start))
               for w in range(WRITERS)]
    for process in writers:
        process.start()
    reads, torn = 0, []
    try:
        start.wait(timeout=60)
        deadline = time.monotonic() + 60
        while any(process.is_alive() for process in writers) and time.monotonic() < deadline:
            try:
                store.loaded_ids()
                reads += 1
            except ValueError as exc:  # half a JSON document
                torn.append(str(exc))
    finally:
        for process in writers:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
    assert torn == [], f"{len(torn)} of {reads + len(torn)} reads saw a partial state.json"
    assert [process.exitcode for process in writers] == [0] * WRITERS
    assert reads > 0
    assert store.loaded_ids() == {f"w{w}-{i}" for w in range(WRITERS) for i in range(0, ROUNDS, 2)}


def test_staging_leftovers_are_swept_once_stale(store):
    """A new store (each worker's, at start) sweeps what killed uploads left in tmp/, but not what
    another worker is writing right now; gunicorn's master, before forking, sweeps everything."""
    stale_dir, stale_file = store.tmp / "killed-extraction", store.tmp / "killed-upload.zip"
    (stale_dir / "model").mkdir(parents=True)
    (stale_dir / "model" / "model.bin").write_bytes(b"x" * 100)
    stale_file.write_bytes(b"PK")
    busy_dir = store.tmp / "extraction-in-progress"  # an old folder, but a file in it is being written
    busy_dir.mkdir()
    (busy_dir / "model.bin").write_bytes(b"x")
    (store.tmp / "upload-in-progress.zip").write_bytes(b"PK")
    two_hours_ago = time.time() - 2 * 3600
    for path in (stale_dir / "model" / "model.bin", stale_dir / "model", stale_dir, stale_file, busy_dir):
        os.utime(path, (two_hours_ago, two_hours_ago))

    LocalStore(store.root, max_artifact_bytes=MiB)
    assert sorted(p.name for p in store.tmp.iterdir()) == ["extraction-in-progress", "upload-in-progress.zip"]
    sweep_staging(store.root, older_than_s=0)
    assert list(store.tmp.iterdir()) == []


def test_a_model_is_quarantined_once_however_many_strikes_arrive_after(store):
    assert store.record_strike("m", "timed out", limit=2, window_s=60) is None
    reason = store.record_strike("m", "timed out", limit=2, window_s=60)
    assert reason == "timed out (2 times in 60 s)" and store.quarantined() == {"m": reason}
    # two workers that died of it at once, with one strike enough: one quarantine (one audit line, one count)
    assert store.record_strike("n", "its worker died while it predicted", limit=1, window_s=60) is not None
    assert store.record_strike("n", "its worker died while it predicted", limit=1, window_s=60) is None
    assert store.record_strike("m", "timed out", limit=1, window_s=60) is None
    assert store.quarantined()["m"] == reason
    assert store.release("m") and store.record_strike("m", "timed out", limit=2, window_s=60) is None  # counts anew


class Clock:
    """Stands in for a server module's `time`: time() and monotonic() stand still until the test
    advances them; everything else is the real module's."""

    def __init__(self):
        self.wall, self.mono = time.time(), time.monotonic()

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def __getattr__(self, name):
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch):
    """The store's clock, in the test's hand."""
    clock = Clock()
    monkeypatch.setattr(store_module, "time", clock)
    return clock


def test_strikes_older_than_the_window_do_not_count(store, clock):
    assert store.record_strike("m", "timed out", limit=2, window_s=10) is None
    clock.advance(10.1)  # the first strike is just out of the window: one strike, not two
    assert store.record_strike("m", "timed out", limit=2, window_s=10) is None
    assert store.quarantined() == {}
    clock.advance(9.9)  # the second is still in it
    assert store.record_strike("m", "timed out", limit=2, window_s=10) == "timed out (2 times in 10 s)"
    assert store.quarantined() == {"m": "timed out (2 times in 10 s)"}


def test_receive_refuses_one_byte_over_the_limit_and_keeps_nothing(store):
    with pytest.raises(PayloadTooLarge, match="larger than the limit of 1024 bytes"):
        store.receive(io.BytesIO(b"x" * 1025), limit=1024)
    assert leftovers(store) == []


def artifact_of_size(path: Path, total: int) -> Path:
    """An artifact whose members (score.py, runtime.yaml, two data files, each well under `total`)
    add up to exactly `total` bytes once extracted; zeros, so the zip itself is a few KiB."""
    members = {"score.py": "def load_model():\n    return 1\n", "runtime.yaml": "MODEL_ARTIFACT_VERSION: '3.0'\n"}
    rest = total - sum(len(text) for text in members.values())
    return write_zip(path, {**members, "a.bin": bytes(rest // 2), "b.bin": bytes(rest - rest // 2)})


def test_an_artifact_of_exactly_the_limit_unpacks_and_one_byte_more_is_refused(store, tmp_path):
    """MIS_MAX_ARTIFACT_BYTES bounds the total of every member once extracted, not each member or the zip."""
    exact = artifact_of_size(tmp_path / "exact.zip", MiB)
    assert exact.stat().st_size < MiB // 10
    target = store.unpack("model-1", exact)
    assert sum(p.stat().st_size for p in target.iterdir()) == MiB
    store.discard_unpacked("model-1")
    with pytest.raises(PayloadTooLarge, match="expands past the limit of 1048576 bytes"):
        store.unpack("model-2", artifact_of_size(tmp_path / "over.zip", MiB + 1))
    assert leftovers(store) == []


def test_the_extraction_budget_is_one_for_all_members(store, tmp_path, monkeypatch):
    """Two members of 600 KiB whose zip directory claims 1 KiB each (limit: 1 MiB): each alone fits,
    together they do not. With a reader that trusts the compressed data (as in the test above),
    only the byte budget counted across members stops them."""
    archive = write_zip(tmp_path / "two.zip", {"score.py": "x = 1\n", "runtime.yaml": "a: 1\n",
                                                "a.bin": bytes(600 * 1024), "b.bin": bytes(600 * 1024)})
    for member in ("a.bin", "b.bin"):
        lie_about_size(archive, member, 1024)
    trusting_init = zipfile.ZipExtFile.__init__

    def read_to_the_end_of_the_data(self, *args, **kwargs):
        trusting_init(self, *args, **kwargs)
        self._left = sys.maxsize

    monkeypatch.setattr(zipfile.ZipExtFile, "__init__", read_to_the_end_of_the_data)
    with pytest.raises(PayloadTooLarge, match="expands past the limit of 1048576 bytes"):
        store.unpack("model-1", archive)
    assert leftovers(store) == []


def test_another_worker_never_sees_half_an_upload(store, tmp_path, monkeypatch):
    """An upload is staged in tmp/ and renamed into uploads/ whole. While it is being saved (its
    artifact in, its metadata being written), another worker's store and a look at uploads/ see
    no trace of it; afterwards, all of it."""
    other = LocalStore(store.root, max_artifact_bytes=MiB)
    info = ModelInfo(id="upload-1", name="one", version="1", source="upload")
    seen_midway = []
    real_write_entry = store_module.write_entry

    def look_then_write(directory, entry):
        seen_midway.append((sorted(p.name for p in store.uploads.iterdir()), other.list_uploads(),
                            other.get_upload(info.id), other.upload_artifact(info.id).exists()))
        real_write_entry(directory, entry)

    monkeypatch.setattr(store_module, "write_entry", look_then_write)
    staged = store.receive(helper_artifact(tmp_path / "a.zip", 1).open("rb"), limit=MiB)
    store.save_upload(info, staged)
    assert seen_midway == [([], [], None, False)], "uploads/ held a half-saved entry"
    assert [m.id for m in other.list_uploads()] == [info.id] and other.get_upload(info.id).name == "one"
    assert zipfile.ZipFile(other.upload_artifact(info.id)).read("features.py") == b"VALUE = 1\n"
    assert list(store.tmp.iterdir()) == []
