"""The whole Pulumi program, once per stack file in environments/, under Pulumi mocks.

A new stack file is picked up here with no code change.
"""

from __future__ import annotations

import base64
import ipaddress
import itertools
import json
import re

import kubernetes_validate
import pytest

from tests.infra import harness
from tests.infra.harness import (
    HYBRID_STACKS, OCI_STACKS, PROD_STACKS, PROJECT, STACKS, config, inputs, is_hybrid, setting,
)

run = harness.stack_run
GPU_STACKS = [s for s in OCI_STACKS if setting(s, "gpuPool")]


def container(stack: str) -> dict:
    deployment = inputs(run(stack).one("kubernetes:apps/v1:Deployment"))
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    return server


def api_keys_secret(stack: str) -> harness.Resource:
    """The API keys Secret (the stack may also have an image pull secret)."""
    (secret,) = [r for r in run(stack).of_type("kubernetes:core/v1:Secret") if inputs(r)["type"] == "Opaque"]
    return secret


def test_environments_cover_the_regions_and_environments_we_promise():
    envs = {(setting(s, "env"), config(s).get("oci:region")) for s in OCI_STACKS}
    assert {env for env, _ in envs} == {"dev", "qa", "prod"}
    assert len({region for env, region in envs if env == "prod"}) >= 2
    assert len({region for _, region in envs}) >= 3
    assert HYBRID_STACKS, "at least one hybrid example stack is tested"


@pytest.mark.parametrize("stack", STACKS)
def test_program_exports_what_operators_need(stack):
    result = run(stack)
    expected = {"env", "scoringEndpoint", "kubeconfig"}
    if not is_hybrid(stack):
        expected |= {"imageRepositories", "clusterId", "bucketNames", "artifactRepositoryId"}
    assert expected <= set(result.outputs)
    assert result.outputs["scoringEndpoint"].startswith("http://")
    assert "kubeconfig" in result.secret_outputs
    assert result.outputs["env"] == setting(stack, "env")


@pytest.mark.parametrize("stack", STACKS)
def test_deployment_runs_the_server_with_the_stack_environment(stack):
    server = container(stack)
    env = {item["name"]: item for item in server["env"]}
    assert env["MIS_ENV"]["value"] == setting(stack, "env")
    assert env["MIS_BIND"]["value"] == "0.0.0.0:8080"
    assert server["ports"][0]["containerPort"] == 8080
    assert server["livenessProbe"]["httpGet"]["path"] == "/api/v1/health/live"
    assert server["readinessProbe"]["httpGet"]["path"] == "/api/v1/health/ready"
    assert server["resources"]["requests"] and server["resources"]["limits"]
    security = server["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert not security["allowPrivilegeEscalation"] and security["capabilities"]["drop"] == ["ALL"]
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    # The keys arrive as a file from the Secret, never as an environment variable.
    keys_file = env["MIS_API_KEYS_FILE"]["value"]
    mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
    pod = inputs(run(stack).one("kubernetes:apps/v1:Deployment"))["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (keys_volume,) = [name for name, path in mounts.items() if keys_file.startswith(path + "/")]
    assert volumes[keys_volume]["secret"]["secretName"] == inputs(api_keys_secret(stack))["metadata"]["name"]
    assert "emptyDir" in volumes[[n for n, p in mounts.items() if p == env["MIS_DATA_DIR"]["value"]][0]]
    assert not any("valueFrom" in item for item in server["env"])
    assert not any("secretRef" in item for item in server.get("envFrom", []))


@pytest.mark.parametrize("stack", STACKS)
def test_workload_objects_are_complete(stack):
    result = run(stack)
    api_keys_secret(stack)
    for kind in ("core/v1:Namespace", "core/v1:ServiceAccount", "core/v1:ConfigMap",
                 "apps/v1:Deployment", "core/v1:Service", "autoscaling/v2:HorizontalPodAutoscaler",
                 "policy/v1:PodDisruptionBudget", "networking.k8s.io/v1:NetworkPolicy"):
        result.one(f"kubernetes:{kind}")
    deployment = inputs(result.one("kubernetes:apps/v1:Deployment"))["spec"]
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert deployment["template"]["spec"]["topologySpreadConstraints"]
    hpa = inputs(result.one("kubernetes:autoscaling/v2:HorizontalPodAutoscaler"))["spec"]
    server = setting(stack, "server", {})
    assert hpa["minReplicas"] == server.get("minReplicas", 2)
    service = inputs(result.one("kubernetes:core/v1:Service"))
    if not is_hybrid(stack):
        assert service["spec"]["type"] == "LoadBalancer"
        public_lb = setting(stack, "network").get("publicLoadBalancer", False)
        internal = service["metadata"]["annotations"].get("service.beta.kubernetes.io/oci-load-balancer-internal")
        assert internal == (None if public_lb else "true")


@pytest.mark.parametrize("stack", STACKS)
def test_every_kubernetes_object_validates_strictly_for_the_cluster_version(stack):
    version = setting(stack, "kubernetesVersion").lstrip("v")
    objects = [r for r in run(stack).resources if r.type.startswith("kubernetes:")]
    assert len(objects) >= 9
    for resource in objects:
        manifest = inputs(resource)
        kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize("stack", STACKS)
def test_api_keys_exist_only_as_secrets(stack):
    result = run(stack)
    keys = [harness.random_password(r.name) for r in result.of_type("random:index/randomPassword:RandomPassword")]
    assert len(keys) == 2
    forms = keys + [base64.b64encode(k.encode()).decode() for k in keys]

    def plain_strings(value):
        if isinstance(value, dict):
            if value.get(harness.SECRET_SIG):
                return  # a secret: encrypted in state, masked in output
            for item in value.values():
                yield from plain_strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from plain_strings(item)
        elif isinstance(value, str):
            yield value

    for resource in result.resources:
        if resource.type == "random:index/randomPassword:RandomPassword":
            continue
        for text in plain_strings(resource.inputs):
            assert not any(form in text for form in forms), f"an API key is in plain text in {resource.name}"
    for name, value in result.outputs.items():
        assert not any(form in json.dumps(value) for form in forms), f"an API key is exported as {name}"
    secret = api_keys_secret(stack).inputs["stringData"]
    assert secret.get(harness.SECRET_SIG), "the Kubernetes Secret's data is a Pulumi secret"
    document = json.loads(secret["value"]["keys.json"])
    assert sorted(k["key"] for k in document["keys"]) == sorted(keys)
    for vault_secret in result.of_type("oci:Vault/secret:Secret"):
        assert vault_secret.inputs["secretContent"].get(harness.SECRET_SIG) or \
            vault_secret.inputs["secretContent"]["content"].get(harness.SECRET_SIG)
    raw_stack_file = (harness.ENVIRONMENTS / f"Pulumi.{stack}.yaml").read_text()
    assert not any(form in raw_stack_file for form in forms)


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_the_stack_region_is_used_everywhere(stack):
    result = run(stack)
    region, home = config(stack)["oci:region"], setting(stack, "homeRegion")
    providers = {r.name: r.inputs.get("region") for r in result.of_type("pulumi:providers:oci")}
    assert set(providers.values()) <= {region, home}
    for resource in result.resources:
        if resource.type.startswith("oci:"):
            provider = result.provider(resource.provider)
            assert provider is not None, f"{resource.name} would use an ambient default provider"
            # Identity writes go to the home region; everything else to the stack's region.
            expected = home if resource.type.startswith("oci:Identity/") else region
            assert provider.inputs["region"] == expected, resource.name
        if resource.type.startswith("kubernetes:"):
            assert result.provider(resource.provider) is not None, resource.name
    for token, _, provider in result.calls:
        assert result.provider(provider).inputs["region"] == region, token
    for path in result.outputs["imageRepositories"].values():
        assert path.startswith(f"{region}.ocir.io/")
    statements = [s for p in result.of_type("oci:Identity/policy:Policy") for s in inputs(p)["statements"]]
    assert any(f"objectstorage-{region} " in s for s in statements)
    image = container(stack)["image"]
    assert image.startswith(f"{region}.ocir.io/")


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_nothing_is_public_unless_the_stack_asks(stack):
    result = run(stack)
    for bucket in result.of_type("oci:ObjectStorage/bucket:Bucket"):
        spec = inputs(bucket)
        assert spec["accessType"] == "NoPublicAccess"
        assert spec["versioning"] == "Enabled"
        assert spec["kmsKeyId"] == result.master_keys()[0].id
    repositories = result.of_type("oci:Artifacts/containerRepository:ContainerRepository")
    assert len(repositories) == 2 and not any(inputs(r)["isPublic"] for r in repositories)
    subnets = {r.name.rsplit("-", 1)[-1]: inputs(r) for r in result.of_type("oci:Core/subnet:Subnet")}
    assert subnets["workers"]["prohibitPublicIpOnVnic"] is True
    cluster = inputs(result.one("oci:ContainerEngine/cluster:Cluster"))
    public_api = setting(stack, "publicApiEndpoint", False)
    assert cluster["endpointConfig"]["isPublicIpEnabled"] is public_api
    assert subnets["api"]["prohibitPublicIpOnVnic"] is (not public_api)
    for rule in result.of_type("oci:Core/networkSecurityGroupSecurityRule:NetworkSecurityGroupSecurityRule"):
        spec = inputs(rule)
        assert not (spec["direction"] == "INGRESS" and spec.get("source") == "0.0.0.0/0"), rule.name


@pytest.mark.parametrize("stack", PROD_STACKS)
def test_prod_is_private(stack):
    result = run(stack)
    cluster = inputs(result.one("oci:ContainerEngine/cluster:Cluster"))
    assert cluster["endpointConfig"]["isPublicIpEnabled"] is False
    for subnet in result.of_type("oci:Core/subnet:Subnet"):
        if not subnet.name.endswith("-lb"):
            assert inputs(subnet)["prohibitPublicIpOnVnic"] is True, subnet.name
    assert not result.of_type("oci:Core/internetGateway:InternetGateway") or setting(stack, "network").get(
        "publicLoadBalancer")
    repositories = result.of_type("oci:Artifacts/containerRepository:ContainerRepository")
    assert all(inputs(r)["isImmutable"] for r in repositories)
    assert ":latest" not in container(stack)["image"]


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_iam_is_least_privilege(stack):
    result = run(stack)
    compartment = setting(stack, "compartmentId")
    policies = result.of_type("oci:Identity/policy:Policy")
    assert policies
    for policy in policies:
        spec = inputs(policy)
        assert spec["compartmentId"] == compartment
        for statement in spec["statements"]:
            assert not re.search(r"\bmanage\s+all-resources\b", statement, re.I), statement
            assert not re.search(r"\bin\s+tenancy\b", statement, re.I), statement
            assert f" in compartment id {compartment}" in statement, statement
    workload = " ".join(s for p in policies for s in inputs(p)["statements"])
    cluster_id = result.one("oci:ContainerEngine/cluster:Cluster").id
    assert f"request.principal.cluster_id = '{cluster_id}'" in workload
    assert "request.principal.service_account = 'model-inference-server'" in workload
    for bucket in result.outputs["bucketNames"].values():
        assert f"target.bucket.name = '{bucket}'" in workload
    (group,) = result.of_type("oci:Identity/dynamicGroup:DynamicGroup")
    assert inputs(group)["compartmentId"] == setting(stack, "tenancyId")
    assert "devopsbuildpipeline" in inputs(group)["matchingRule"]
    assert "devopsdeploypipeline" in inputs(group)["matchingRule"]


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_node_pools_use_images_chosen_for_the_kubernetes_version(stack):
    result = run(stack)
    version = setting(stack, "kubernetesVersion").lstrip("v")
    pools = {r.name.rsplit("-", 1)[-1]: inputs(r) for r in result.of_type("oci:ContainerEngine/nodePool:NodePool")}
    options = harness.node_pool_options(version)["sources"]
    newest_cpu = next(s["imageId"] for s in options if s["sourceName"].startswith("Oracle-Linux-8.10-2025.01.31"))
    assert pools["cpu"]["nodeSourceDetails"]["imageId"] == newest_cpu
    cpu_pool = setting(stack, "cpuPool")
    assert pools["cpu"]["nodeConfigDetails"]["size"] == cpu_pool["minNodes"]
    autoscaler = next(inputs(a) for a in result.of_type("oci:ContainerEngine/addon:Addon")
                      if inputs(a)["addonName"] == "ClusterAutoscaler")
    nodes = {c["key"]: c["value"] for c in autoscaler["configurations"]}["nodes"]
    assert f"{cpu_pool['minNodes']}:{cpu_pool['maxNodes']}:" in nodes
    assert ("gpu" in pools) == (stack in GPU_STACKS)


@pytest.mark.parametrize("stack", GPU_STACKS)
def test_gpu_pool_has_gpu_images_the_device_plugin_and_a_taint(stack):
    result = run(stack)
    gpu = next(inputs(r) for r in result.of_type("oci:ContainerEngine/nodePool:NodePool") if r.name.endswith("-gpu"))
    assert "-GPU-" in gpu["nodeSourceDetails"]["imageId"]
    assert gpu["nodeShape"] == setting(stack, "gpuPool")["shape"]
    cloud_init = base64.b64decode(gpu["nodeMetadata"]["user_data"]).decode()
    assert "--register-with-taints=nvidia.com/gpu=present:NoSchedule" in cloud_init
    assert any(inputs(a)["addonName"] == "NvidiaGpuPlugin" for a in result.of_type("oci:ContainerEngine/addon:Addon"))
    # The server tolerates no taint, so it never lands on GPU nodes.
    assert "tolerations" not in inputs(result.one("kubernetes:apps/v1:Deployment"))["spec"]["template"]["spec"]


def test_vcn_cidrs_do_not_overlap_across_stacks_so_regions_can_be_peered():
    blocks = {
        stack: [ipaddress.ip_network(c) for vcn in run(stack).of_type("oci:Core/vcn:Vcn")
                for c in inputs(vcn)["cidrBlocks"]]
        for stack in OCI_STACKS
    }
    for (a, a_blocks), (b, b_blocks) in itertools.combinations(blocks.items(), 2):
        assert not any(x.overlaps(y) for x in a_blocks for y in b_blocks), f"{a} and {b} overlap"


@pytest.mark.parametrize("stack", HYBRID_STACKS)
def test_hybrid_mode_deploys_only_the_workload_on_the_given_cluster(stack):
    result = run(stack)
    assert not [r for r in result.resources if r.type.startswith(("oci:", "pulumi:providers:oci"))]
    assert not result.calls
    (provider,) = result.of_type("pulumi:providers:kubernetes")
    assert harness.unwrap(provider.inputs)["kubeconfig"] == setting(stack, "kubeconfig")
    assert container(stack)["image"] == setting(stack, "server")["image"]
    assert result.outputs["kubeconfig"] == setting(stack, "kubeconfig") and "kubeconfig" in result.secret_outputs


def test_registry_credentials_become_an_image_pull_secret_and_stay_secret():
    token = "example-auth-token-never-in-plain-text"
    stack_config, secret_keys = harness.stack_config("prod-ashburn")
    stack_config = {**stack_config, f"{PROJECT}:registryUser": "exampletenancyns/ci-bot",
                    f"{PROJECT}:registryAuthToken": token}
    result = harness.run_program("prod-ashburn", stack_config, [*secret_keys, f"{PROJECT}:registryAuthToken"])
    secrets = result.of_type("kubernetes:core/v1:Secret")
    (pull,) = [r for r in secrets if inputs(r)["type"] == "kubernetes.io/dockerconfigjson"]
    assert pull.inputs["stringData"].get(harness.SECRET_SIG)
    auths = json.loads(inputs(pull)["stringData"][".dockerconfigjson"])["auths"]
    assert auths["us-ashburn-1.ocir.io"]["password"] == token
    pod = inputs(result.one("kubernetes:apps/v1:Deployment"))["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": inputs(pull)["metadata"]["name"]}]
    assert token not in json.dumps([r.inputs for r in result.resources if r is not pull])
    kubernetes_validate.validate(inputs(pull), "1.33", strict=True)
