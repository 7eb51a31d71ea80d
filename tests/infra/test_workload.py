"""server_manifests(): the one definition of the server's Kubernetes objects, and checkov's view of
every stack's objects as the workload component declares them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from infra import render, settings
from server.config import Config
from infra.workload import API_KEYS_DIR, ServerSpec, accepted_findings, server_manifests
from tests.infra import harness


def spec(**changes) -> ServerSpec:
    values = dict(
        namespace="mis", service_account="model-inference-server", env="qa",
        image="iad.ocir.io/ns/mis/model-inference-server@${IMAGE_DIGEST}", min_replicas=2, max_replicas=4,
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
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith("@${IMAGE_DIGEST}")


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


def test_a_stopping_pod_leaves_the_service_then_drains_before_the_kubelet_kills_it():
    pod = server_manifests(spec())[3]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    env = {e["name"]: e["value"] for e in container["env"]}
    grace = Config.from_env({**env, "MIS_AUTH": "on"}).graceful_timeout_s  # what the server will take
    assert pause >= container["readinessProbe"]["periodSeconds"]  # a probe's worth for endpoints to go
    assert pod["terminationGracePeriodSeconds"] > pause + grace


def test_the_autoscaler_scales_on_in_flight_requests_when_asked_and_always_on_cpu():
    def metrics(**changes):
        return next(m for m in server_manifests(spec(**changes)) if m["kind"] == "HorizontalPodAutoscaler")["spec"]["metrics"]

    assert [m["type"] for m in metrics()] == ["Resource"]
    cpu, pods = metrics(in_flight_target=8)
    assert cpu["resource"]["name"] == "cpu"
    assert pods["pods"] == {"metric": {"name": "mis_requests_in_flight"},
                            "target": {"type": "AverageValue", "averageValue": "8"}}
    assert "mis_requests_in_flight" in Path("server/metrics.py").read_text()  # the gauge the server exports


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


def test_accepted_checkov_findings_depend_on_the_stack():
    def checks(**changes):
        return sorted(value.split("=")[0] for value in accepted_findings(spec(**changes)).values())

    # Images are by digest in every env: only the workload identity token is an accepted finding.
    assert checks(env="prod") == checks(env="dev") == []
    assert checks(env="dev", workload_identity=True) == ["CKV_K8S_38"]
    for value in accepted_findings(spec(env="dev", workload_identity=True)).values():
        check, reason = value.split("=")  # checkov's own parsing: exactly one "=", then the reason
        assert check.startswith("CKV_K8S_") and len(reason.split()) >= 5


def checkov() -> Path:
    """The checkov executable: $CHECKOV (the Makefile sets it), else .venv-scan's, from the repository root."""
    path = Path(os.environ.get("CHECKOV", ".venv-scan/bin/checkov"))
    path = path if path.is_absolute() else harness.ROOT / path
    assert os.access(path, os.X_OK), (
        f"checkov is not at {path}: `make test` builds .venv-scan with it, or point CHECKOV at a checkov executable"
    )
    return path


def test_checkov_passes_every_stacks_kubernetes_objects(tmp_path):
    # The objects exactly as Pulumi declares them (Secrets and RBAC included), one file per stack, and
    # the release pipeline's manifest of each OCI stack (`python -m infra.render STACK --show pipeline`).
    scanned = set()
    for stack in harness.STACKS:
        run = harness.stack_run(stack)
        objects = [harness.inputs(r) for r in run.resources if r.type.startswith("kubernetes:")]
        (tmp_path / f"{stack}.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
        scanned.add(f"{stack}.yaml")
        if stack in harness.OCI_STACKS:
            (tmp_path / f"{stack}-pipeline.yaml").write_text(render.pipeline_manifest(run))
            scanned.add(f"{stack}-pipeline.yaml")
    # One run for all stacks (checkov starts slowly), offline, from a directory with no checkov config,
    # and blind to CKV_* variables that could skip checks.
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("CKV_", "BC_", "PRISMA_"))}
    completed = subprocess.run(
        [checkov(), "--directory", str(tmp_path), "--framework", "kubernetes", "--skip-download", "--output", "json"],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300, check=False,
    )
    assert completed.returncode in (0, 1), completed.stderr[-2000:]
    report = json.loads(completed.stdout)
    summary, results = report["summary"], report["results"]
    failures = [
        f"{check['check_id']} {check['check_name']}: {check['resource']} in {check['file_path'].lstrip('/')}"
        for check in results["failed_checks"]
    ]
    assert not failures, "checkov failed:\n" + "\n".join(failures)
    assert summary["parsing_errors"] == 0
    # Not vacuous: every stack's file was scanned and passed checks.
    assert {check["file_path"].lstrip("/") for check in results["passed_checks"]} == scanned
    assert summary["passed"] >= 50 * len(scanned)
    for check in results["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment", "")
        assert reason.strip() and reason != "No comment provided", f"{check['check_id']} is skipped without a reason"
