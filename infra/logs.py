"""Logs: one OCI Logging log group per stack with what the network and the model store record.

VCN flow logs (accepted and rejected traffic) for every subnet, so every VNIC in the VCN is
covered, and Object Storage's write and read logs for the models bucket: who uploaded, replaced,
deleted or downloaded a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import pulumi
import pulumi_oci as oci

# Object Storage log categories for the models bucket: changes to models, and every download.
BUCKET_LOG_CATEGORIES = ("write", "read")


@dataclass(frozen=True)
class LogsArgs:
    compartment_id: str
    subnet_ids: Mapping[str, pulumi.Input[str]]  # role (workers, api, lb) -> subnet OCID
    model_bucket: pulumi.Input[str]  # the bucket's name, which is what Object Storage logs by
    retention_days: int  # 30 to 180, in steps of 30


class LogsComponent(pulumi.ComponentResource):
    log_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: LogsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mis:infra:Logs", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        group = oci.logging.LogGroup(
            f"{name}-logs", compartment_id=args.compartment_id, display_name=f"{name}-logs",
            description="VCN flow logs and model bucket access logs of the Model Inference Server", opts=child,
        )

        def service_log(suffix: str, service: str, resource: pulumi.Input[str], category: str) -> None:
            oci.logging.Log(
                f"{name}-{suffix}", display_name=f"{name}-{suffix}", log_group_id=group.id, log_type="SERVICE",
                is_enabled=True, retention_duration=args.retention_days,
                configuration={"compartment_id": args.compartment_id, "source": {
                    "source_type": "OCISERVICE", "service": service, "resource": resource, "category": category,
                }},
                opts=child,
            )

        # Category "all" on a subnet: accepted and rejected flows of its existing and future VNICs.
        for role, subnet_id in args.subnet_ids.items():
            service_log(f"{role}-flows", "flowlogs", subnet_id, "all")
        for category in BUCKET_LOG_CATEGORIES:
            service_log(f"models-{category}", "objectstorage", args.model_bucket, category)

        self.log_group_id = group.id
        self.register_outputs({"logGroupId": self.log_group_id})
