"""Workload: the Model Inference Server's Kubernetes objects, on OKE or any cluster (hybrid mode).

`server_manifests()` is the one definition of the server's objects, as plain dicts: Pulumi
declares each of them here, and the release pipeline carries the same function's output as its
inline manifest with the image digest as a `${...}` placeholder (`render_yaml`). Only the API keys
Secret (whose value comes from the Vault), the image pull secret and the deployers' RBAC are added
here, because a pipeline never carries secrets or cluster wiring.

Where the release pipeline rolls the image (`pipeline_rollouts`), Pulumi creates the Deployment
once and then leaves its image alone, so a later `pulumi up` never rolls back what the pipeline
deployed.

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
import yaml

NAME = "model-inference-server"
PORT = 8080
DATA_DIR = "/var/lib/mis"
API_KEYS_DIR = "/etc/mis/api-keys"
TMP_DIR = "/tmp"  # nosec B108 # the container's own emptyDir, shared with nobody
API_KEYS_FILE = "keys.json"
API_KEYS_SECRET = f"{NAME}-api-keys"
CONFIG_MAP = f"{NAME}-config"
USER_ID = 10001  # the image's USER (pipelines/Containerfile); numeric, so runAsNonRoot can check it
# Shutdown: the preStop pause lets the Service drop the pod before it stops accepting (endpoints are
# removed while it sleeps); then the server has MIS_GRACEFUL_TIMEOUT_S to answer what it was sent
# (server/worker.py); the kubelet's SIGKILL comes only after both, with a margin.
PRESTOP_PAUSE_S = 5
SERVER_GRACE_S = 30
TERMINATION_GRACE_S = PRESTOP_PAUSE_S + SERVER_GRACE_S + 5
IMAGE_FIELD = "spec.template.spec.containers[0].image"
IN_FLIGHT_METRIC = "mis_requests_in_flight"  # the server's gauge (server/metrics.py), per pod  # the Deployment field the release pipeline owns


@dataclass(frozen=True)
class ServerSpec:
    namespace: str
    service_account: str
    env: str
    # By digest. None only where the release pipeline creates the Deployment (no digest known yet).
    image: pulumi.Input[str] | None
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
    # Average in-flight requests per pod to scale at (the pods metric IN_FLIGHT_METRIC, which a metrics
    # adapter serves from Prometheus); None scales on CPU alone.
    in_flight_target: int | None = None


def oci_backends_config(compartment_id: str, models_bucket: str, region: str) -> dict[str, str]:
    """An OCI stack's server: the compartment's Data Science catalog and the stack's models bucket,
    reached with the pod's workload identity. No preload: the loaded set kept in the bucket decides
    what every replica serves (an admin's loadmodel), not each pod's start."""
    return {
        "MIS_CATALOG": "oci", "MIS_STORE": "oci", "MIS_OCI_AUTH": "workload_identity",
        "MIS_OCI_COMPARTMENT_ID": compartment_id, "MIS_OCI_BUCKET": models_bucket, "MIS_OCI_REGION": region,
        "MIS_PRELOAD": "",
        # The SDK's workload identity signer reads its region from here.
        "OCI_RESOURCE_PRINCIPAL_REGION": region,
    }


def accepted_findings(spec: ServerSpec) -> dict[str, str]:
    """checkov's Kubernetes findings that the Deployment accepts on purpose, as the annotations that
    tell checkov so (`checkov.io/skipN: CHECK=reason`; checkov splits on "=", so no "=" in a reason)."""
    accepted = []
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

    # The server's own default builds demo models, which needs oracle-ads: the image has none.
    config = {"MIS_WORKERS": str(spec.workers), "MIS_LOG_LEVEL": spec.log_level, "MIS_DEMO_MODELS": "false",
              **spec.config}
    # Pods restart when the configuration changes, which a ConfigMap alone does not cause.
    config_checksum = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    restricted = {
        f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")
    }
    probe = {"httpGet": {"path": "/api/v1/health/live", "port": "http"}, "timeoutSeconds": 3}
    pod_spec: dict[str, Any] = {
        "serviceAccountName": spec.service_account,
        "automountServiceAccountToken": spec.workload_identity,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
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
            # The digest pins the bytes; Always still makes every pod start show the registry its pull
            # credentials, so an image cached on a shared node serves no pod that lacks them.
            "imagePullPolicy": "Always",
            "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
            "env": [
                {"name": "MIS_ENV", "value": spec.env},
                {"name": "MIS_BIND", "value": f"0.0.0.0:{PORT}"},
                {"name": "MIS_DATA_DIR", "value": DATA_DIR},
                {"name": "MIS_API_KEYS_FILE", "value": f"{API_KEYS_DIR}/{API_KEYS_FILE}"},
                {"name": "MIS_GRACEFUL_TIMEOUT_S", "value": str(SERVER_GRACE_S)},
            ],
            "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_PAUSE_S)]}}},
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
            # With several metrics the HPA takes the largest proposal, and one it cannot read (no
            # adapter) never scales down: CPU stays the floor and the fallback.
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}] + ([
                {"type": "Pods", "pods": {"metric": {"name": IN_FLIGHT_METRIC}, "target": {
                    "type": "AverageValue", "averageValue": str(spec.in_flight_target)}}}]
                if spec.in_flight_target else []),
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


# Where each kind of server object lives in the API, for the deployers' RBAC rules.
_API_RESOURCES = {
    "Namespace": ("", "namespaces"),
    "ServiceAccount": ("", "serviceaccounts"),
    "ConfigMap": ("", "configmaps"),
    "Deployment": ("apps", "deployments"),
    "Service": ("", "services"),
    "HorizontalPodAutoscaler": ("autoscaling", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
}


def deployer_rbac(spec: ServerSpec, group: pulumi.Input[str]) -> list[dict[str, Any]]:
    """What the release pipeline's OKE stage may do: apply exactly the kinds server_manifests() holds
    in the namespace (and roll them back, which is applying again), watch the rollout, and patch
    (never create or delete) the namespace itself. No Secrets: the `edit` ClusterRole would read them."""
    name = f"{NAME}-deployer"
    namespaced = sorted({_API_RESOURCES[m["kind"]] for m in server_manifests(spec) if m["kind"] != "Namespace"})
    groups = sorted({api_group for api_group, _ in namespaced})
    rules = [
        {"apiGroups": [api_group], "resources": [r for g, r in namespaced if g == api_group],
         "verbs": ["get", "list", "watch", "create", "update", "patch"]}
        for api_group in groups
    ] + [
        # Rollout status reads the Deployment's ReplicaSets and their pods.
        {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    ]
    subjects = [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": name, "namespace": spec.namespace}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": name, "namespace": spec.namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": subjects},
        # Namespaces are cluster-scoped: a ClusterRole limited by name to this one.
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": f"{name}-{spec.namespace}"},
         "rules": [{"apiGroups": [""], "resources": ["namespaces"], "resourceNames": [spec.namespace],
                    "verbs": ["get", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": f"{name}-{spec.namespace}"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"{name}-{spec.namespace}"},
         "subjects": subjects},
    ]


def render_yaml(manifests: list[dict[str, Any]]) -> str:
    """Manifests as one multi-document YAML text, in order (kubectl apply -f, the pipeline's artifact)."""
    return yaml.safe_dump_all(manifests, sort_keys=False)


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
    "Role": k8s.rbac.v1.Role,
    "RoleBinding": k8s.rbac.v1.RoleBinding,
    "ClusterRole": k8s.rbac.v1.ClusterRole,
    "ClusterRoleBinding": k8s.rbac.v1.ClusterRoleBinding,
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
    # The release pipeline rolls the image: Pulumi creates the Deployment (if spec.image is known)
    # and never changes its image afterwards.
    pipeline_rollouts: bool = False


class WorkloadComponent(pulumi.ComponentResource):
    """Pass the target cluster's Kubernetes provider in `opts.providers`."""

    scoring_endpoint: pulumi.Output[str | None]

    def __init__(self, name: str, args: WorkloadArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mis:infra:Workload", name, None, opts)
        spec = args.spec
        if spec.image is None and not args.pipeline_rollouts:
            raise ValueError("the server image is unknown and no release pipeline creates the Deployment")
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
            if kind == "Deployment" and spec.image is None:
                continue  # the release pipeline's first run creates it
            depends = [namespace, secret, *pull_secret] if kind == "Deployment" else [namespace]
            ignore = [IMAGE_FIELD] if kind == "Deployment" and args.pipeline_rollouts else None
            declared[kind] = _declare(
                f"{name}-{kind.lower()}", manifest,
                pulumi.ResourceOptions(parent=self, depends_on=depends, ignore_changes=ignore),
            )
        if args.deployer_group_id is not None:
            # OKE maps IAM principals to RBAC subjects: the dynamic group's OCID names the group.
            for manifest in deployer_rbac(spec, args.deployer_group_id):
                _declare(f"{name}-deployer-{manifest['kind'].lower()}", manifest,
                         in_namespace if manifest["metadata"].get("namespace") else pulumi.ResourceOptions(parent=self))

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
