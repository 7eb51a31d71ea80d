"""Fixtures of the OCI backend tests: the emulator of OCI Data Science and Object Storage on
127.0.0.1, a throwaway key and OCI config it trusts, and the MIS_* settings that point a server at it."""

from __future__ import annotations

import pytest

from .oci_emulator import COMPARTMENT, TENANCY, USER, Emulator, fingerprint, new_key, write_oci_config

BUCKET = "mis-test-models"


@pytest.fixture(scope="session")
def oci_key():
    return new_key()


@pytest.fixture
def oci_emulator(oci_key):
    emulator = Emulator(oci_key.public_key(), f"{TENANCY}/{USER}/{fingerprint(oci_key)}").start()
    emulator.bucket(BUCKET)
    yield emulator
    emulator.stop()


@pytest.fixture
def oci_config_file(tmp_path, oci_key):
    return write_oci_config(tmp_path / "oci", oci_key)


@pytest.fixture
def oci_env(oci_emulator, oci_config_file) -> dict[str, str]:
    """MIS_* settings of a server whose catalog and store are the emulator's (short timeouts)."""
    return {
        "MIS_CATALOG": "oci", "MIS_STORE": "oci", "MIS_OCI_AUTH": "api_key",
        "MIS_OCI_CONFIG_FILE": str(oci_config_file), "MIS_OCI_COMPARTMENT_ID": COMPARTMENT,
        "MIS_OCI_BUCKET": BUCKET, "MIS_OCI_DATA_SCIENCE_ENDPOINT": oci_emulator.url,
        "MIS_OCI_OBJECT_STORAGE_ENDPOINT": oci_emulator.url, "MIS_OCI_TIMEOUT_S": "1", "MIS_OCI_ATTEMPTS": "3",
        "MIS_STATE_TTL_S": "0.5", "MIS_METADATA_TTL_S": "1", "MIS_DEMO_MODELS": "false",
    }


@pytest.fixture
def catalog_models(oci_emulator, demo_catalog) -> dict[str, str]:
    """The three demo models (built by oracle-ads) registered in the emulated catalog for env dev:
    {local demo id: catalog OCID}."""
    return {entry.name: oci_emulator.add_model(entry, env="dev") for entry in sorted(demo_catalog.iterdir())
            if (entry / "metadata.json").is_file()}
