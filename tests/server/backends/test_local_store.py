import io
import multiprocessing
import os
import sys
import time
import zipfile
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from server.backends import local_store as store_module
from server.backends.local_store import LocalQuarantine, LocalState, local_storage
from server.backends.store_dir import StoreDir, sweep_staging
from server.catalog import ModelInfo
from server.errors import InvalidArtifact, InvalidModelId, PayloadTooLarge

from ..zips import HOSTILE_KINDS, LONG_NAME, bomb_artifact, helper_artifact, hostile_zips, write_zip

MiB = 1024 * 1024


@pytest.fixture
def directory(tmp_path):
    return StoreDir(tmp_path / "store")


@pytest.fixture
def store(directory):
    return local_storage(directory.root, max_artifact_bytes=1 * MiB)


@pytest.fixture
def quarantine(store):
    return store.quarantine


def leftovers(directory: StoreDir) -> list:
    return [p for d in (directory.artifacts, directory.tmp, directory.uploads) for p in d.iterdir()]


def escape_targets(directory: StoreDir, archive: Path) -> list[Path]:
    """Where the archive's members would land outside the store's staging area if extraction
    followed their paths: staging is a folder in tmp/, so '../../evil.py' lands in the store's
    root and '/tmp/evil.py' at /tmp."""
    try:
        names = zipfile.ZipFile(archive).namelist()
    except (zipfile.BadZipFile, UnicodeDecodeError):  # nothing could land anywhere
        return []
    staging = directory.tmp / "staging"
    landing = (Path(os.path.normpath(staging / name)) for name in names)
    return [path for path in landing if not path.is_relative_to(directory.tmp)]


def fingerprint(path: Path) -> tuple | None:
    return (path.stat().st_ino, path.stat().st_mtime_ns) if path.exists() else None


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_hostile_zip_is_refused_and_leaves_nothing(store, directory, tmp_path, kind):
    archive = hostile_zips(tmp_path / "zips")[kind]
    targets = escape_targets(directory, archive)
    if kind in ("absolute path", "parent path"):
        assert targets, "the hostile member must have somewhere outside the staging area to land"
    before = {path: fingerprint(path) for path in targets}
    try:
        with pytest.raises((InvalidArtifact, PayloadTooLarge)) as caught:
            store.workspace.unpack("model-1", archive)
        assert caught.value.status in (400, 413)
        assert leftovers(directory) == []
        assert {path: fingerprint(path) for path in targets} == before, "a member escaped the staging area"
    finally:
        for path, was in before.items():
            if was is None and path.is_file():  # put back what an escaping member created
                path.unlink()


@pytest.mark.parametrize("kind, member, fragment", [
    ("file and folder", "x", "a file that 'x/y' needs as a folder"),
    ("folder then file", "x", "a file that 'x/y' needs as a folder"),
    ("name too long", LONG_NAME[:80] + "...", "a member name longer than the file system allows"),
], ids=["file and folder", "folder then file", "name too long"])
def test_a_member_that_cannot_be_written_is_named(store, directory, tmp_path, kind, member, fragment):
    with pytest.raises(InvalidArtifact, match=fragment) as caught:
        store.workspace.unpack("model-1", hostile_zips(tmp_path / "zips")[kind])
    assert caught.value.details["member"] == member and member in caught.value.message
    assert leftovers(directory) == []


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


def test_extraction_counts_real_bytes_not_what_the_zip_directory_claims(store, directory, tmp_path, monkeypatch):
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
        store.workspace.unpack("model-1", archive)
    assert leftovers(directory) == []


def test_zip_bomb_reports_the_limit(store, tmp_path):
    with pytest.raises(PayloadTooLarge, match="expands past the limit of 1048576 bytes"):
        store.workspace.unpack("model-1", hostile_zips(tmp_path / "zips")["zip bomb"])


def test_unpack_extracts_once_and_reuses(store, directory, tmp_path):
    target = store.workspace.unpack("model-1", helper_artifact(tmp_path / "a.zip", 1))
    assert (target / "score.py").is_file() and (target / "features.py").read_text() == "VALUE = 1\n"
    again = store.workspace.unpack("model-1", helper_artifact(tmp_path / "b.zip", 2))
    assert again == target and (target / "features.py").read_text() == "VALUE = 1\n"
    store.workspace.discard_unpacked("model-1")
    assert leftovers(directory) == []


def test_model_ids_cannot_escape_the_store(store, directory, tmp_path):
    for bad in ("../x", "a/b", "..", "", ".hidden", "a..b", "x" * 300):
        with pytest.raises(InvalidModelId):
            store.workspace.unpack(bad, helper_artifact(tmp_path / "a.zip", 1))
    assert leftovers(directory) == []


def test_receive_refuses_more_than_the_limit(store, directory):
    with pytest.raises(PayloadTooLarge):
        store.workspace.receive(io.BytesIO(b"x" * 2048), limit=1024)
    assert leftovers(directory) == []
    staged = store.workspace.receive(io.BytesIO(b"x" * 1024), limit=1024)
    assert staged.read_bytes() == b"x" * 1024


def test_state_is_shared_and_signals_changes(tmp_path):
    first = local_storage(tmp_path / "store", max_artifact_bytes=MiB).state
    second = LocalState(StoreDir(tmp_path / "store"))
    quarantine = LocalQuarantine(StoreDir(tmp_path / "store"))
    assert (second.signature(), quarantine.signature()) == (None, None) and second.loaded_ids() == frozenset()
    first.mark_loaded("a")
    signature = second.signature()
    assert signature is not None and second.loaded_ids() == {"a"}
    first.mark_loaded("a")  # no change, no rewrite
    assert second.signature() == signature
    first.mark_loaded("b")
    first.mark_removed("a")
    assert second.signature() != signature and second.loaded_ids() == {"b"}


WRITERS, ROUNDS = 3, 150


def change_state_concurrently(root: str, writer: int, start: Barrier) -> None:
    """One writer process: loads ROUNDS ids of its own and removes every other one again."""
    store = local_storage(Path(root), max_artifact_bytes=MiB).state
    start.wait(timeout=60)
    for i in range(ROUNDS):
        store.mark_loaded(f"w{writer}-{i}")
        if i % 2:
            store.mark_removed(f"w{writer}-{i}")


def test_concurrent_writers_lose_no_change_and_readers_never_see_half_a_state(store, directory):
    """Worker processes change state.json at once: each change must be made under the lock (or
    one process overwrites another's) and replace the file whole (or a reader parses half)."""
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(WRITERS + 1)
    writers = [spawn.Process(target=change_state_concurrently, args=(str(directory.root), w, start))
               for w in range(WRITERS)]
    for process in writers:
        process.start()
    reads, torn = 0, []
    try:
        start.wait(timeout=60)
        deadline = time.monotonic() + 60
        while any(process.is_alive() for process in writers) and time.monotonic() < deadline:
            try:
                store.state.loaded_ids()
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
    assert store.state.loaded_ids() == {f"w{w}-{i}" for w in range(WRITERS) for i in range(0, ROUNDS, 2)}


def test_staging_leftovers_are_swept_once_stale(store, directory):
    """A new store (each worker's, at start) sweeps what killed uploads left in tmp/, but not what
    another worker is writing right now; gunicorn's master, before forking, sweeps everything."""
    stale_dir, stale_file = directory.tmp / "killed-extraction", directory.tmp / "killed-upload.zip"
    (stale_dir / "model").mkdir(parents=True)
    (stale_dir / "model" / "model.bin").write_bytes(b"x" * 100)
    stale_file.write_bytes(b"PK")
    busy_dir = directory.tmp / "extraction-in-progress"  # an old folder, but a file in it is being written
    busy_dir.mkdir()
    (busy_dir / "model.bin").write_bytes(b"x")
    (directory.tmp / "upload-in-progress.zip").write_bytes(b"PK")
    two_hours_ago = time.time() - 2 * 3600
    for path in (stale_dir / "model" / "model.bin", stale_dir / "model", stale_dir, stale_file, busy_dir):
        os.utime(path, (two_hours_ago, two_hours_ago))

    local_storage(directory.root, max_artifact_bytes=MiB)
    assert sorted(p.name for p in directory.tmp.iterdir()) == ["extraction-in-progress", "upload-in-progress.zip"]
    sweep_staging(directory.root, older_than_s=0)
    assert list(directory.tmp.iterdir()) == []


def test_a_model_is_quarantined_once_however_many_strikes_arrive_after(quarantine):
    assert quarantine.record_strike("m", "timed out", limit=2, window_s=60) is None
    reason = quarantine.record_strike("m", "timed out", limit=2, window_s=60)
    assert reason == "timed out (2 times in 60 s)" and quarantine.quarantined() == {"m": reason}
    # two workers that died of it at once, with one strike enough: one quarantine (one audit line, one count)
    assert quarantine.record_strike("n", "its worker died while it predicted", limit=1, window_s=60) is not None
    assert quarantine.record_strike("n", "its worker died while it predicted", limit=1, window_s=60) is None
    assert quarantine.record_strike("m", "timed out", limit=1, window_s=60) is None
    assert quarantine.quarantined()["m"] == reason
    # released, it counts anew
    assert quarantine.release("m") and quarantine.record_strike("m", "timed out", limit=2, window_s=60) is None



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


def test_strikes_older_than_the_window_do_not_count(quarantine, clock):
    assert quarantine.record_strike("m", "timed out", limit=2, window_s=10) is None
    clock.advance(10.1)  # the first strike is just out of the window: one strike, not two
    assert quarantine.record_strike("m", "timed out", limit=2, window_s=10) is None
    assert quarantine.quarantined() == {}
    clock.advance(9.9)  # the second is still in it
    assert quarantine.record_strike("m", "timed out", limit=2, window_s=10) == "timed out (2 times in 10 s)"
    assert quarantine.quarantined() == {"m": "timed out (2 times in 10 s)"}


def test_receive_refuses_one_byte_over_the_limit_and_keeps_nothing(store, directory):
    with pytest.raises(PayloadTooLarge, match="larger than the limit of 1024 bytes"):
        store.workspace.receive(io.BytesIO(b"x" * 1025), limit=1024)
    assert leftovers(directory) == []


def artifact_of_size(path: Path, total: int) -> Path:
    """An artifact whose members (score.py, runtime.yaml, two data files, each well under `total`)
    add up to exactly `total` bytes once extracted; zeros, so the zip itself is a few KiB."""
    members = {"score.py": "def load_model():\n    return 1\n", "runtime.yaml": "MODEL_ARTIFACT_VERSION: '3.0'\n"}
    rest = total - sum(len(text) for text in members.values())
    return write_zip(path, {**members, "a.bin": bytes(rest // 2), "b.bin": bytes(rest - rest // 2)})


def test_an_artifact_of_exactly_the_limit_unpacks_and_one_byte_more_is_refused(store, directory, tmp_path):
    """MIS_MAX_ARTIFACT_BYTES bounds the total of every member once extracted, not each member or the zip."""
    exact = artifact_of_size(tmp_path / "exact.zip", MiB)
    assert exact.stat().st_size < MiB // 10
    target = store.workspace.unpack("model-1", exact)
    assert sum(p.stat().st_size for p in target.iterdir()) == MiB
    store.workspace.discard_unpacked("model-1")
    with pytest.raises(PayloadTooLarge, match="expands past the limit of 1048576 bytes"):
        store.workspace.unpack("model-2", artifact_of_size(tmp_path / "over.zip", MiB + 1))
    assert leftovers(directory) == []


def test_the_extraction_budget_is_one_for_all_members(store, directory, tmp_path, monkeypatch):
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
        store.workspace.unpack("model-1", archive)
    assert leftovers(directory) == []


def test_another_worker_never_sees_half_an_upload(store, directory, tmp_path, monkeypatch):
    """An upload is staged in tmp/ and renamed into uploads/ whole. While it is being saved (its
    artifact in, its metadata being written), another worker's store and a look at uploads/ see
    no trace of it; afterwards, all of it."""
    other = local_storage(directory.root, max_artifact_bytes=MiB).uploads
    info = ModelInfo(id="upload-1", name="one", version="1", source="upload")
    seen_midway = []
    real_write_entry = store_module.write_entry

    def look_then_write(entry_dir, entry):
        seen_midway.append((sorted(p.name for p in directory.uploads.iterdir()), other.list(),
                            other.get(info.id), other.artifact(info.id).exists()))
        real_write_entry(entry_dir, entry)

    monkeypatch.setattr(store_module, "write_entry", look_then_write)
    staged = store.workspace.receive(helper_artifact(tmp_path / "a.zip", 1).open("rb"), limit=MiB)
    store.uploads.save(info, staged)
    assert seen_midway == [([], [], None, False)], "uploads/ held a half-saved entry"
    assert [m.id for m in other.list()] == [info.id] and other.get(info.id).name == "one"
    assert zipfile.ZipFile(other.artifact(info.id)).read("features.py") == b"VALUE = 1\n"
    assert list(directory.tmp.iterdir()) == []
