"""The core without HTTP. Two Registry objects on one data dir stand for two gunicorn workers."""

import json

import pytest

from server.app import build_registry
from server.backends import local_store as store_module
from server.backends.store_dir import StoreDir
from server.core import listing
from server.core import registry as registry_module
from server.errors import (
    BadRequest,
    EnvMismatch,
    InvalidArtifact,
    InvalidPage,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotLoaded,
    ModelPredictFailed,
    ModelQuarantined,
    StoreUnavailable,
)

from ..backends.test_local_store import Clock
from ..zips import SCORE_LOAD_FAILS, SCORE_PREDICT_FAILS, helper_artifact, score_artifact

IRIS = "demo-sklearn-iris"
SETOSA = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture
def workers(make_config):
    config = make_config()
    return build_registry(config), build_registry(config)


@pytest.fixture
def store(make_config):
    """The directory of the store the workers share."""
    return StoreDir(make_config().store_dir)


def test_load_is_idempotent_and_seen_by_the_other_worker(workers):
    first, second = workers
    assert first.load(IRIS)[0] == "loaded"
    assert first.load(IRIS) == ("already_loaded", 0.0)
    assert IRIS in second.loaded_ids()
    assert second.score(IRIS, [SETOSA]).prediction == [0]


def test_removal_is_seen_by_the_other_worker(workers):
    first, second = workers
    first.load(IRIS)
    second.score(IRIS, [SETOSA])
    second.remove(IRIS)
    with pytest.raises(ModelNotLoaded):
        first.score(IRIS, [SETOSA])
    assert first.describe(IRIS).id == IRIS  # the catalog keeps it
    with pytest.raises(ModelNotLoaded):
        first.remove(IRIS)


def test_upload_is_seen_by_the_other_worker_and_removal_deletes_it(workers, store, tmp_path):
    first, second = workers
    staged = first.receive(helper_artifact(tmp_path / "a.zip", 5).open("rb"))
    info = first.upload(staged, "five", "2", "dev")
    assert (info.name, info.version, info.env, info.source) == ("five", "2", "dev", "upload")
    assert second.score(info.id, [[0]]).prediction == [5]
    assert [m.id for m in second.list_models(None, None, 10, None)[0]][0] == info.id
    second.remove(info.id)
    with pytest.raises(ModelNotFound):
        first.score(info.id, [[0]])
    assert list(store.uploads.iterdir()) == [] and list(store.artifacts.iterdir()) == []


@pytest.mark.parametrize("score_py, error", [(SCORE_LOAD_FAILS, ModelLoadFailed)])
def test_upload_whose_model_fails_to_load_leaves_nothing(workers, store, tmp_path, score_py, error):
    first, second = workers
    staged = first.receive(score_artifact(tmp_path / "a.zip", score_py).open("rb"))
    with pytest.raises(error, match=r"failed to load \(RuntimeError\)") as caught:
        first.upload(staged, "broken", "1", None)
    assert caught.value.details["model_id"].startswith("upload-")
    assert "the model file is corrupt" in caught.value.private  # the model's words: for the log and admins only
    assert list(store.uploads.iterdir()) == [] and list(store.artifacts.iterdir()) == []
    assert first.storage.state.loaded_ids() == frozenset()


def test_a_model_that_raises_is_named_and_the_others_keep_serving(workers, tmp_path):
    first, _ = workers
    first.load(IRIS)
    info = first.upload(first.receive(score_artifact(tmp_path / "a.zip", SCORE_PREDICT_FAILS).open("rb")), "x", "1", None)
    with pytest.raises(ModelPredictFailed, match=rf"model '{info.id}' failed to score the input \(ZeroDivisionError\)"):
        first.score(info.id, [[1]])
    assert first.score(IRIS, [SETOSA]).prediction == [0]
    stats = {s["model_id"]: s for s in first.loaded_stats()}
    assert stats[info.id]["errors"] == 1 and stats[IRIS]["requests"] == 1


def test_invalid_artifact_upload_changes_nothing(workers, store, tmp_path):
    first, _ = workers
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    with pytest.raises(InvalidArtifact):
        first.upload(first.receive((tmp_path / "x.zip").open("rb")), "x", "1", None)
    assert list(store.uploads.iterdir()) == [] and list(store.artifacts.iterdir()) == []


def test_unknown_models(workers):
    first, _ = workers
    with pytest.raises(ModelNotFound):
        first.load("no-such-model")
    with pytest.raises(ModelNotFound):
        first.score("no-such-model", [[1]])
    with pytest.raises(ModelNotLoaded):
        first.score(IRIS, [SETOSA])  # in the catalog, not loaded


def test_env_gating_and_promotion_by_metadata_change(make_config, data_dir):
    registry = build_registry(make_config(MIS_ENV="prod", MIS_METADATA_TTL_S="0"))
    registry.load(IRIS)
    with pytest.raises(EnvMismatch) as caught:
        registry.score(IRIS, [SETOSA])
    assert caught.value.status == 403
    assert caught.value.details == {"model_id": IRIS, "server_env": "prod", "model_env": "dev"}
    metadata_file = data_dir / "catalog" / IRIS / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    metadata["custom_metadata"] = [m if m["key"] != "env" else {**m, "value": "prod"} for m in metadata["custom_metadata"]]
    metadata_file.write_text(json.dumps(metadata))
    assert registry.score(IRIS, [SETOSA]).prediction == [0]  # promoted without a reload


def test_env_metadata_is_trusted_for_the_configured_time(make_config, data_dir):
    registry = build_registry(make_config(MIS_ENV="dev", MIS_METADATA_TTL_S="3600"))
    registry.load(IRIS)
    (data_dir / "catalog" / IRIS / "metadata.json").unlink()  # a catalog outage
    assert registry.score(IRIS, [SETOSA]).prediction == [0]


def test_no_gating_without_a_server_env(make_config, tmp_path):
    registry = build_registry(make_config())
    info = registry.upload(registry.receive(helper_artifact(tmp_path / "a.zip", 1).open("rb")), "x", "1", None)
    assert info.env is None and registry.score(info.id, [[0]]).prediction == [1]


def test_listing_pages_through_uploads_then_the_catalog(workers, tmp_path):
    first, _ = workers
    uploads = [first.upload(first.receive(helper_artifact(tmp_path / f"{i}.zip", i).open("rb")), f"u{i}", "1", None)
               for i in range(3)]
    seen, page = [], None
    while True:
        models, page = first.list_models(None, None, 2, page)
        assert len(models) <= 2
        seen += [m.id for m in models]
        if page is None:
            break
    assert seen == sorted(u.id for u in uploads) + ["demo-lightgbm-wine", IRIS, "demo-xgboost-breast-cancer"]
    assert [m.id for m in first.list_models("local", None, 10, None)[0]] == seen[3:]
    assert first.list_models("other-compartment", None, 10, None) == ([], None)
    for bad in ("garbage", "WyJ4Il0=", "WyJ1cGxvYWQiLCAiLTEiXQ=="):
        with pytest.raises(InvalidPage):
            first.list_models(None, None, 2, bad)


def test_page_tokens_carry_any_catalog_token_and_over_long_ones_are_refused():
    token = 'a"b\\c\u00e9\n'
    assert listing._decode_page(listing._encode_page("catalog", token)) == ("catalog", token)
    assert listing._decode_page(listing._encode_page("upload", None)) == ("upload", None)
    with pytest.raises(InvalidPage):  # well formed, but longer than any token the server hands out
        listing._decode_page(listing._encode_page("catalog", "x" * listing.PAGE_TOKEN_MAX))


def test_a_worker_keeps_at_most_its_budget_in_memory_and_reloads_on_demand(make_config, tmp_path):
    from server.app import build_registry

    registry = build_registry(make_config(MIS_MAX_LOADED_MODELS="2", MIS_PRELOAD="demo-sklearn-iris"))
    cancer, wine = "demo-xgboost-breast-cancer", "demo-lightgbm-wine"
    for model_id in (IRIS, cancer, wine):
        registry.load(model_id)
    # iris is pinned (named in MIS_PRELOAD): the least recently used of the others made room.
    assert registry.memory_stats() == {"max_models": 2, "in_memory": 2, "unloaded_here": [cancer], "evictions": 1}
    assert registry.loaded_ids() == {IRIS, cancer, wine}  # still loaded for the server
    row = [[17.99, 10.38, 122.8, 1001.0, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419, 0.07871, 1.095, 0.9053, 8.589,
            153.4, 0.006399, 0.04904, 0.05373, 0.01587, 0.03003, 0.006193, 25.38, 17.33, 184.6, 2019.0, 0.1622,
            0.6656, 0.7119, 0.2654, 0.4601, 0.1189]]
    reloaded = registry.score(cancer, row)
    assert reloaded.load_ms > 0 and registry.memory_stats()["unloaded_here"] == [wine]
    again = registry.score(cancer, row)
    assert again.load_ms == 0 and again.prediction == reloaded.prediction
    assert registry.score(IRIS, [SETOSA]).load_ms == 0  # never unloaded
    registry.remove(wine)
    assert registry.memory_stats()["unloaded_here"] == [] and wine not in registry.loaded_ids()


def test_strikes_quarantine_at_the_configured_count_within_the_configured_window(make_config, monkeypatch):
    registry = build_registry(make_config(MIS_QUARANTINE_STRIKES="4", MIS_QUARANTINE_WINDOW_S="60"))
    registry.load(IRIS)
    clock = Clock()
    monkeypatch.setattr(store_module, "time", clock)
    registry.strike(IRIS, "predict took too long")
    clock.advance(30)
    registry.strike(IRIS, "predict took too long")
    clock.advance(31)  # the first strike is 61 s old: out of the window
    for _ in range(2):
        registry.strike(IRIS, "predict took too long")
    assert registry.quarantine_reason(IRIS) is None, "three strikes in the window, one below MIS_QUARANTINE_STRIKES"
    assert registry.score(IRIS, [SETOSA]).prediction == [0]
    registry.strike(IRIS, "predict took too long")
    assert registry.quarantine_reason(IRIS) == "predict took too long (4 times in 60 s)"
    with pytest.raises(ModelQuarantined):
        registry.score(IRIS, [SETOSA])


def test_the_model_unloaded_for_the_budget_is_the_least_recently_used_not_the_first_loaded(make_config, tmp_path):
    registry = build_registry(make_config(MIS_MAX_LOADED_MODELS="2"))
    first, second = (registry.upload(registry.receive(helper_artifact(tmp_path / f"{i}.zip", i).open("rb")),
                                     f"m{i}", "1", None).id for i in (1, 2))
    assert registry.score(first, [[0]]).prediction == [1]  # first is now the most recently used
    third = registry.upload(registry.receive(helper_artifact(tmp_path / "3.zip", 3).open("rb")), "m3", "1", None).id
    assert registry.memory_stats()["unloaded_here"] == [second]
    assert registry.score(first, [[0]]).load_ms == 0 and registry.score(third, [[0]]).load_ms == 0


def promote_in_catalog(data_dir, model_id: str, env: str) -> None:
    """What `mis promote --catalog` does: the catalog entry's env metadata changes, no server told."""
    metadata_file = data_dir / "catalog" / model_id / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    metadata["custom_metadata"] = [m if m["key"] != "env" else {**m, "value": env} for m in metadata["custom_metadata"]]
    metadata_file.write_text(json.dumps(metadata))


def test_an_env_change_is_seen_once_the_metadata_ttl_has_passed_and_not_before(make_config, data_dir, monkeypatch):
    registry = build_registry(make_config(MIS_ENV="prod", MIS_METADATA_TTL_S="30"))
    registry.load(IRIS)
    clock = Clock()
    monkeypatch.setattr(registry_module, "time", clock)
    with pytest.raises(EnvMismatch):
        registry.score(IRIS, [SETOSA])
    promote_in_catalog(data_dir, IRIS, "prod")
    clock.advance(24)
    with pytest.raises(EnvMismatch):  # what it knew is trusted for 30 s
        registry.score(IRIS, [SETOSA])
    clock.advance(7)
    assert registry.score(IRIS, [SETOSA]).prediction == [0]
    promote_in_catalog(data_dir, IRIS, "dev")  # and back: trusted again for 30 s from the re-read
    clock.advance(24)
    assert registry.score(IRIS, [SETOSA]).prediction == [0]
    clock.advance(7)
    with pytest.raises(EnvMismatch):
        registry.score(IRIS, [SETOSA])


def test_a_malformed_alias_is_a_bad_request_even_while_the_store_is_down(make_config, monkeypatch):
    """The request alone shows it is wrong: no answer about the store (503) stands in for the 400."""
    registry = build_registry(make_config())

    def store_down():
        raise StoreUnavailable("the model store is unavailable")

    monkeypatch.setattr(registry.storage.state, "signature", store_down)
    for alias, spec in [("default", {"versions": []}), ("no spaces", {"versions": {"1": 1}}), ("default", [])]:
        with pytest.raises(BadRequest):
            registry.set_alias(IRIS, alias, spec)
    with pytest.raises(StoreUnavailable):  # a well-formed one needs the loaded versions
        registry.set_alias(IRIS, "default", {"versions": {"1": 1}})
