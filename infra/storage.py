"""Storage: Object Storage buckets for the model store and conda packs.

Both buckets are private, versioned (an overwritten or deleted model can be recovered) and
encrypted with the stack's Vault master key rather than an Oracle-managed key.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_oci as oci

BUCKETS = {"models": "models", "condaPacks": "conda-packs"}


@dataclass(frozen=True)
class StorageArgs:
    compartment_id: str
    namespace: pulumi.Input[str]
    kms_key_id: pulumi.Input[str]
    protect: bool


def bucket_names(name: str) -> dict[str, str]:
    """Bucket names are fixed by the component name, so IAM can grant on them before they exist."""
    return {key: f"{name}-{suffix}" for key, suffix in BUCKETS.items()}


class StorageComponent(pulumi.ComponentResource):
    bucket_names: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mis:infra:Storage", name, None, opts)
        self.bucket_names = {}
        for key, bucket_name in bucket_names(name).items():
            bucket = oci.objectstorage.Bucket(
                bucket_name,
                compartment_id=args.compartment_id,
                namespace=args.namespace,
                name=bucket_name,
                access_type="NoPublicAccess",
                versioning="Enabled",
                kms_key_id=args.kms_key_id,
                storage_tier="Standard",
                opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
            )
            self.bucket_names[key] = bucket.name
        self.register_outputs({"bucketNames": self.bucket_names})
