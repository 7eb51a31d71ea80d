"""The OCI Data Science catalog backend (MIS_CATALOG=oci), in process, against the emulator with the
real `oci` SDK: listing across the service's pages, details and gating, artifact downloads and
their checks, the outage policy (retries, timeouts, 503 + Retry-After), start-up checks and promotion."""

from __future__ import annotations

import base64
import time

import pytest
import requests

from server.app import build_backends, check_backends
from server.backends.oci_catalog import promote
from server.config import Config, ConfigError

from ..processes import wait_until
from .oci_emulator import COMPARTMENT, REGION, Delivery, new_key, write_oci_config

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def catalog_only(oci_env: dict, **extra: str) -> dict:
    return {**{k: v for k, v in oci_env.items() if k != "MIS_STORE"}, **extra}


def test_the_emulator_refuses_unsigned_and_wrongly_signed_requests(oci_emulator, oci_env, tmp_path, make_config):
    unsigned = requests.get(f"{oci_emulator.url}/20190101/models", params={"compartmentId": COMPARTMENT}, timeout=5)
    assert unsigned.status_code == 401 and "not signed" in unsigned.json()["message"]
    # Another key under the trusted key's identity: the signature does not verify, so the server stops.
    other = write_oci_config(tmp_path / "other", new_key())
    text = other.read_text()
    trusted = [line for line in open(oci_env["MIS_OCI_CONFIG_FILE"]) if line.startswith("fingerprint")][0]
    other.write_text("\n".join(trusted.strip() if line.startswith("fingerprint") else line for line in text.splitlines()))
    with pytest.raises(ConfigError, match="refused the credentials.*MIS_OCI_AUTH"):
        check_backends(make_config(**catalog_only(oci_env, MIS_OCI_CONFIG_FILE=str(other))))
    assert oci_emulator.requests("GET", "/20190101/models") == 2


def test_lists_loads_and_scores_a_catalog_model_as_the_local_catalog_does(make_client, oci_env, catalog_models):
    oci_client, local_client = make_client(**catalog_only(oci_env)), make_client()
    listed = oci_client.simulate_get("/api/v1/listmodels").json
    assert {m["id"] for m in listed["models"]} == set(catalog_models.values())
    assert {m["env"] for m in listed["models"]} == {"dev"}  # read from each model's details
    iris = catalog_models["demo-sklearn-iris"]
    details = oci_client.simulate_get(f"/api/v1/getmodelinfo/{iris}").json
    assert details["framework"] == "scikit-learn" and details["input_schema"]["schema"]
    assert any(t["key"] == "Hyperparameters" and isinstance(t["value"], dict) for t in details["taxonomy_metadata"])
    assert oci_client.simulate_post(f"/api/v1/loadmodel/{iris}").json["status"] == "loaded"
    local_client.simulate_post("/api/v1/loadmodel/demo-sklearn-iris")
    remote = oci_client.simulate_post("/api/v1/score", params={"model_id": iris}, json=IRIS_ROWS)
    local = local_client.simulate_post("/api/v1/score", params={"model_id": "demo-sklearn-iris"}, json=IRIS_ROWS)
    assert remote.status_code == 200 and remote.json["prediction"] == local.json["prediction"]


def test_listing_follows_the_service_pages_and_keeps_only_active_models_of_the_compartment(
        make_client, oci_env, oci_emulator, demo_catalog):
    entry = demo_catalog / "demo-sklearn-iris"
    active = {oci_emulator.add_model(entry, env="dev") for _ in range(7)}
    oci_emulator.add_model(entry, env="dev", state="INACTIVE")
    oci_emulator.add_model(entry, env="dev", compartment="ocid1.compartment.oc1..someone-else")
    oci_emulator.page_max = 2
    client = make_client(**catalog_only(oci_env))
    seen, page, pages = [], None, 0
    while True:
        answer = client.simulate_get("/api/v1/listmodels", params={"no_of_models": 3, **({"page": page} if page else {})})
        assert answer.status_code == 200, answer.json
        seen += [m["id"] for m in answer.json["models"]]
        page, pages = answer.json["next_page"], pages + 1
        if page is None:
            break
    assert sorted(seen) == sorted(active) and pages == 3
    assert oci_emulator.requests("GET", r"/20190101/models\?") >= 4  # pages of 2 filling pages of 3
    assert client.simulate_get("/api/v1/listmodels", params={"compartment_id": "ocid1.compartment.oc1..other"}).json["count"] == 0
    assert client.simulate_get("/api/v1/listmodels", params={"page": "bm90LWEtdG9rZW4="}).status_code == 400


def test_an_unknown_model_is_404(make_client, oci_env, catalog_models):
    client = make_client(**catalog_only(oci_env))
    missing = "ocid1.datasciencemodel.oc1.phx.doesnotexist"
    for answer in (client.simulate_get(f"/api/v1/getmodelinfo/{missing}"), client.simulate_post(f"/api/v1/loadmodel/{missing}")):
        assert answer.status_code == 404 and answer.json["code"] == "model_not_found"


def test_5xx_and_429_are_retried_with_backoff_then_answered_503_with_retry_after(make_client, oci_env, oci_emulator,
                                                                                  catalog_models):
    client = make_client(**catalog_only(oci_env))
    oci_emulator.fail("GET", r"/20190101/models\?", 500, count=1)
    oci_emulator.fail("GET", r"/20190101/models\?", 429, count=1, headers={"retry-after": "0.1"})
    assert client.simulate_get("/api/v1/listmodels").json["count"] == 3  # third attempt answered
    oci_emulator.fail("GET", r"/20190101/models\?", 503, count=3)
    answer = client.simulate_get("/api/v1/listmodels")
    assert answer.status_code == 503 and answer.json["code"] == "service_unavailable"
    assert answer.json["service"] == "OCI Data Science" and int(answer.headers["retry-after"]) >= 1
    assert oci_emulator.requests("GET", r"/20190101/models\?") == 6


LISTING = r"/20190101/models\?"  # the list_models calls (not a model's details)


def test_a_call_slower_than_mis_oci_timeout_s_is_a_failed_attempt_and_one_within_it_is_not(
        make_client, oci_env, oci_emulator, catalog_models):
    client = make_client(**catalog_only(oci_env))  # MIS_OCI_TIMEOUT_S=1, 3 attempts
    oci_emulator.fail("GET", LISTING, None, count=1, delay_s=0.6)  # within the timeout: that answer is taken
    assert client.simulate_get("/api/v1/listmodels").json["count"] == 3
    assert oci_emulator.requests("GET", LISTING) == 1
    oci_emulator.fail("GET", LISTING, None, count=1, delay_s=1.5)  # past it: given up on, and tried again
    started = time.monotonic()
    answer = client.simulate_get("/api/v1/listmodels")
    elapsed = time.monotonic() - started
    assert answer.status_code == 200 and answer.json["count"] == 3, answer.json
    assert elapsed >= 1.0, f"answered in {elapsed:.2f} s: the first attempt did not wait its 1 s read timeout"
    # The late answer is logged when the emulator writes it (to a client that hung up): then there are 3.
    wait_until(lambda: oci_emulator.requests("GET", LISTING) == 3, timeout=5)


def test_mis_oci_attempts_1_makes_one_attempt_and_waits_no_backoff_after_it(make_client, oci_env, oci_emulator,
                                                                              catalog_models):
    client = make_client(**catalog_only(oci_env, MIS_OCI_ATTEMPTS="1"))
    oci_emulator.fail("GET", LISTING, 503, count=1, headers={"retry-after": "3"})
    started = time.monotonic()
    answer = client.simulate_get("/api/v1/listmodels")
    elapsed = time.monotonic() - started
    assert answer.status_code == 503 and answer.json["service"] == "OCI Data Science", answer.json
    assert "(1 attempts)" in answer.json["error"] and oci_emulator.requests("GET", LISTING) == 1
    assert elapsed < 2, f"{elapsed:.2f} s: the service's 3 s Retry-After was waited with no attempt left"
    assert client.simulate_get("/api/v1/listmodels").status_code == 200  # the fault was that one answer


def test_retries_wait_a_doubling_backoff_or_the_services_retry_after(make_client, oci_env, oci_emulator,
                                                                     catalog_models):
    client = make_client(**catalog_only(oci_env, MIS_OCI_ATTEMPTS="4"))
    assert client.simulate_get("/api/v1/listmodels").status_code == 200  # details now known: only listing is timed

    def listing_after(**fault) -> float:
        oci_emulator.fail("GET", LISTING, 503, **fault)
        started = time.monotonic()
        answer = client.simulate_get("/api/v1/listmodels")
        assert answer.status_code == 200, answer.json
        return time.monotonic() - started

    waited = listing_after(count=3)  # 0.25, 0.5 and 1 s, each +-20 %
    assert waited >= 0.8 * (0.25 + 0.5 + 1.0), f"three retries waited {waited:.2f} s in all: no doubling backoff"
    waited = listing_after(count=1, headers={"retry-after": "2"})
    assert waited >= 0.8 * 2, f"the retry came {waited:.2f} s after a 503 with Retry-After: 2"
    assert oci_emulator.requests("GET", LISTING) == 1 + 4 + 2


def test_a_slow_service_is_given_up_on_within_the_request_deadline(make_client, oci_env, oci_emulator, catalog_models):
    client = make_client(**catalog_only(oci_env, MIS_OCI_ATTEMPTS="10", MIS_TIMEOUT_S="4"))
    iris = catalog_models["demo-sklearn-iris"]
    oci_emulator.fail("GET", "/20190101/models/", None, count=100, delay_s=2.5)  # past the 1 s read timeout
    started = time.monotonic()
    answer = client.simulate_post(f"/api/v1/loadmodel/{iris}")
    elapsed = time.monotonic() - started
    assert answer.status_code == 503 and "did not answer" in answer.json["error"], answer.json
    assert elapsed < 4, f"a call outlived the request's deadline: {elapsed:.1f} s"


def test_an_outage_keeps_loaded_models_scoring_and_the_server_ready(make_client, oci_env, oci_emulator, catalog_models):
    client = make_client(**catalog_only(oci_env, MIS_ENV="dev"))
    iris, wine = catalog_models["demo-sklearn-iris"], catalog_models["demo-lightgbm-wine"]
    assert client.simulate_post(f"/api/v1/loadmodel/{iris}").status_code == 200
    for method in ("GET", "HEAD", "PUT"):
        oci_emulator.fail(method, "/", 503, count=10_000)
    deadline = time.monotonic() + 3  # past the metadata TTL: gating re-reads, fails, keeps what it knew
    while time.monotonic() < deadline:
        assert client.simulate_post("/api/v1/score", params={"model_id": iris}, json=IRIS_ROWS).status_code == 200
        time.sleep(0.1)
    assert client.simulate_get("/api/v1/health/ready").status_code == 200
    for answer in (client.simulate_get("/api/v1/listmodels"), client.simulate_post(f"/api/v1/loadmodel/{wine}")):
        assert answer.status_code == 503 and answer.json["service"] == "OCI Data Science" and answer.headers["retry-after"]
    oci_emulator.clear_faults()
    assert client.simulate_post(f"/api/v1/loadmodel/{wine}").status_code == 200


def test_an_oversized_artifact_is_refused(make_client, oci_env, oci_emulator, catalog_models, data_dir):
    client = make_client(**catalog_only(oci_env, MIS_MAX_ARTIFACT_BYTES="10000"))
    answer = client.simulate_post(f"/api/v1/loadmodel/{catalog_models['demo-xgboost-breast-cancer']}")
    assert answer.status_code == 413 and answer.json["code"] == "payload_too_large"
    assert not list((data_dir / "cache").rglob("*.zip"))
    assert oci_emulator.requests("GET", "/artifact/content") == 0, "the HEAD's size alone should have refused it"


def cache_files(data_dir) -> list:
    return [path for path in (data_dir / "cache").rglob("*") if path.is_file()]


@pytest.mark.parametrize("delivery", [
    Delivery(size=256 << 20, head_size=4096),  # HEAD lies: a small Content-Length, GET sends 256 MiB
    Delivery(size=256 << 20, chunked=True),  # no Content-Length at all: chunked, 256 MiB if read to the end
], ids=["lying-head", "chunked"])
def test_an_artifact_body_over_the_limit_is_cut_off_while_streaming_whatever_its_head_said(
        make_client, oci_env, oci_emulator, catalog_models, data_dir, delivery):
    limit = 1 << 20
    client = make_client(**catalog_only(oci_env, MIS_MAX_ARTIFACT_BYTES=str(limit)))
    iris = catalog_models["demo-sklearn-iris"]
    oci_emulator.models[iris].delivery = delivery
    answer = client.simulate_post(f"/api/v1/loadmodel/{iris}")
    assert answer.status_code == 413 and answer.json["code"] == "payload_too_large", answer.json
    assert f"limit of {limit} bytes" in answer.json["error"]
    assert not cache_files(data_dir), "a partial download (or the artifact) was left in the cache"
    # The server hung up soon after the limit: what the socket took beyond it is the kernel's buffers.
    sent = oci_emulator.models[iris].sent
    print(f"{delivery}: the server stopped after {sent} bytes had been sent")
    assert sent < 64 << 20, f"the server read {sent} bytes of a {delivery.size}-byte body with a {limit}-byte limit"
    assert oci_emulator.requests("GET", "/artifact/content") == 1
    oci_emulator.models[iris].delivery = Delivery()  # answered truthfully again: it loads
    assert client.simulate_post(f"/api/v1/loadmodel/{iris}").status_code == 200


def test_an_artifact_sent_slower_than_the_call_budget_is_given_up_and_leaves_nothing(
        make_client, oci_env, oci_emulator, catalog_models, data_dir):
    # MIS_TIMEOUT_S=2: one OCI call (the download included) has 1 s. Each pause stays under the 1 s read
    # timeout (MIS_OCI_TIMEOUT_S), so only the download's own deadline can end it.
    client = make_client(**catalog_only(oci_env, MIS_TIMEOUT_S="2"))
    iris = catalog_models["demo-sklearn-iris"]
    artifact = oci_emulator.models[iris].artifact
    oci_emulator.models[iris].delivery = Delivery(piece=len(artifact) // 8 + 1, pause_s=0.3)  # ~2.1 s in all
    answer = client.simulate_post(f"/api/v1/loadmodel/{iris}")
    assert answer.status_code == 503 and answer.json["code"] == "service_unavailable", answer.json
    assert "sent the artifact too slowly" in answer.json["error"] and answer.json["service"] == "OCI Data Science"
    assert int(answer.headers["retry-after"]) >= 1
    assert not cache_files(data_dir), "a partial download (or the artifact) was left in the cache"
    oci_emulator.models[iris].delivery = Delivery()  # sent at once again, it loads: nothing of the slow one is in the way
    # (under the default budget: 1 s for the GET and the stream is tight on a loaded machine)
    assert make_client(**catalog_only(oci_env)).simulate_post(f"/api/v1/loadmodel/{iris}").status_code == 200


def test_an_artifact_download_that_breaks_off_is_a_503_and_leaves_nothing(make_client, oci_env, oci_emulator,
                                                                          catalog_models, data_dir):
    client = make_client(**catalog_only(oci_env))
    iris = catalog_models["demo-sklearn-iris"]
    artifact = oci_emulator.models[iris].artifact
    oci_emulator.models[iris].delivery = Delivery(cut_after=len(artifact) // 2)  # Content-Length says all of it
    answer = client.simulate_post(f"/api/v1/loadmodel/{iris}")
    assert answer.status_code == 503 and answer.json["code"] == "service_unavailable", answer.json
    assert "broke off the artifact download" in answer.json["error"] and answer.json["service"] == "OCI Data Science"
    assert not cache_files(data_dir), "a partial download (or the artifact) was left in the cache"
    oci_emulator.models[iris].delivery = Delivery()
    assert client.simulate_post(f"/api/v1/loadmodel/{iris}").status_code == 200


def test_an_artifact_that_does_not_match_its_md5_is_not_kept(make_client, oci_env, oci_emulator, catalog_models,
                                                               data_dir):
    client = make_client(**catalog_only(oci_env))
    iris = catalog_models["demo-sklearn-iris"]
    oci_emulator.models[iris].artifact_md5 = base64.b64encode(b"\0" * 16).decode()
    answer = client.simulate_post(f"/api/v1/loadmodel/{iris}")
    assert answer.status_code == 502 and answer.json["code"] == "artifact_checksum_mismatch"
    assert not [path for path in (data_dir / "cache").rglob("*") if path.is_file()]
    oci_emulator.models[iris].artifact_md5 = None
    assert client.simulate_post(f"/api/v1/loadmodel/{iris}").status_code == 200


def test_a_downloaded_artifact_is_reused_by_other_workers_and_after_a_restart(make_client, oci_env, oci_emulator,
                                                                              catalog_models, tmp_path):
    iris = catalog_models["demo-sklearn-iris"]
    make_client(**catalog_only(oci_env)).simulate_post(f"/api/v1/loadmodel/{iris}")
    (tmp_path / "store" / "artifacts").rename(tmp_path / "unpacked-before")  # unpacking again needs the zip
    again = make_client(**catalog_only(oci_env))  # a new registry on the same data dir: a restart
    assert again.simulate_post(f"/api/v1/loadmodel/{iris}").status_code == 200
    assert oci_emulator.requests("GET", "/artifact/content") == 1


def test_a_catalog_env_edit_changes_gating_within_the_metadata_ttl(make_client, oci_env, oci_emulator, catalog_models):
    client = make_client(**catalog_only(oci_env, MIS_ENV="dev", MIS_METADATA_TTL_S="1"))
    iris = catalog_models["demo-sklearn-iris"]
    client.simulate_post(f"/api/v1/loadmodel/{iris}")

    def status() -> int:
        return client.simulate_post("/api/v1/score", params={"model_id": iris}, json=IRIS_ROWS).status_code

    assert status() == 200
    for env, expected in (("qa", 403), ("dev", 200)):
        oci_emulator.set_env(iris, env)
        changed = time.monotonic()
        wait_until(lambda: status() == expected, timeout=5, interval=0.02)
        took = time.monotonic() - changed
        print(f"catalog env -> {env}: gating changed after {took:.2f} s (MIS_METADATA_TTL_S=1)")
        assert took <= 1.3, took  # the TTL, plus a refresh round trip and the polling step


def test_the_server_does_not_promote_catalog_models_itself(make_client, oci_env, oci_emulator, catalog_models):
    client = make_client(**catalog_only(oci_env))
    iris = catalog_models["demo-sklearn-iris"]
    answer = client.simulate_post(f"/api/v1/promotemodel/{iris}", json={"env": "prod"})
    assert answer.status_code == 403 and answer.json["code"] == "catalog_read_only"
    assert "mis promote" in answer.json["error"] and oci_emulator.env_of(iris) == "dev"


def test_promotion_with_the_users_config_changes_only_env_and_survives_a_concurrent_edit(
        oci_emulator, oci_config_file, catalog_models):
    iris = catalog_models["demo-sklearn-iris"]
    before = [m for m in oci_emulator.models[iris].details["customMetadataList"] if m["key"] != "env"]
    oci_emulator.fail("PUT", "/20190101/models/", 412, count=1)  # someone else's edit won the first write
    info = promote(iris, "qa", config_file=str(oci_config_file), endpoint=oci_emulator.url)
    assert info.env == "qa" and oci_emulator.env_of(iris) == "qa"
    after = [m for m in oci_emulator.models[iris].details["customMetadataList"] if m["key"] != "env"]
    assert after == before
    assert oci_emulator.requests("GET", f"/20190101/models/{iris}$") == 2  # read again after the conflict
    promote(iris, None, config_file=str(oci_config_file), endpoint=oci_emulator.url)
    assert oci_emulator.env_of(iris) is None


@pytest.mark.parametrize("change, message", [
    ({"MIS_OCI_CONFIG_FILE": "/nonexistent/oci/config"}, "does not exist: set MIS_OCI_CONFIG_FILE"),
    ({"MIS_OCI_PROFILE": "NOPE"}, "has no profile 'NOPE': set MIS_OCI_PROFILE"),
    ({"MIS_OCI_COMPARTMENT_ID": "ocid1.compartment.oc1..unknown"}, "set MIS_OCI_COMPARTMENT_ID"),
    ({"MIS_OCI_AUTH": "workload_identity"}, "KUBERNETES_SERVICE_HOST is unset"),
    ({"MIS_OCI_BUCKET": "no-such-bucket"}, "set MIS_OCI_BUCKET"),
])
def test_credentials_that_cannot_work_stop_the_start_naming_what_to_set(make_config, oci_env, change, message,
                                                                       monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match=message):
        check_backends(make_config(**{**oci_env, **change}))


def test_a_service_that_is_only_down_at_start_does_not_stop_it(make_config, oci_env, oci_emulator):
    for method in ("GET", "HEAD"):
        oci_emulator.fail(method, "/", 503, count=10_000)
    check_backends(make_config(**oci_env))  # warns; requests answer 503 until the service is back


def test_the_region_comes_from_mis_oci_region_or_the_config(make_config, oci_env):
    catalog, store = build_backends(make_config(**oci_env))
    assert catalog.service.client.base_client.config["region"] == REGION
    catalog, _ = build_backends(make_config(**oci_env, MIS_OCI_REGION="eu-frankfurt-1"))
    assert catalog.service.client.base_client.config["region"] == "eu-frankfurt-1"


def test_oci_settings_are_checked_with_the_rest_of_the_config():
    base = {"MIS_AUTH": "off", "MIS_CATALOG": "oci"}
    with pytest.raises(ConfigError, match="MIS_OCI_COMPARTMENT_ID"):
        Config.from_env(base)
    with pytest.raises(ConfigError, match="MIS_OCI_BUCKET"):
        Config.from_env({"MIS_AUTH": "off", "MIS_STORE": "oci"})
    with pytest.raises(ConfigError, match="MIS_OCI_AUTH must be one of"):
        Config.from_env({**base, "MIS_OCI_COMPARTMENT_ID": "c", "MIS_OCI_AUTH": "password"})
    with pytest.raises(ConfigError, match="MIS_OCI_DATA_SCIENCE_ENDPOINT must be an http"):
        Config.from_env({**base, "MIS_OCI_COMPARTMENT_ID": "c", "MIS_OCI_DATA_SCIENCE_ENDPOINT": "ftp://x"})
    assert Config.from_env({"MIS_AUTH": "off"}).store == "local"


def test_mis_promote_oci_changes_the_catalog_and_a_gated_server_follows(make_client, oci_env, oci_emulator,
                                                                        oci_config_file, catalog_models, capsys):
    from server.cli import main

    client = make_client(**catalog_only(oci_env, MIS_ENV="qa", MIS_METADATA_TTL_S="1"))
    iris = catalog_models["demo-sklearn-iris"]
    client.simulate_post(f"/api/v1/loadmodel/{iris}")
    assert client.simulate_post("/api/v1/score", params={"model_id": iris}, json=IRIS_ROWS).status_code == 403
    assert main(["promote", iris, "--env", "qa", "--oci", "--oci-config", str(oci_config_file),
                 "--oci-endpoint", oci_emulator.url]) == 0
    assert "in the OCI Data Science catalog" in capsys.readouterr().out and oci_emulator.env_of(iris) == "qa"
    wait_until(lambda: client.simulate_post("/api/v1/score", params={"model_id": iris}, json=IRIS_ROWS).status_code == 200,
               timeout=3)
    assert main(["promote", iris, "--env", "prod", "--oci", "--oci-config", "/nonexistent",
                 "--oci-endpoint", oci_emulator.url]) != 0
    assert "set --oci-config" in capsys.readouterr().err
