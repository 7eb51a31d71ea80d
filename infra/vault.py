"""API keys and the Vault that keeps them.

`ApiKeys` generates the server's keys per stack (random, secret, never in a stack file).
`VaultComponent` creates the stack's vault and master keys, stores each API key as a Vault secret,
and hands back the keys file read from the Vault, which is what the Kubernetes Secret carries.
The keys file (`MIS_API_KEYS_FILE`) is JSON:
`{"keys": [{"name": "scoring", "scopes": ["score"], "key": "..."}, ...]}`.

Two master keys: the stack's key (Vault secrets, buckets, the cluster's Kubernetes secrets), which
rotates on a schedule where the vault can do it, and a volume key for the nodes' boot volumes,
which never rotates in place because Block Volume supports keys with a single version only (a
volume key is rotated by switching the node pools to a new key).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Mapping

import pulumi
import pulumi_oci as oci
import pulumi_random as random

# Key name -> scopes it grants: clients that only score never hold the admin key.
API_KEY_SCOPES: dict[str, tuple[str, ...]] = {
    "scoring": ("score",),
    "admin": ("score", "admin"),
}


def keys_document(keys: Mapping[str, str]) -> str:
    """The API keys file the server reads, from key name -> key value."""
    return json.dumps(
        {"keys": [{"name": name, "scopes": list(API_KEY_SCOPES[name]), "key": keys[name]} for name in API_KEY_SCOPES]},
        indent=2,
    )


class ApiKeys(pulumi.ComponentResource):
    """One random key per scope set; Pulumi stores them encrypted in the stack's state."""

    keys: dict[str, pulumi.Output[str]]
    document: pulumi.Output[str]

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mis:infra:ApiKeys", name, None, opts)
        self.keys = {
            key: pulumi.Output.secret(
                random.RandomPassword(
                    f"{name}-{key}", length=48, special=False, opts=pulumi.ResourceOptions(parent=self)
                ).result
            )
            for key in API_KEY_SCOPES
        }
        self.document = pulumi.Output.secret(pulumi.Output.all(**self.keys).apply(keys_document))
        self.register_outputs({})


@dataclass(frozen=True)
class VaultArgs:
    compartment_id: str
    vault_type: str
    key_protection_mode: str
    api_keys: Mapping[str, pulumi.Output[str]]
    protect: bool
    key_rotation_days: int | None  # None: the vault cannot rotate keys on a schedule


class VaultComponent(pulumi.ComponentResource):
    vault_id: pulumi.Output[str]
    key_id: pulumi.Output[str]
    volume_key_id: pulumi.Output[str]
    secret_ids: dict[str, pulumi.Output[str]]
    api_keys_document: pulumi.Output[str]

    def __init__(self, name: str, args: VaultArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mis:infra:Vault", name, None, opts)
        # Deleting a vault or key destroys every secret and bucket object encrypted with it.
        stateful = pulumi.ResourceOptions(parent=self, protect=args.protect)

        vault = oci.kms.Vault(
            f"{name}-vault", compartment_id=args.compartment_id, display_name=f"{name}-vault",
            vault_type=args.vault_type, opts=stateful,
        )

        def master_key(suffix: str, rotation_days: int | None) -> oci.kms.Key:
            return oci.kms.Key(
                f"{name}-{suffix}", compartment_id=args.compartment_id, display_name=f"{name}-{suffix}",
                key_shape={"algorithm": "AES", "length": 32}, protection_mode=args.key_protection_mode,
                management_endpoint=vault.management_endpoint,
                is_auto_rotation_enabled=rotation_days is not None,
                auto_key_rotation_details={"rotation_interval_in_days": rotation_days} if rotation_days else None,
                opts=stateful,
            )

        key = master_key("key", args.key_rotation_days)
        volume_key = master_key("volume-key", None)
        secrets = {
            key_name: oci.vault.Secret(
                f"{name}-api-key-{key_name}",
                compartment_id=args.compartment_id,
                vault_id=vault.id,
                key_id=key.id,
                secret_name=f"{name}-api-key-{key_name}",
                description=f"Model Inference Server API key with scopes {', '.join(API_KEY_SCOPES[key_name])}",
                secret_content={
                    "content_type": "BASE64",
                    "content": pulumi.Output.secret(value.apply(lambda v: base64.b64encode(v.encode()).decode())),
                },
                opts=pulumi.ResourceOptions(parent=self),
            )
            for key_name, value in args.api_keys.items()
        }
        # Read the keys back from the Vault: the cluster gets what the Vault holds.
        contents = {
            key_name: oci.secrets.get_secretbundle_output(
                secret_id=secret.id, opts=pulumi.InvokeOutputOptions(parent=self)
            ).secret_bundle_contents[0].content.apply(lambda c: base64.b64decode(c).decode())
            for key_name, secret in secrets.items()
        }

        self.vault_id = vault.id
        self.key_id = key.id
        self.volume_key_id = volume_key.id
        self.secret_ids = {key_name: secret.id for key_name, secret in secrets.items()}
        self.api_keys_document = pulumi.Output.secret(pulumi.Output.all(**contents).apply(keys_document))
        self.register_outputs({"vaultId": self.vault_id, "keyId": self.key_id, "volumeKeyId": self.volume_key_id})
