"""IAM: dynamic groups and least-privilege policies, created in the tenancy's home region.

Identity writes are only accepted in the home region, so this component runs on the home-region
provider the caller passes in. Every statement is scoped to the stack's compartment and, where the
service supports it, to the one cluster, bucket or key it concerns; none grants `manage
all-resources` or anything on the whole tenancy (the dynamic group itself must live in the tenancy).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_oci as oci

CLUSTER_AUTOSCALER = ("kube-system", "cluster-autoscaler")
# The server writes uploaded models into its bucket but never changes the bucket itself.
OBJECT_PERMISSIONS = ("OBJECT_INSPECT", "OBJECT_READ", "OBJECT_CREATE", "OBJECT_OVERWRITE", "OBJECT_DELETE")
DEVOPS_RESOURCE_TYPES = ("devopsbuildpipeline", "devopsdeploypipeline", "devopsrepository", "devopsconnection")


@dataclass(frozen=True)
class IamArgs:
    tenancy_id: str
    compartment_id: str
    region: str
    cluster_id: pulumi.Input[str]
    namespace: str
    service_account: str
    model_bucket: str
    conda_bucket: str
    key_id: pulumi.Input[str]


def _workload(namespace: str, service_account: str, cluster_id: str) -> str:
    return (
        f"request.principal.type = 'workload', request.principal.namespace = '{namespace}', "
        f"request.principal.service_account = '{service_account}', request.principal.cluster_id = '{cluster_id}'"
    )


def workload_statements(args: IamArgs, cluster_id: str) -> list[str]:
    """What the server's pods (OKE workload identity) and the cluster autoscaler may do."""
    where = f"in compartment id {args.compartment_id} where all"
    server = _workload(args.namespace, args.service_account, cluster_id)
    scaler = _workload(*CLUSTER_AUTOSCALER, cluster_id)
    permissions = ", ".join(f"request.permission = '{p}'" for p in OBJECT_PERMISSIONS)
    return [
        f"Allow any-user to read data-science-models {where} {{{server}}}",
        f"Allow any-user to read buckets {where} {{{server}, any {{target.bucket.name = '{args.model_bucket}', "
        f"target.bucket.name = '{args.conda_bucket}'}}}}",
        f"Allow any-user to read objects {where} {{{server}, target.bucket.name = '{args.conda_bucket}'}}",
        f"Allow any-user to manage objects {where} {{{server}, target.bucket.name = '{args.model_bucket}', "
        f"any {{{permissions}}}}}",
        *[
            f"Allow any-user to {verb} {where} {{{scaler}}}"
            for verb in (
                "manage cluster-node-pools", "manage instance-family", "use subnets",
                "read virtual-network-family", "use vnics", "inspect compartments",
            )
        ],
    ]


def devops_statements(args: IamArgs, group_id: str) -> list[str]:
    """What the DevOps build and deploy pipelines may do: push images and artifacts, deploy to OKE."""
    who, where = f"dynamic-group id {group_id}", f"in compartment id {args.compartment_id}"
    return [
        f"Allow {who} to use repos {where}",
        f"Allow {who} to manage generic-artifacts {where}",
        f"Allow {who} to read all-artifacts {where}",
        f"Allow {who} to use devops-family {where}",
        f"Allow {who} to use ons-topics {where}",
        f"Allow {who} to use clusters {where}",
    ]


def service_statements(args: IamArgs, key_id: str) -> list[str]:
    """Object Storage must be allowed to use the master key before a bucket can be encrypted with it."""
    return [
        f"Allow service objectstorage-{args.region} to use keys in compartment id {args.compartment_id} "
        f"where target.key.id = '{key_id}'"
    ]


class IamComponent(pulumi.ComponentResource):
    devops_group_id: pulumi.Output[str]
    key_policy: oci.identity.Policy

    def __init__(self, name: str, args: IamArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mis:infra:Iam", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        devops = oci.identity.DynamicGroup(
            f"{name}-devops",
            compartment_id=args.tenancy_id,
            name=f"{name}-devops",
            description="DevOps build and deploy pipelines of the Model Inference Server",
            matching_rule="Any {" + ", ".join(
                f"All {{resource.type = '{kind}', resource.compartment.id = '{args.compartment_id}'}}"
                for kind in DEVOPS_RESOURCE_TYPES
            ) + "}",
            opts=child,
        )

        def policy(suffix: str, description: str, statements: pulumi.Output[list[str]]) -> oci.identity.Policy:
            return oci.identity.Policy(
                f"{name}-{suffix}", compartment_id=args.compartment_id, name=f"{name}-{suffix}",
                description=description, statements=statements, opts=child,
            )

        policy("workloads", "Server pods and cluster autoscaler (workload identity)",
               pulumi.Output.from_input(args.cluster_id).apply(lambda cluster: workload_statements(args, cluster)))
        policy("devops", "DevOps build and deploy pipelines",
               devops.id.apply(lambda group: devops_statements(args, group)))
        self.key_policy = policy(
            "services", "OCI services acting for this stack",
            pulumi.Output.from_input(args.key_id).apply(lambda key: service_statements(args, key)),
        )

        self.devops_group_id = devops.id
        self.register_outputs({"devopsGroupId": self.devops_group_id})
