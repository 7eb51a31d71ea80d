"""Composition root: settings -> components -> exports. Nothing else lives here."""

import sys
from dataclasses import replace
from pathlib import Path

if not __package__:
    # Pulumi runs this directory as a script; make the `infra` package importable from the repository.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pulumi  # noqa: E402
import pulumi_kubernetes as k8s  # noqa: E402
import pulumi_oci as oci  # noqa: E402

from infra import settings as stack_settings  # noqa: E402
from infra.cluster import ClusterArgs, ClusterComponent  # noqa: E402
from infra.devops import IMAGE_DIGEST, DevOpsArgs, DevOpsComponent  # noqa: E402
from infra.iam import IamArgs, IamComponent, KeyGrantsArgs, KeyGrantsComponent  # noqa: E402
from infra.logs import LogsArgs, LogsComponent  # noqa: E402
from infra.network import NetworkComponent  # noqa: E402
from infra.registries import RegistriesArgs, RegistriesComponent  # noqa: E402
from infra.storage import StorageArgs, StorageComponent, bucket_names  # noqa: E402
from infra.vault import ApiKeys, VaultArgs, VaultComponent  # noqa: E402
from infra.workload import (  # noqa: E402
    RegistryCredentials,
    WorkloadArgs,
    WorkloadComponent,
    oci_backends_config,
    oke_load_balancer_annotations,
    render_yaml,
    server_manifests,
)


def deploy_on_oci(s: stack_settings.Settings) -> None:
    name = s.name_prefix
    # Explicit providers: every resource states its region, and nothing falls back to ambient config.
    auth = {"auth": s.oci_auth, "config_file_profile": s.oci_profile}
    region = oci.Provider("oci-region", region=s.region, **auth)
    home = oci.Provider("oci-home", region=s.home_region, **auth)
    in_region = pulumi.ResourceOptions(providers=[region])

    net = s.network
    network = NetworkComponent(name, net, in_region)
    api_keys = ApiKeys(name)
    vault = VaultComponent(name, VaultArgs(
        compartment_id=s.compartment_id, vault_type=s.vault_type, key_protection_mode=s.key_protection_mode,
        api_keys=api_keys.keys, protect=s.protect, key_rotation_days=s.key_rotation_days,
    ), in_region)
    key_grants = KeyGrantsComponent(name, KeyGrantsArgs(
        compartment_id=s.compartment_id, region=s.region, key_id=vault.key_id, volume_key_id=vault.volume_key_id,
    ), pulumi.ResourceOptions(providers=[home]))
    cluster = ClusterComponent(name, ClusterArgs(
        compartment_id=s.compartment_id, kubernetes_version=s.kubernetes_version, vcn_id=network.vcn_id,
        endpoint_subnet_id=network.endpoint_subnet_id, api_nsg_id=network.api_nsg_id,
        public_api_endpoint=s.public_api_endpoint, load_balancer_subnet_id=network.load_balancer_subnet_id,
        worker_subnet_id=network.worker_subnet_id, worker_nsg_id=network.worker_nsg_id,
        pods_cidr=net.pods_cidr, services_cidr=net.services_cidr, cpu_pool=s.cpu_pool, gpu_pool=s.gpu_pool,
        kms_key_id=vault.key_id, volume_kms_key_id=vault.volume_key_id,
    ), pulumi.ResourceOptions(providers=[region], depends_on=[key_grants.policy]))
    buckets = bucket_names(name)
    iam = IamComponent(name, IamArgs(
        tenancy_id=s.tenancy_id, compartment_id=s.compartment_id, region=s.region, cluster_id=cluster.cluster_id,
        namespace=s.server.namespace, service_account=s.server.service_account,
        model_bucket=buckets["models"], conda_bucket=buckets["condaPacks"],
        mirror_token_secret_id=s.devops.mirror.access_token_secret_id if s.devops.mirror else None,
        private_deploy_channel=not s.public_api_endpoint,
    ), pulumi.ResourceOptions(providers=[home]))
    namespace = oci.objectstorage.get_namespace_output(
        compartment_id=s.compartment_id, opts=pulumi.InvokeOutputOptions(provider=region)
    ).namespace
    storage = StorageComponent(name, StorageArgs(
        compartment_id=s.compartment_id, namespace=namespace, kms_key_id=vault.key_id, protect=s.protect,
    ), pulumi.ResourceOptions(providers=[region], depends_on=[key_grants.policy]))
    logs = LogsComponent(name, LogsArgs(
        compartment_id=s.compartment_id,
        subnet_ids={"workers": network.worker_subnet_id, "api": network.endpoint_subnet_id,
                    "lb": network.load_balancer_subnet_id},
        model_bucket=storage.bucket_names["models"], retention_days=s.log_retention_days,
    ), in_region)
    registries = RegistriesComponent(name, RegistriesArgs(
        compartment_id=s.compartment_id, region=s.region, namespace=namespace, immutable=s.env == "prod",
        protect=s.protect,
    ), in_region)

    kubernetes = k8s.Provider("oke", kubeconfig=cluster.kubeconfig)
    repository = registries.image_repositories["server"]
    image = s.server.image or (
        repository.apply(lambda repo: f"{repo}@{s.server.image_digest}") if s.server.image_digest else None
    )
    annotations = oke_load_balancer_annotations(network.load_balancer_nsg_id, internal=not net.public_load_balancer)
    registry, pull_secret = None, s.server.image_pull_secret
    if s.registry_user:
        registry = RegistryCredentials(f"{s.region}.ocir.io", s.registry_user, s.registry_auth_token)
        pull_secret = pull_secret or "ocir-pull"
    pod = dict(service_annotations=annotations, workload_identity=True, image_pull_secret=pull_secret,
               config={**oci_backends_config(s.compartment_id, buckets["models"], s.region), **s.server.config})
    workload = WorkloadComponent(f"{name}-server", WorkloadArgs(
        spec=replace(s.server, image=image, **pod),
        api_keys_document=vault.api_keys_document,
        registry=registry,
        deployer_group_id=iam.devops_group_id,
        pipeline_rollouts=True,
    ), pulumi.ResourceOptions(providers=[kubernetes], depends_on=[storage]))
    # The release pipeline applies the same objects, the image left for it to fill in by digest.
    release = replace(s.server, image=repository.apply(lambda repo: f"{repo}@${{{IMAGE_DIGEST}}}"), **pod)
    devops = s.devops
    pipelines = DevOpsComponent(name, DevOpsArgs(
        compartment_id=s.compartment_id, branch=devops.branch, build_on_push=devops.build_on_push,
        approvals=devops.approvals, conda_pack_uri=devops.conda_pack,
        mirror=devops.mirror,
        image_repositories=registries.image_repositories,
        manifest=pulumi.Output.from_input(server_manifests(release)).apply(render_yaml),
        namespace=s.server.namespace, cluster_id=cluster.cluster_id,
        private_channel_subnet_id=None if s.public_api_endpoint else network.worker_subnet_id,
        private_channel_nsg_ids=None if s.public_api_endpoint else [network.worker_nsg_id],
    ), in_region)

    pulumi.export("scoringEndpoint", workload.scoring_endpoint)
    pulumi.export("imageRepositories", registries.image_repositories)
    pulumi.export("artifactRepositoryId", registries.artifact_repository_id)
    pulumi.export("clusterId", cluster.cluster_id)
    pulumi.export("kubeconfig", cluster.kubeconfig)
    pulumi.export("bucketNames", storage.bucket_names)
    pulumi.export("vaultId", vault.vault_id)
    pulumi.export("logGroupId", logs.log_group_id)
    pulumi.export("apiKeySecretIds", vault.secret_ids)
    pulumi.export("codeRepositoryUrl", pipelines.repository_url)
    pulumi.export("buildPipelineId", pipelines.build_pipeline_id)
    pulumi.export("deployPipelineId", pipelines.deploy_pipeline_id)


def deploy_hybrid(s: stack_settings.Settings) -> None:
    # Only the workload, on a cluster Pulumi did not create (another cloud, on-premises, the edge).
    kubernetes = k8s.Provider("target", kubeconfig=s.kubeconfig, context=s.kube_context)
    api_keys = ApiKeys(s.name_prefix)
    workload = WorkloadComponent(f"{s.name_prefix}-server", WorkloadArgs(
        spec=s.server, api_keys_document=api_keys.document,
    ), pulumi.ResourceOptions(providers=[kubernetes]))
    pulumi.export("scoringEndpoint", workload.scoring_endpoint)
    pulumi.export("image", s.server.image)
    pulumi.export("kubeconfig", s.kubeconfig)


stack = stack_settings.load()
pulumi.export("env", stack.env)
(deploy_hybrid if stack.mode == "hybrid" else deploy_on_oci)(stack)
