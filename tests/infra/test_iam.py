"""The IAM components under Pulumi mocks: the grants on the stack's keys."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.infra.harness import OCI_STACKS, PROJECT, config, inputs, run_program, setting, stack_config, stack_run
from tests.infra.policies import Group, Leaf, Statement, all_leaves, parse_condition, parse_statement, walk

POLICY = "oci:Identity/policy:Policy"


def policy_statements(result, suffix: str) -> list[Statement]:
    """The parsed statements of the stack's policy named `mis-<stack>-<suffix>`."""
    (policy,) = [p for p in result.of_type(POLICY) if p.name.endswith(f"-{suffix}")]
    return [parse_statement(s) for s in inputs(policy)["statements"]]


def key_grants(stack: str) -> list[str]:
    result = stack_run(stack)
    (policy,) = [p for p in result.of_type(POLICY) if p.name.endswith("-key-users")]
    return inputs(policy)["statements"]


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_each_key_grant_names_one_key_in_the_stack_compartment(stack):
    key, volume_key = stack_run(stack).master_keys()
    compartment = setting(stack, "compartmentId")
    statements = key_grants(stack)
    for statement in map(parse_statement, statements):
        assert statement.compartment_id == compartment, statement
        named = [leaf.value for leaf in all_leaves(statement.condition) if leaf.variable == "target.key.id"]
        assert named in ([key.id], [volume_key.id]), statement
        if statement.subject.startswith("service "):
            # A service's grant holds for that one key and nothing else.
            assert statement.condition == Leaf("target.key.id", "=", named[0]), statement
        else:
            # any-user: only while all of (a cluster or node pool, of this compartment, this key) hold.
            condition = statement.condition
            assert isinstance(condition, Group) and condition.kind == "all" and not condition.groups(), statement
            assert {(leaf.variable, leaf.operator) for leaf in condition.leaves()} == {
                ("request.principal.type", "="), ("request.principal.compartment.id", "="), ("target.key.id", "=")
            }, statement
            assert Leaf("request.principal.compartment.id", "=", compartment) in condition.leaves(), statement
            principal = next(leaf.value for leaf in condition.leaves() if leaf.variable == "request.principal.type")
            assert (principal, named[0]) in (("cluster", key.id), ("nodepool", volume_key.id)), statement
    region = config(stack)["oci:region"]
    grants = {
        (statement.subject, f"{statement.verb} {statement.resource}", volume_key.id in statement_text)
        for statement, statement_text in zip(map(parse_statement, statements), statements)
    }
    assert grants == {
        (f"service objectstorage-{region}", "use keys", False),
        ("any-user", "use keys", False),
        ("service blockstorage", "use keys", True),
        ("any-user", "use key-delegates", True),
    }


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
    condition = parse_statement(objects).condition
    # The models bucket, and (any of) the object permissions the server needs there, never more.
    assert Leaf("target.bucket.name", "=", stack_run(stack).outputs["bucketNames"]["models"]) in condition.leaves()
    (permissions,) = condition.groups()
    assert permissions.kind == "any" and all(leaf.variable == "request.permission" for leaf in permissions.children)
    assert {leaf.value for leaf in permissions.children} == {p for p in needed if p.startswith("OBJECT_")}
    assert not any("data-science-models" in s and " read " not in s for s in statements)


def test_the_policy_parser_reads_conditions_as_trees_and_refuses_malformed_statements():
    statement = parse_statement(
        "Allow any-user to manage objects in compartment id ocid1.compartment.oc1..c where all "
        "{request.principal.type = 'workload', any {target.bucket.name = 'a', target.bucket.name != 'b'}}"
    )
    assert (statement.subject, statement.verb, statement.resource) == ("any-user", "manage", "objects")
    assert statement.compartment_id == "ocid1.compartment.oc1..c"
    assert statement.condition == Group("all", (
        Leaf("request.principal.type", "=", "workload"),
        Group("any", (Leaf("target.bucket.name", "=", "a"), Leaf("target.bucket.name", "!=", "b"))),
    ))
    nested = Group("any", (Group("all", (Leaf("resource.type", "=", "x"),)),))
    assert parse_condition("Any {All {resource.type = 'x'}}") == nested
    tenancy = parse_statement("Allow group Admins to manage all-resources in tenancy")
    assert tenancy.location == "tenancy" and tenancy.compartment_id is None and tenancy.condition is None
    for malformed in (
        "Allow any-user to read objects in compartment id c where all {a = 'x'",
        "Allow any-user to read objects in compartment id c where all {a = 'x',}",
        "Allow any-user to read objects in compartment id c where a = 'x' b = 'y'",
        "Allow any-user to own objects in compartment id c",
        "Allow any-user read objects in compartment id c",
    ):
        with pytest.raises(ValueError):
            parse_statement(malformed)


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_every_policy_statement_parses_and_is_scoped_to_the_stack_compartment(stack):
    result = stack_run(stack)
    compartment = setting(stack, "compartmentId")
    for policy in result.of_type(POLICY):
        for statement in map(parse_statement, inputs(policy)["statements"]):
            assert statement.location == f"compartment id {compartment}", (policy.name, statement)
            assert all(leaf.operator == "=" for leaf in all_leaves(statement.condition)), statement


# OKE's ClusterAutoscaler add-on runs as this service account (its workload identity).
AUTOSCALER = ("kube-system", "cluster-autoscaler")
PRINCIPAL = ("request.principal.type", "request.principal.namespace", "request.principal.service_account",
             "request.principal.cluster_id")


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_workload_grants_hold_only_for_one_service_account_of_this_cluster(stack):
    result = stack_run(stack)
    cluster = result.one("oci:ContainerEngine/cluster:Cluster").id
    buckets = set(result.outputs["bucketNames"].values())
    server = (setting(stack, "server", {}).get("namespace", "mis"), "model-inference-server")
    resources = {server: set(), AUTOSCALER: set()}
    for statement in policy_statements(result, "workloads"):
        assert statement.subject == "any-user", statement
        assert statement.compartment_id == setting(stack, "compartmentId"), statement
        condition = statement.condition
        # all {...}: every principal leaf must hold; `where any` would admit any workload, or anyone in the namespace.
        assert isinstance(condition, Group) and condition.kind == "all", statement
        direct = {leaf.variable: leaf.value for leaf in condition.leaves() if leaf.operator == "="}
        assert all(variable in direct for variable in PRINCIPAL), statement
        assert direct["request.principal.type"] == "workload" and direct["request.principal.cluster_id"] == cluster
        principal = (direct["request.principal.namespace"], direct["request.principal.service_account"])
        assert principal in resources, statement
        resources[principal].add(statement.resource)
        # any {...} only directly inside the all {...}, and only over bucket names or object permissions.
        for node, depth in walk(condition):
            if isinstance(node, Group) and depth:
                assert node.kind == "any" and depth == 1, statement
                assert {leaf.variable for leaf in node.children if isinstance(leaf, Leaf)} <= {
                    "target.bucket.name", "request.permission"} and not node.groups(), statement
        named = {leaf.value for leaf in all_leaves(condition) if leaf.variable == "target.bucket.name"}
        assert named <= buckets, statement
        if statement.resource in ("buckets", "objects"):
            assert named, f"{statement}: every bucket of the compartment"
    # The server reads the catalog and its buckets; the node-pool and network rights are the autoscaler's alone.
    assert resources[server] == {"data-science-models", "buckets", "objects"}
    assert resources[AUTOSCALER] and not resources[AUTOSCALER] & resources[server]


def assert_devops_grants(result, stack: str, mirror_secret: str | None = None) -> None:
    group = result.one("oci:Identity/dynamicGroup:DynamicGroup").id
    conda = result.outputs["bucketNames"]["condaPacks"]
    # Data (objects, secret bundles) only under a condition naming the one bucket or secret the pipelines read.
    narrowed = {"objects": Leaf("target.bucket.name", "=", conda)}
    if mirror_secret:
        narrowed["secret-bundles"] = Leaf("target.secret.id", "=", mirror_secret)
    statements = policy_statements(result, "devops")
    for statement in statements:
        assert statement.subject == f"dynamic-group id {group}", statement
        assert statement.compartment_id == setting(stack, "compartmentId"), statement
        assert statement.verb != "manage", statement
        assert statement.condition == narrowed.get(statement.resource), statement
    assert set(narrowed) <= {statement.resource for statement in statements}


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_the_pipelines_grants_are_their_groups_in_the_compartment_and_narrowed_where_they_touch_data(stack):
    assert_devops_grants(stack_run(stack), stack)


def test_a_mirrors_pipelines_read_that_one_token_secret():
    config, secrets = stack_config("qa-sanjose")
    secret_id = "ocid1.vaultsecret.oc1..example-github-token"
    mirror = {"url": "https://github.com/example/model-inference-server.git",
              "connectionType": "GITHUB_ACCESS_TOKEN", "accessTokenSecretId": secret_id}
    result = run_program("qa-sanjose", {**config, f"{PROJECT}:devops": json.dumps({"mirror": mirror})}, secrets)
    assert_devops_grants(result, "qa-sanjose", mirror_secret=secret_id)


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_the_devops_dynamic_group_matches_only_this_compartments_devops_resources(stack):
    (group,) = stack_run(stack).of_type("oci:Identity/dynamicGroup:DynamicGroup")
    rule = parse_condition(inputs(group)["matchingRule"])
    # Any {All {type, compartment}, ...}: an inner Any would match every resource in the compartment
    # (instances included) or every DevOps resource of the tenancy.
    assert isinstance(rule, Group) and rule.kind == "any", rule
    types = set()
    for member in rule.children:
        assert isinstance(member, Group) and member.kind == "all" and not member.groups(), member
        leaves = {leaf.variable: leaf for leaf in member.leaves()}
        assert set(leaves) == {"resource.type", "resource.compartment.id"} and len(member.children) == 2, member
        compartment = Leaf("resource.compartment.id", "=", setting(stack, "compartmentId"))
        assert leaves["resource.compartment.id"] == compartment, member
        assert leaves["resource.type"].operator == "=" and leaves["resource.type"].value.startswith("devops"), member
        types.add(leaves["resource.type"].value)
    assert {"devopsbuildpipeline", "devopsdeploypipeline"} <= types
