import io

import pytest

from server.errors import InvalidArtifact, InvalidModelId, PayloadTooLarge
from server.store import LocalStore

from .zips import helper_artifact, hostile_zips

MiB = 1024 * 1024


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store", max_artifact_bytes=1 * MiB)


def leftovers(store: LocalStore) -> list:
    return [p for d in (store.artifacts, store.tmp, store.uploads) for p in d.iterdir()]


@pytest.mark.parametrize("kind", [
    "not a zip", "no score.py", "no runtime.yaml", "nested score.py", "absolute path", "parent path", "symlink",
    "zip bomb", "lying zip bomb"])
def test_hostile_zip_is_refused_and_leaves_nothing(store, tmp_path, kind):
    archive = hostile_zips(tmp_path / "zips")[kind]
    with pytest.raises((InvalidArtifact, PayloadTooLarge)) as caught:
        store.unpack("model-1", archive)
    assert caught.value.status in (400, 413)
    assert leftovers(store) == []
    assert not (tmp_path / "evil.py").exists() and not (tmp_path.parent / "evil.py").exists()


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
