"""The Object Storage store backend (MIS_STORE=oci), in process, against the emulator with the real
`oci` SDK: two replicas (separate data directories) sharing one bucket, conditional writes that
lose nothing, uploads that appear whole or not at all, and a hot path that never calls the bucket."""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import replace

import pytest

from server.app import build_backends
from server.catalog import ModelInfo
from server.errors import PayloadTooLarge

from ..processes import wait_until
from .conftest import BUCKET
from .protocols.test_v1 import multipart
from .zips import helper_artifact

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2]]


@pytest.fixture
def replicas(make_client, oci_env, tmp_path):
    """Two servers' apps, each on its own data directory, sharing the emulated catalog and bucket."""
    def start(**extra):
        clients = []
        for name in ("a", "b"):
            clients.append(make_client(**{**oci_env, "MIS_DATA_DIR": str(tmp_path / name), **extra}))
        return clients
    return start


@pytest.fixture
def artifact(tmp_path):
    return helper_artifact(tmp_path / "upload.zip", 7).read_bytes()


def upload(client, artifact: bytes, name="churn", version="1"):
    body, content_type = multipart({"model_name": name, "version": version}, artifact)
    return client.simulate_post("/api/v1/uploadmodel", body=body, headers={"Content-Type": content_type})


def test_an_upload_on_one_replica_is_listed_and_scored_on_the_other(replicas, oci_emulator, catalog_models, artifact):
    a, b = replicas()
    answer = upload(a, artifact)
    assert answer.status_code == 201, answer.json
    model_id = answer.json["model_id"]
    names = set(oci_emulator.bucket(BUCKET))
    assert {f"uploads/{model_id}/artifact.zip", f"uploads/{model_id}/metadata.json", "state.json"} <= names
    assert model_id in {m["id"] for m in b.simulate_get("/api/v1/listmodels").json["models"]}
    scored = wait_until(lambda: b.simulate_post("/api/v1/score", params={"model_id": model_id}, json=IRIS_ROWS).status_code == 200,
                        timeout=5)
    assert scored
    assert b.simulate_delete(f"/api/v1/removemodel/{model_id}").status_code == 200
    assert not [n for n in oci_emulator.bucket(BUCKET) if n.startswith(f"uploads/{model_id}")]
    wait_until(lambda: a.simulate_post("/api/v1/score", params={"model_id": model_id}, json=IRIS_ROWS).status_code == 404,
               timeout=5)
    assert model_id not in {m["id"] for m in a.simulate_get("/api/v1/listmodels").json["models"]}


def test_an_upload_is_visible_only_once_complete_and_a_failed_one_leaves_nothing(replicas, oci_emulator, artifact):
    a, b = replicas()
    oci_emulator.fail("PUT", "metadata.json", 500, count=3)  # the artifact is in, its metadata never comes
    answer = upload(a, artifact)
    assert answer.status_code == 503 and answer.json["service"] == "OCI Object Storage"
    assert not [n for n in oci_emulator.bucket(BUCKET) if n.startswith("uploads/")]
    assert b.simulate_get("/api/v1/listmodels").json["models"] == []


def test_concurrent_writes_of_the_shared_state_lose_nothing(make_config, oci_env, tmp_path, oci_emulator):
    stores = [build_backends(make_config(**oci_env, MIS_DATA_DIR=str(tmp_path / n)))[1].state for n in "ab"]
    ids = {store: [f"model-{n}-{i}" for i in range(12)] for n, store in zip("ab", stores)}

    def mark_all(store):
        for model_id in ids[store]:
            store.mark_loaded(model_id)

    threads = [threading.Thread(target=mark_all, args=(store,)) for store in stores for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    state = json.loads(oci_emulator.bucket(BUCKET)["state.json"].data)
    assert set(state["loaded"]) == {i for store in stores for i in ids[store]}
    assert oci_emulator.requests("PUT", "state.json") > 24 or any(
        status == 412 for m, p, status in oci_emulator.log if m == "PUT"), "the writers never collided"
    stores[0].set_alias("churn", "default", {"versions": {"1": 1}, "shadow": None})
    stores[1].mark_removed("model-a-0")
    state = json.loads(oci_emulator.bucket(BUCKET)["state.json"].data)
    assert "model-a-0" not in state["loaded"] and state["aliases"]["churn"]["default"]["versions"] == {"1": 1}


def test_every_replica_sees_a_state_change_within_the_state_ttl_without_asking_the_bucket_per_request(
        make_config, oci_env, tmp_path, oci_emulator):
    a, b = (build_backends(make_config(**oci_env, MIS_DATA_DIR=str(tmp_path / n)))[1].state for n in "ab")
    before = b.signature()
    a.mark_loaded("model-1")
    changed = time.monotonic()
    wait_until(lambda: b.signature() != before, timeout=5, interval=0.01)
    took = time.monotonic() - changed
    print(f"a load on one replica reached the other's state after {took:.2f} s (MIS_STATE_TTL_S=0.5)")
    assert took <= 0.5 + 0.3 and b.loaded_ids() == {"model-1"}
    requests_before = len(oci_emulator.log)
    started = time.monotonic()
    for _ in range(20_000):
        b.signature()
    elapsed = time.monotonic() - started
    # Only the pollers' rounds (one HEAD each per TTL) reach the bucket, however many requests ask.
    assert len(oci_emulator.log) - requests_before <= 2 * (elapsed / 0.5 + 1)
    print(f"state.signature(): {1e6 * elapsed / 20_000:.2f} us per call")


def test_a_change_is_seen_within_a_2_s_state_ttl_by_at_most_a_round_trip(make_config, oci_env, tmp_path):
    """The test above allows 0.3 s over a 0.5 s TTL, room for a round trip; over 2 s that slack
    is small, so a poller that waits longer than MIS_STATE_TTL_S between rounds shows."""
    ttl = 2.0
    a, b = (build_backends(make_config(**{**oci_env, "MIS_STATE_TTL_S": str(ttl)}, MIS_DATA_DIR=str(tmp_path / n)))[1].state
            for n in "ab")
    before = b.signature()  # starts b's poller: the change below comes just after its first wait began
    a.mark_loaded("model-1")
    changed = time.monotonic()
    wait_until(lambda: b.signature() != before, timeout=3 * ttl, interval=0.01)
    took = time.monotonic() - changed
    print(f"a load on one replica reached the other's state after {took:.2f} s (MIS_STATE_TTL_S={ttl})")
    assert took <= ttl + 0.3, f"seen after {took:.2f} s with MIS_STATE_TTL_S={ttl}"
    assert b.loaded_ids() == {"model-1"}


def test_an_uploads_artifact_over_the_limit_in_the_bucket_is_refused_and_leaves_nothing(
        make_config, oci_env, tmp_path, oci_emulator, artifact):
    """What a replica fetches from the bucket is held to MIS_MAX_ARTIFACT_BYTES as the catalog's
    downloads are: an object grown there (written by another tool, or a replica with a larger
    limit) is refused while it streams, and no part of it is kept."""
    limit = 1 << 20
    a, b = (build_backends(make_config(**oci_env, MIS_DATA_DIR=str(tmp_path / n), MIS_MAX_ARTIFACT_BYTES=str(limit)))[1]
            for n in "ab")
    a.uploads.save(ModelInfo(id="upload-x", name="x", source="upload"), a.workspace.receive(io.BytesIO(artifact), limit))
    stored = oci_emulator.bucket(BUCKET)["uploads/upload-x/artifact.zip"]
    oci_emulator.bucket(BUCKET)["uploads/upload-x/artifact.zip"] = replace(stored, data=artifact + bytes(4 * limit))
    with pytest.raises(PayloadTooLarge, match=f"larger than the limit of {limit} bytes"):
        b.uploads.artifact("upload-x")
    copies = tmp_path / "b" / "store" / "uploads"
    assert [p for p in copies.rglob("*") if p.is_file()] == [], "a part of the oversized artifact was kept"
    oci_emulator.bucket(BUCKET)["uploads/upload-x/artifact.zip"] = stored
    assert b.uploads.artifact("upload-x").read_bytes() == artifact  # within the limit it is fetched as before


def test_an_outage_of_the_bucket_keeps_loaded_models_scoring(replicas, oci_emulator, catalog_models, artifact):
    a, _ = replicas()
    iris = catalog_models["demo-sklearn-iris"]
    assert a.simulate_post(f"/api/v1/loadmodel/{iris}").status_code == 200
    for method in ("GET", "HEAD", "PUT", "DELETE"):
        oci_emulator.fail(method, "/n/", 503, count=10_000)
    time.sleep(1.0)  # let the state poller meet the outage (two rounds of MIS_STATE_TTL_S=0.5)
    assert a.simulate_post("/api/v1/score", params={"model_id": iris}, json=IRIS_ROWS).status_code == 200
    assert a.simulate_get("/api/v1/health/ready").status_code == 200
    for answer in (upload(a, artifact), a.simulate_delete(f"/api/v1/removemodel/{iris}"), a.simulate_get("/api/v1/listmodels")):
        assert answer.status_code == 503 and answer.json["service"] == "OCI Object Storage", answer.json
        assert answer.headers["retry-after"]
    oci_emulator.clear_faults()
    assert a.simulate_get("/api/v1/listmodels").status_code == 200


def test_an_uploaded_models_promotion_reaches_the_other_replica(replicas, oci_emulator, artifact):
    a, b = replicas(MIS_ENV="qa", MIS_UPLOAD_ENVS="", MIS_METADATA_TTL_S="1")
    model_id = upload(a, artifact).json["model_id"]
    wait_until(lambda: b.simulate_post("/api/v1/score", params={"model_id": model_id}, json=IRIS_ROWS).status_code == 403,
               timeout=5)
    assert a.simulate_post(f"/api/v1/promotemodel/{model_id}", json={"env": "qa"}).status_code == 200
    metadata = json.loads(oci_emulator.bucket(BUCKET)[f"uploads/{model_id}/metadata.json"].data)
    assert {"key": "env", "value": "qa", "category": "Other"} in metadata["custom_metadata"]
    wait_until(lambda: b.simulate_post("/api/v1/score", params={"model_id": model_id}, json=IRIS_ROWS).status_code == 200,
               timeout=3)


def test_the_artifact_of_an_upload_is_fetched_once_by_the_other_replica(make_config, oci_env, tmp_path, oci_emulator, artifact):
    a, b = (build_backends(make_config(**oci_env, MIS_DATA_DIR=str(tmp_path / n)))[1] for n in "ab")
    staged = a.workspace.receive(io.BytesIO(artifact), 1 << 20)
    a.uploads.save(ModelInfo(id="upload-x", name="x", source="upload"), staged)
    stored = oci_emulator.bucket(BUCKET)["uploads/upload-x/artifact.zip"]
    assert b.uploads.artifact("upload-x").read_bytes() == stored.data == artifact
    b.uploads.artifact("upload-x")
    assert oci_emulator.requests("GET", "upload-x%2Fartifact.zip") == 1
