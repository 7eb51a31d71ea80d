"""IAM: dynamic groups and least-privilege policies, created in the tenancy's home region.

Identity writes are only accepted in the home region, so these components run on the home-region
provider the caller passes in. Every statement is scoped to the stack's compartment and, where the
service supports it, to the one cluster, bucket or key it concerns; none grants `manage
all-resources` or anything on the whole tenancy (the dynamic group itself must live in the tenancy).

Two components, because they sit on either side of the cluster: `KeyGrantsComponent` lets OCI
services use the stack's keys, and must exist before the cluster, node pools and buckets encrypted
with them; `IamComponent` grants the cluster's workloads and the pipelines, and names the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_oci as oci

CLUSTER_AUTOSCALER = ("kube-system", "cluster-autoscaler")
# Every OCI SDK operation the server calls (MIS_CATALOG=oci, MIS_STORE=oci; server/backends/) and
# what in workload_statements() allows it: a verb on a resource type, or the object permissions
# granted on the models bucket. The server never changes the catalog (a person promotes with their
# own credentials) nor the bucket itself. tests/infra/test_iam.py checks this against the code.
SERVER_OPERATIONS: dict[str, tuple[str, ...]] = {
    "list_models": ("read data-science-models",),
    "get_model": ("read data-science-models",),
    "head_model_artifact": ("read data-science-models",),
    "get_model_artifact_content": ("read data-science-models",),
    "get_namespace": (),  # any authenticated principal may ask its tenancy's namespace
    "head_bucket": ("read buckets",),
    "list_objects": ("OBJECT_INSPECT",),
    "get_object": ("OBJECT_READ",),
    "head_object": ("OBJECT_READ",),
    "put_object": ("OBJECT_CREATE", "OBJECT_OVERWRITE"),  # state.json is overwritten (if-match)
    "delete_object": ("OBJECT_DELETE",),
}
OBJECT_PERMISSIONS = tuple(dict.fromkeys(
    p for allowed in SERVER_OPERATIONS.values() for p in allowed if p.startswith("OBJECT_")))
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
    # The DevOps pipelines: the Vault secret a mirrored repository's connection reads, and whether
    # the deploy stage reaches a private Kubernetes API through a private endpoint in the VCN.
    mirror_token_secret_id: str | None = None
    private_deploy_channel: bool = False


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
    """What the DevOps pipelines' stages need (infra/devops.py), and nothing else."""
    who, where = f"dynamic-group id {group_id}", f"in compartment id {args.compartment_id}"
    statements = [
        # BUILD reads the code repository; TRIGGER_DEPLOYMENT_PIPELINE starts the deploy pipeline.
        f"Allow {who} to use devops-family {where}",
        # BUILD and DELIVER_ARTIFACT push the images to the stack's container repositories.
        f"Allow {who} to use repos {where}",
        # The project reports build and deployment events to its topic.
        f"Allow {who} to use ons-topics {where}",
        # OKE_DEPLOYMENT applies the manifests (the namespace's RBAC narrows what it may change).
        f"Allow {who} to use clusters {where}",
        # BUILD fetches the Conda pack an image runs in (CONDA_PACK_URI) from the stack's bucket.
        f"Allow {who} to read objects {where} where target.bucket.name = '{args.conda_bucket}'",
    ]
    if args.mirror_token_secret_id:
        statements.append(
            f"Allow {who} to read secret-bundles {where} where target.secret.id = '{args.mirror_token_secret_id}'"
        )
    if args.private_deploy_channel:
        # The deploy stage's private endpoint to a private Kubernetes API lives in the workers' subnet.
        statements += [f"Allow {who} to {verb} {where}"
                       for verb in ("use subnets", "use vnics", "use network-security-groups")]
    return statements


@dataclass(frozen=True)
class KeyGrantsArgs:
    compartment_id: str
    region: str
    key_id: pulumi.Input[str]  # buckets and the cluster's Kubernetes secrets
    volume_key_id: pulumi.Input[str]  # the nodes' boot volumes


def key_statements(args: KeyGrantsArgs, key_id: str, volume_key_id: str) -> list[str]:
    """Who may use which key, each grant for one key only (OKE's documented grants, narrowed to this
    compartment's clusters and node pools: the cluster cannot be named before it exists)."""
    where = f"in compartment id {args.compartment_id} where"
    here = f"request.principal.compartment.id = '{args.compartment_id}'"
    return [
        f"Allow service objectstorage-{args.region} to use keys {where} target.key.id = '{key_id}'",
        # OKE encrypts the cluster's Kubernetes secrets in etcd with the stack's key.
        f"Allow any-user to use keys {where} all {{request.principal.type = 'cluster', {here}, "
        f"target.key.id = '{key_id}'}}",
        # Node pools hand the volume key to Block Volume for the nodes' boot volumes.
        f"Allow service blockstorage to use keys {where} target.key.id = '{volume_key_id}'",
        f"Allow any-user to use key-delegates {where} all {{request.principal.type = 'nodepool', {here}, "
        f"target.key.id = '{volume_key_id}'}}",
    ]


class KeyGrantsComponent(pulumi.ComponentResource):
    policy: oci.identity.Policy  # depend on it before creating anything encrypted with the keys

    def __init__(self, name: str, args: KeyGrantsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mis:infra:KeyGrants", name, None, opts)
        self.policy = oci.identity.Policy(
            f"{name}-key-users", compartment_id=args.compartment_id, name=f"{name}-key-users",
            description="OCI services and this stack's clusters and node pools using its master keys",
            statements=pulumi.Output.all(args.key_id, args.volume_key_id).apply(
                lambda keys: key_statements(args, *keys)
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"policyId": self.policy.id})


class IamComponent(pulumi.ComponentResource):
    devops_group_id: pulumi.Output[str]

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

        self.devops_group_id = devops.id
        self.register_outputs({"devopsGroupId": self.devops_group_id})
