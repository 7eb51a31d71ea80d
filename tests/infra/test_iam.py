"""The IAM components under Pulumi mocks: the grants on the stack's keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.infra.harness import OCI_STACKS, config, inputs, setting, stack_run


def key_grants(stack: str) -> list[str]:
    result = stack_run(stack)
    (policy,) = [p for p in result.of_type("oci:Identity/policy:Policy") if p.name.endswith("-key-users")]
    return inputs(policy)["statements"]


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_each_key_grant_names_one_key_in_the_stack_compartment(stack):
    key, volume_key = stack_run(stack).master_keys()
    where = f" in compartment id {setting(stack, 'compartmentId')} where "
    statements = key_grants(stack)
    for statement in statements:
        assert where in statement, statement
        assert re.findall(r"target\.key\.id = '([^']+)'", statement) in ([key.id], [volume_key.id]), statement
    region = config(stack)["oci:region"]
    here = f"request.principal.compartment.id = '{setting(stack, 'compartmentId')}'"
    grants = {
        (statement.split(" to ")[0], statement.split(" to ")[1].split(" in ")[0], volume_key.id in statement)
        for statement in statements
    }
    assert grants == {
        (f"Allow service objectstorage-{region}", "use keys", False),
        ("Allow any-user", "use keys", False),
        ("Allow service blockstorage", "use keys", True),
        ("Allow any-user", "use key-delegates", True),
    }
    any_user = [s for s in statements if s.startswith("Allow any-user")]
    assert any("request.principal.type = 'cluster'" in s and key.id in s for s in any_user)
    assert any("request.principal.type = 'nodepool'" in s and volume_key.id in s for s in any_user)
    # Any cluster or node pool, but only those of this compartment.
    assert all(here in s for s in any_user)


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_keys_are_granted_before_anything_is_encrypted_with_them(stack):
    # Under mocks a resource registers only once what it depends on has registered.
    resources = stack_run(stack).resources
    grant = next(i for i, r in enumerate(resources) if r.name.endswith("-key-users"))
    encrypted = [i for i, r in enumerate(resources) if r.type in (
        "oci:ContainerEngine/cluster:Cluster", "oci:ContainerEngine/nodePool:NodePool",
        "oci:ObjectStorage/bucket:Bucket",
    )]
    assert encrypted and min(encrypted) > grant


def server_oci_operations() -> set[str]:
    """The OCI SDK operations the server's code calls: every call goes through Service.call("<op>", ...)."""
    backends = Path(__file__).resolve().parents[2] / "server" / "backends"
    return {op for path in backends.glob("*.py") for op in re.findall(r'\.call\(\s*"(\w+)"', path.read_text())}


def workload_grants(stack: str) -> list[str]:
    (policy,) = [p for p in stack_run(stack).of_type("oci:Identity/policy:Policy") if p.name.endswith("-workloads")]
    return [s for s in inputs(policy)["statements"] if "request.principal.service_account = 'model-inference-server'" in s]


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_the_server_pods_are_granted_exactly_the_operations_the_server_calls(stack):
    from infra.iam import SERVER_OPERATIONS

    # update_model is promotion (`mis promote --catalog oci`), run with a person's own credentials.
    called = server_oci_operations() - {"update_model"}
    assert called == set(SERVER_OPERATIONS), "server/backends calls and infra/iam.SERVER_OPERATIONS disagree"
    statements = workload_grants(stack)
    needed = {allowed for op in called for allowed in SERVER_OPERATIONS[op]}
    for verb in {allowed for allowed in needed if not allowed.startswith("OBJECT_")}:
        assert any(s.startswith(f"Allow any-user to {verb} ") for s in statements), verb
    (objects,) = [s for s in statements if " manage objects " in s]
    assert set(re.findall(r"request\.permission = '(\w+)'", objects)) == {p for p in needed if p.startswith("OBJECT_")}
    assert re.search(r"target\.bucket\.name = '[\w-]+-models'", objects), objects
    assert not any("data-science-models" in s and " read " not in s for s in statements)
