"""Workload: the Model Inference Server's Kubernetes objects, on OKE or any cluster (hybrid mode).

`server_manifests()` is the one definition of the server's objects, as plain dicts: Pulumi
declares each of them here, and the release pipeline renders the same function into its inline
manifest with the image tag as a `${...}` placeholder. Only the API keys Secret (whose value comes
from the Vault) and the deployers' RoleBinding are added here, because a pipeline never carries
secrets or cluster wiring.

Container contract: port 8080, MIS_* variables, health probes under /api/v1/health, a writable
MIS_DATA_DIR, and the API keys as a file (never as an environment variable).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import pulumi
import pulumi_kubernetes as k8s

NAME = "model-inference-server"
PORT = 8080
DATA_DIR = "/var/lib/mis"
API_KEYS_DIR = "/etc/mis/api-keys"
TMP_DIR = "/tmp"  # nosec B108 # the container's own emptyDir, shared with nobody
API_KEYS_FILE = "keys.json"
API_KEYS_SECRET = f"{NAME}-api-keys"
CONFIG_MAP = f"{NAME}-config"
USER_ID = 10001  # any non-root uid: the image must not rely on a named user


@dataclass(frozen=True)
class ServerSpec:
    namespace: str
    service_account: str
    env: str
    image: str
    min_replicas: int
    max_replicas: int
    workers: int
    log_level: str
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    data_size_limit: str
    service_type: str
    instance: str  # the stack, as the app.kubernetes.io/instance label
    # Values may be Pulumi outputs (an NSG id) when Pulumi declares the objects.
    service_annotations: Mapping[str, Any] = field(default_factory=dict)
    image_pull_secret: str | None = None
    config: Mapping[str, str] = field(default_factory=dict)
    # OKE workload identity needs the service account token in the pod and the proxymux port.
    workload_identity: bool = False


def accepted_findings(spec: ServerSpec) -> dict[str, str]:
    """checkov's Kubernetes findings that the Deployment accepts on purpose, as the annotations that
    tell checkov so (`checkov.io/skipN: CHECK=reason`; checkov splits on "=", so no "=" in a reason)."""
    accepted = [("CKV_K8S_43", "images are referenced by tag; promotion by digest is the release pipeline's job")]
    if spec.env != "prod":
        accepted.append(("CKV_K8S_14", "dev and qa run the newest build on purpose; prod pins a release tag"))
    if spec.workload_identity:
        accepted.append(("CKV_K8S_38", "OKE workload identity exchanges this token for the pod's OCI credentials"))
    return {f"checkov.io/skip{n}": f"{check}={reason}" for n, (check, reason) in enumerate(accepted, 1)}


def server_manifests(spec: ServerSpec) -> list[dict[str, Any]]:
    """Namespace, ServiceAccount, ConfigMap, Deployment, Service, HPA, PDB and NetworkPolicy."""
    labels = {
        "app.kubernetes.io/name": NAME,
        "app.kubernetes.io/instance": spec.instance,
        "app.kubernetes.io/part-of": "model-inference-platform",
        "mis/env": spec.env,
    }
    selector = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/instance": spec.instance}

    def meta(name: str, **extra) -> dict[str, Any]:
        return {"name": name, "namespace": spec.namespace, "labels": labels, **extra}

    config = {"MIS_WORKERS": str(spec.workers), "MIS_LOG_LEVEL": spec.log_level, **spec.config}
    # Pods restart when the configuration changes, which a ConfigMap alone does not cause.
    config_checksum = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    restricted = {
        f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")
    }
    probe = {"httpGet": {"path": "/api/v1/health/live", "port": "http"}, "timeoutSeconds": 3}
    pod_spec: dict[str, Any] = {
        "serviceAccountName": spec.service_account,
        "automountServiceAccountToken": spec.workload_identity,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "fsGroup": USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [{
            "name": "server",
            "image": spec.image,
            # A tag can move (dev's latest), and a cached image must not spare a pod its pull credentials.
            "imagePullPolicy": "Always",
            "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
            "env": [
                {"name": "MIS_ENV", "value": spec.env},
                {"name": "MIS_BIND", "value": f"0.0.0.0:{PORT}"},
                {"name": "MIS_DATA_DIR", "value": DATA_DIR},
                {"name": "MIS_API_KEYS_FILE", "value": f"{API_KEYS_DIR}/{API_KEYS_FILE}"},
            ],
            "envFrom": [{"configMapRef": {"name": CONFIG_MAP}}],
            "resources": {
                "requests": {"cpu": spec.cpu_request, "memory": spec.memory_request},
                "limits": {"cpu": spec.cpu_limit, "memory": spec.memory_limit},
            },
            # Loading models can take minutes; liveness only starts counting once started.
            "startupProbe": {**probe, "periodSeconds": 5, "failureThreshold": 60},
            "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
            "readinessProbe": {
                "httpGet": {"path": "/api/v1/health/ready", "port": "http"},
                "timeoutSeconds": 3, "periodSeconds": 5, "failureThreshold": 3,
            },
            "securityContext": {
                "runAsNonRoot": True,
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumeMounts": [
                {"name": "data", "mountPath": DATA_DIR},
                {"name": "tmp", "mountPath": TMP_DIR},
                {"name": "api-keys", "mountPath": API_KEYS_DIR, "readOnly": True},
            ],
        }],
        "volumes": [
            {"name": "data", "emptyDir": {"sizeLimit": spec.data_size_limit}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
            {"name": "api-keys", "secret": {
                "secretName": API_KEYS_SECRET, "defaultMode": 0o440,
                "items": [{"key": API_KEYS_FILE, "path": API_KEYS_FILE}],
            }},
        ],
        # Spread replicas over availability domains (zones) and nodes, preferring but not requiring it.
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": selector}}
            for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
        ],
    }
    if spec.image_pull_secret:
        pod_spec["imagePullSecrets"] = [{"name": spec.image_pull_secret}]

    egress_ports = [443] + ([12250] if spec.workload_identity else [])
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": spec.namespace, "labels": {**labels, **restricted}}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(spec.service_account),
         "automountServiceAccountToken": spec.workload_identity},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(CONFIG_MAP), "data": config},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": meta(NAME, annotations=accepted_findings(spec)), "spec": {
            # No `replicas`: the HorizontalPodAutoscaler owns the count, and re-applying this
            # object (Pulumi or the release pipeline) must not reset it.
            "selector": {"matchLabels": selector},
            "revisionHistoryLimit": 5,
            "minReadySeconds": 5,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels, "annotations": {"mis/config-checksum": config_checksum}},
                "spec": pod_spec,
            },
        }},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": meta(NAME, annotations=dict(spec.service_annotations)), "spec": {
             "type": spec.service_type,
             "selector": selector,
             "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
         }},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta(NAME), "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
            "minReplicas": spec.min_replicas,
            "maxReplicas": spec.max_replicas,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        }},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta(NAME), "spec": {
            "maxUnavailable": 1, "selector": {"matchLabels": selector},
        }},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta(NAME), "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": PORT}]}],
            "egress": [
                {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                         "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                 "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                # OCI APIs (Object Storage, Data Science) and, on OKE, the workload identity token exchange.
                {"ports": [{"protocol": "TCP", "port": port} for port in egress_ports]},
            ],
        }},
    ]


def oke_load_balancer_annotations(nsg_id: pulumi.Input[str], internal: bool) -> dict[str, Any]:
    """How OKE's cloud controller should build the Service's load balancer: a flexible one in our
    NSG, whose rules the network component manages (so the controller must not edit any)."""
    annotations = {
        "oci.oraclecloud.com/load-balancer-type": "lb",
        "service.beta.kubernetes.io/oci-load-balancer-shape": "flexible",
        "service.beta.kubernetes.io/oci-load-balancer-shape-flex-min": "10",
        "service.beta.kubernetes.io/oci-load-balancer-shape-flex-max": "100",
        "oci.oraclecloud.com/oci-network-security-groups": nsg_id,
        "oci.oraclecloud.com/security-rule-management-mode": "None",
    }
    if internal:
        annotations["service.beta.kubernetes.io/oci-load-balancer-internal"] = "true"
    return annotations


_RESOURCE_CLASSES = {
    "Namespace": k8s.core.v1.Namespace,
    "ServiceAccount": k8s.core.v1.ServiceAccount,
    "ConfigMap": k8s.core.v1.ConfigMap,
    "Secret": k8s.core.v1.Secret,
    "Deployment": k8s.apps.v1.Deployment,
    "Service": k8s.core.v1.Service,
    "HorizontalPodAutoscaler": k8s.autoscaling.v2.HorizontalPodAutoscaler,
    "PodDisruptionBudget": k8s.policy.v1.PodDisruptionBudget,
    "NetworkPolicy": k8s.networking.v1.NetworkPolicy,
    "RoleBinding": k8s.rbac.v1.RoleBinding,
}


def _declare(name: str, manifest: Mapping[str, Any], opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    """An explicit pulumi_kubernetes resource for one manifest (top-level keys become arguments)."""
    arguments = {
        re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower(): value
        for key, value in manifest.items() if key not in ("apiVersion", "kind")
    }
    return _RESOURCE_CLASSES[manifest["kind"]](name, **arguments, opts=opts)


@dataclass(frozen=True)
class RegistryCredentials:
    """Login for a private registry; becomes the pod's image pull secret (named by spec.image_pull_secret)."""

    server: pulumi.Input[str]
    username: str
    password: pulumi.Output[str]  # secret


@dataclass(frozen=True)
class WorkloadArgs:
    spec: ServerSpec
    api_keys_document: pulumi.Output[str]  # secret
    registry: RegistryCredentials | None = None
    # OKE: the DevOps pipelines' dynamic group, which deploys into the namespace.
    deployer_group_id: pulumi.Input[str] | None = None


class WorkloadComponent(pulumi.ComponentResource):
    """Pass the target cluster's Kubernetes provider in `opts.providers`."""

    scoring_endpoint: pulumi.Output[str | None]

    def __init__(self, name: str, args: WorkloadArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mis:infra:Workload", name, None, opts)
        spec = args.spec
        manifests = server_manifests(spec)
        namespace = _declare(f"{name}-namespace", manifests[0], pulumi.ResourceOptions(parent=self))
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
        secret = _declare(f"{name}-api-keys", {
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": API_KEYS_SECRET, "namespace": spec.namespace},
            "type": "Opaque",
            "stringData": {API_KEYS_FILE: pulumi.Output.secret(args.api_keys_document)},
        }, in_namespace)
        pull_secret = []
        if args.registry is not None:
            registry = args.registry
            pull_secret.append(_declare(f"{name}-image-pull", {
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": spec.image_pull_secret, "namespace": spec.namespace},
                "type": "kubernetes.io/dockerconfigjson",
                "stringData": {".dockerconfigjson": pulumi.Output.secret(
                    pulumi.Output.all(registry.server, registry.password).apply(
                        lambda values: _docker_config(values[0], registry.username, values[1])
                    )
                )},
            }, in_namespace))
        declared = {}
        for manifest in manifests[1:]:
            kind = manifest["kind"]
            depends = [namespace, secret, *pull_secret] if kind == "Deployment" else [namespace]
            declared[kind] = _declare(
                f"{name}-{kind.lower()}", manifest, pulumi.ResourceOptions(parent=self, depends_on=depends)
            )
        if args.deployer_group_id is not None:
            # OKE maps IAM principals to RBAC subjects; the pipelines may edit this namespace only.
            _declare(f"{name}-deployers", {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": f"{NAME}-deployers", "namespace": spec.namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": args.deployer_group_id},
                ],
            }, in_namespace)

        if spec.service_type == "LoadBalancer":
            self.scoring_endpoint = declared["Service"].status.apply(_load_balancer_url)
        else:
            self.scoring_endpoint = pulumi.Output.from_input(f"http://{NAME}.{spec.namespace}.svc.cluster.local")
        self.register_outputs({"scoringEndpoint": self.scoring_endpoint})


def _docker_config(server: str, username: str, password: str) -> str:
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps({"auths": {server: {"username": username, "password": password, "auth": auth}}})


def _load_balancer_url(status) -> str | None:
    ingress = (status and status.load_balancer and status.load_balancer.ingress) or []
    address = ingress and (ingress[0].ip or ingress[0].hostname)
    return f"http://{address}" if address else None
