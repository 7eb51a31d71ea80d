"""The vault component under Pulumi mocks: master key rotation and which key encrypts what."""

from __future__ import annotations

import pytest

from infra import settings
from tests.infra.harness import OCI_STACKS, PROD_STACKS, inputs, setting, stack_run


def vault_type(stack: str) -> str:
    return inputs(stack_run(stack).one("oci:Kms/vault:Vault"))["vaultType"]


@pytest.mark.parametrize("stack", PROD_STACKS)
def test_prod_master_key_rotates_automatically(stack):
    key, _ = stack_run(stack).master_keys()
    spec = inputs(key)
    assert vault_type(stack) == "VIRTUAL_PRIVATE"
    assert spec["isAutoRotationEnabled"] is True
    assert spec["autoKeyRotationDetails"]["rotationIntervalInDays"] in settings.KEY_ROTATION_DAYS


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_the_master_key_rotates_wherever_the_vault_can(stack):
    key, _ = stack_run(stack).master_keys()
    spec = inputs(key)
    rotates = vault_type(stack) == "VIRTUAL_PRIVATE"
    assert spec["isAutoRotationEnabled"] is rotates
    if rotates:
        assert spec["autoKeyRotationDetails"] == {"rotationIntervalInDays": setting(stack, "keyRotationDays", 90)}


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_the_boot_volume_key_never_rotates_in_place(stack):
    # Block Volume supports single-version keys only; its key is rotated by replacing it.
    key, volume_key = stack_run(stack).master_keys()
    assert volume_key.id != key.id
    assert inputs(volume_key)["isAutoRotationEnabled"] is False
    assert "autoKeyRotationDetails" not in inputs(volume_key)


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_api_key_secrets_are_encrypted_with_the_stack_key(stack):
    result = stack_run(stack)
    key, _ = result.master_keys()
    secrets = result.of_type("oci:Vault/secret:Secret")
    assert secrets and all(inputs(secret)["keyId"] == key.id for secret in secrets)
