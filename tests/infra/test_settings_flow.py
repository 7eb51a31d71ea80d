"""Each stack setting is declared once and reaches its component as read: a section the component
takes whole is the component's own args dataclass (or extends it), never a copy of its fields."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from infra import settings
from infra.cluster import NodePoolArgs
from infra.devops import MirrorArgs
from infra.network import NetworkArgs
from infra.render import inputs, kubernetes_objects
from infra.workload import ServerSpec, server_manifests
from tests.infra import harness

INFRA = Path(settings.__file__).parent


def names(cls) -> set[str]:
    return {field.name for field in dataclasses.fields(cls)}


def loaded(stack: str) -> settings.Settings:
    return harness.with_config(stack, dict(harness.config(stack)), settings.load)


@pytest.mark.parametrize("section, args, own", [
    (settings.NetworkSettings, NetworkArgs, {"pods_cidr", "services_cidr", "public_api_reason"}),
    (settings.ServerSettings, ServerSpec, {"image_digest"}),
])
def test_a_section_extends_its_component_args_with_only_what_the_component_does_not_take(section, args, own):
    assert issubclass(section, args)
    assert names(section) - names(args) == own


def test_node_pools_and_mirrors_are_read_as_their_components_args():
    hints = {field.name: field.type for field in dataclasses.fields(settings.Settings)}
    assert hints["cpu_pool"] == hints["gpu_pool"] == "NodePoolArgs | None"
    devops = {field.name: field.type for field in dataclasses.fields(settings.DevOpsSettings)}
    assert devops["mirror"] == "MirrorArgs | None"
    assert not any(name in vars(settings) for name in ("NodePoolSettings", "MirrorSettings"))


@pytest.mark.parametrize("stack", harness.OCI_STACKS)
def test_the_network_component_gets_the_stack_settings_as_read(stack):
    s = loaded(stack)
    assert (s.network.compartment_id, s.network.public_api_endpoint) == (s.compartment_id, s.public_api_endpoint)
    assert isinstance(s.cpu_pool, NodePoolArgs)
    assert s.devops.mirror is None or isinstance(s.devops.mirror, MirrorArgs)
    (vcn,) = harness.stack_run(stack).of_type("oci:Core/vcn:Vcn")
    assert inputs(vcn)["cidrBlocks"] == [s.network.vcn_cidr]
    assert inputs(vcn)["compartmentId"] == s.compartment_id
    subnets = {inputs(subnet)["cidrBlock"] for subnet in harness.stack_run(stack).of_type("oci:Core/subnet:Subnet")}
    assert subnets == {s.network.worker_subnet_cidr, s.network.endpoint_subnet_cidr, s.network.load_balancer_subnet_cidr}


@pytest.mark.parametrize("stack", harness.STACKS)
def test_the_workload_gets_the_server_settings_as_read(stack):
    s = loaded(stack)
    assert (s.server.env, s.server.instance) == (s.env, stack)
    objects = {o["kind"]: o for o in kubernetes_objects(harness.stack_run(stack))}
    hpa, deployment = objects["HorizontalPodAutoscaler"]["spec"], objects["Deployment"]["spec"]["template"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (s.server.min_replicas, s.server.max_replicas)
    assert deployment["metadata"]["labels"]["app.kubernetes.io/instance"] == stack
    (container,) = deployment["spec"]["containers"]
    assert container["resources"] == {"requests": {"cpu": s.server.cpu_request, "memory": s.server.memory_request},
                                      "limits": {"cpu": s.server.cpu_limit, "memory": s.server.memory_limit}}
    assert objects["ConfigMap"]["data"]["MIS_WORKERS"] == str(s.server.workers)
    assert objects["Service"]["spec"]["type"] == s.server.service_type
    if harness.is_hybrid(stack):  # the settings are the spec itself: rendered alone, they are what Pulumi declares
        assert [objects[m["kind"]] for m in server_manifests(s.server)] == server_manifests(s.server)


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


COMPONENTS = sorted(p for p in INFRA.glob("*.py") if p.stem not in ("__init__", "__main__", "settings", "render"))


@pytest.mark.parametrize("path", COMPONENTS, ids=lambda path: path.stem)
def test_components_import_neither_the_settings_nor_each_other(path):
    infra = {name for name in imports(path) if name.startswith("infra")}
    assert not infra, f"{path.name} imports {sorted(infra)}"


def test_only_the_settings_read_pulumi_config():
    readers = [p.name for p in INFRA.glob("*.py") if "pulumi.Config(" in p.read_text()]
    assert readers == ["settings.py"]
