"""Cluster: an OKE enhanced cluster with a CPU node pool and an optional, tainted GPU node pool.

Node images come from OKE's node pool options for the cluster's Kubernetes version (the newest
matching OKE image), never from a hard-coded OCID, so a version bump in the stack file picks the
right image in every region. The cluster autoscaler add-on owns the pool sizes between the bounds
of the stack (it authenticates with workload identity; IAM grants it the node pool permissions).
Kubernetes secrets in etcd and the nodes' boot volumes are encrypted with the stack's Vault keys.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Iterable

import pulumi
import pulumi_oci as oci

GPU_TAINT = "nvidia.com/gpu=present:NoSchedule"
POOL_LABEL = "mis/pool"
_IMAGE_DATE = re.compile(r"-(\d{4}\.\d{2}\.\d{2})-")

# OKE's documented way to add kubelet flags: fetch and run the default init script with extra args.
_GPU_CLOUD_INIT = f"""#!/bin/bash
curl --fail -H "Authorization: Bearer Oracle" -L0 \\
  http://169.254.169.254/opc/v2/instance/metadata/oke_init_script | base64 --decode > /var/run/oke-init.sh
bash /var/run/oke-init.sh --kubelet-extra-args "--register-with-taints={GPU_TAINT}"
"""


@dataclass(frozen=True)
class NodePoolArgs:
    shape: str
    ocpus: float | None
    memory_gbs: float | None
    min_nodes: int
    max_nodes: int
    boot_volume_gbs: int


@dataclass(frozen=True)
class ClusterArgs:
    compartment_id: str
    kubernetes_version: str
    vcn_id: pulumi.Input[str]
    endpoint_subnet_id: pulumi.Input[str]
    api_nsg_id: pulumi.Input[str]
    public_api_endpoint: bool
    load_balancer_subnet_id: pulumi.Input[str]
    worker_subnet_id: pulumi.Input[str]
    worker_nsg_id: pulumi.Input[str]
    pods_cidr: str
    services_cidr: str
    cpu_pool: NodePoolArgs
    gpu_pool: NodePoolArgs | None
    kms_key_id: pulumi.Input[str]  # Kubernetes secrets at rest
    volume_kms_key_id: pulumi.Input[str]  # boot volumes (Block Volume takes single-version keys only)


def pick_node_image(sources: Iterable[tuple[str, str]], kubernetes_version: str, gpu: bool, arm: bool) -> str:
    """The newest OKE image (source name, image id) built for this version, GPU-ness and CPU architecture."""
    marker = f"-OKE-{kubernetes_version.lstrip('v')}-"
    matches = [
        (name, image_id) for name, image_id in sources
        if marker in name and ("GPU" in name) == gpu and ("aarch64" in name) == arm
    ]
    if not matches:
        kind = ("GPU " if gpu else "") + ("aarch64" if arm else "x86_64")
        raise ValueError(f"no OKE {kind} node image for Kubernetes {kubernetes_version} in this region")

    def newest(item: tuple[str, str]):
        date = _IMAGE_DATE.search(item[0])
        return (date.group(1) if date else "", item[0])

    return max(matches, key=newest)[1]


def _is_arm(shape: str) -> bool:
    # Ampere shapes (VM.Standard.A1.Flex, ...) run aarch64 images.
    return bool(re.match(r"^(VM|BM)\.Standard\.A\d", shape))


class ClusterComponent(pulumi.ComponentResource):
    cluster_id: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mis:infra:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        invoke = pulumi.InvokeOutputOptions(parent=self)

        cluster = oci.containerengine.Cluster(
            name,
            compartment_id=args.compartment_id,
            name=name,
            kubernetes_version=args.kubernetes_version,
            vcn_id=args.vcn_id,
            # Enhanced clusters are required for add-ons and workload identity.
            type="ENHANCED_CLUSTER",
            kms_key_id=args.kms_key_id,
            cluster_pod_network_options=[{"cni_type": "FLANNEL_OVERLAY"}],
            endpoint_config={
                "subnet_id": args.endpoint_subnet_id,
                "is_public_ip_enabled": args.public_api_endpoint,
                "nsg_ids": [args.api_nsg_id],
            },
            options={
                "service_lb_subnet_ids": [args.load_balancer_subnet_id],
                "kubernetes_network_config": {"pods_cidr": args.pods_cidr, "services_cidr": args.services_cidr},
            },
            opts=child,
        )
        # Option set "all" does not depend on the cluster, so previews resolve the images too.
        options = oci.containerengine.get_node_pool_option_output(
            node_pool_option_id="all", compartment_id=args.compartment_id,
            node_pool_k8s_version=args.kubernetes_version, opts=invoke,
        )
        domains = oci.identity.get_availability_domains_output(compartment_id=args.compartment_id, opts=invoke)
        placements = pulumi.Output.all(domains, args.worker_subnet_id).apply(
            lambda values: [
                {"availability_domain": ad.name, "subnet_id": values[1]} for ad in values[0].availability_domains
            ]
        )

        def node_pool(role: str, pool: NodePoolArgs, gpu: bool) -> oci.containerengine.NodePool:
            image_id = options.apply(
                lambda result: pick_node_image(
                    [(s.source_name, s.image_id) for s in result.sources if s.source_type == "IMAGE"],
                    args.kubernetes_version, gpu=gpu, arm=_is_arm(pool.shape),
                )
            )
            flexible = pool.ocpus is not None
            return oci.containerengine.NodePool(
                f"{name}-{role}",
                cluster_id=cluster.id,
                compartment_id=args.compartment_id,
                name=f"{name}-{role}",
                kubernetes_version=args.kubernetes_version,
                node_shape=pool.shape,
                node_shape_config={"ocpus": pool.ocpus, "memory_in_gbs": pool.memory_gbs} if flexible else None,
                node_source_details={
                    "source_type": "IMAGE", "image_id": image_id, "boot_volume_size_in_gbs": str(pool.boot_volume_gbs),
                },
                node_config_details={
                    "size": pool.min_nodes,
                    "placement_configs": placements,
                    "nsg_ids": [args.worker_nsg_id],
                    "kms_key_id": args.volume_kms_key_id,
                    "is_pv_encryption_in_transit_enabled": True,
                },
                initial_node_labels=[{"key": POOL_LABEL, "value": role}],
                node_metadata={"user_data": base64.b64encode(_GPU_CLOUD_INIT.encode()).decode()} if gpu else None,
                node_eviction_node_pool_settings={"eviction_grace_duration": "PT30M"},
                # Upgrades replace nodes one at a time, never dropping below the current size.
                node_pool_cycling_details={
                    "is_node_cycling_enabled": True, "maximum_surge": "1", "maximum_unavailable": "0",
                },
                # After creation the cluster autoscaler owns the size; `pulumi up` must not reset it.
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=["nodeConfigDetails.size"]),
            )

        pools = [(node_pool("cpu", args.cpu_pool, gpu=False), args.cpu_pool)]
        if args.gpu_pool is not None:
            pools.append((node_pool("gpu", args.gpu_pool, gpu=True), args.gpu_pool))
            oci.containerengine.Addon(
                f"{name}-nvidia-gpu-plugin", cluster_id=cluster.id, addon_name="NvidiaGpuPlugin",
                remove_addon_resources_on_delete=True, opts=child,
            )
        bounds = pulumi.Output.all(*[pool.id for pool, _ in pools]).apply(
            lambda ids: ",".join(
                f"{spec.min_nodes}:{spec.max_nodes}:{pool_id}" for pool_id, (_, spec) in zip(ids, pools)
            )
        )
        oci.containerengine.Addon(
            f"{name}-cluster-autoscaler", cluster_id=cluster.id, addon_name="ClusterAutoscaler",
            remove_addon_resources_on_delete=True,
            configurations=[{"key": "nodes", "value": bounds}, {"key": "authType", "value": "workload"}],
            opts=child,
        )

        self.cluster_id = cluster.id
        self.kubeconfig = pulumi.Output.secret(
            oci.containerengine.get_cluster_kube_config_output(
                cluster_id=cluster.id, token_version="2.0.0",
                endpoint="PUBLIC_ENDPOINT" if args.public_api_endpoint else "PRIVATE_ENDPOINT", opts=invoke,
            ).content
        )
        self.register_outputs({"clusterId": self.cluster_id, "kubeconfig": self.kubeconfig})
