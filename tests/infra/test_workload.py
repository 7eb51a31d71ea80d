"""server_manifests(): the one definition of the server's Kubernetes objects."""

from __future__ import annotations

import kubernetes_validate
import pytest

from infra import settings
from infra.workload import API_KEYS_DIR, ServerSpec, server_manifests


def spec(**changes) -> ServerSpec:
    values = dict(
        namespace="mis", service_account="model-inference-server", env="qa",
        image="iad.ocir.io/ns/mis/model-inference-server:${BUILDRUN_HASH}", min_replicas=2, max_replicas=4,
        workers=2, log_level="info", cpu_request="500m", cpu_limit="2", memory_request="1Gi",
        memory_limit="4Gi", data_size_limit="10Gi", service_type="LoadBalancer", instance="qa-sanjose",
    )
    values.update(changes)
    return ServerSpec(**values)


@pytest.mark.parametrize("minor", list(settings.KUBERNETES_MINORS))
def test_manifests_validate_strictly_for_every_supported_version(minor):
    for manifest in server_manifests(spec(workload_identity=True, image_pull_secret="ocir")):
        kubernetes_validate.validate(manifest, f"1.{minor}.0", strict=True)


def test_the_image_placeholder_survives_for_the_release_pipeline():
    deployment = next(m for m in server_manifests(spec()) if m["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":${BUILDRUN_HASH}")


def test_manifests_are_plain_data_with_no_secret_values():
    manifests = server_manifests(spec())
    assert [m["kind"] for m in manifests] == [
        "Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
        "PodDisruptionBudget", "NetworkPolicy",
    ]
    assert "Secret" not in {m["kind"] for m in manifests}
    deployment = manifests[3]
    # The HPA owns the replica count; re-applying the Deployment must not reset it.
    assert "replicas" not in deployment["spec"]


def test_config_change_rolls_the_pods():
    def checksum(s):
        deployment = next(m for m in server_manifests(s) if m["kind"] == "Deployment")
        return deployment["spec"]["template"]["metadata"]["annotations"]["mis/config-checksum"]

    assert checksum(spec()) != checksum(spec(log_level="debug"))
    assert checksum(spec()) == checksum(spec())


def test_api_keys_are_a_read_only_file_mount():
    pod = server_manifests(spec())[3]["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == API_KEYS_DIR)
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["defaultMode"] == 0o440


def test_workload_identity_decides_token_mount_and_egress():
    without = server_manifests(spec(workload_identity=False))
    with_identity = server_manifests(spec(workload_identity=True))
    assert without[3]["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert with_identity[3]["spec"]["template"]["spec"]["automountServiceAccountToken"] is True

    def egress_ports(manifests):
        return {p["port"] for rule in manifests[-1]["spec"]["egress"] for p in rule["ports"]}

    assert 12250 in egress_ports(with_identity) and 12250 not in egress_ports(without)


def test_namespace_enforces_the_restricted_pod_security_standard():
    labels = server_manifests(spec())[0]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
