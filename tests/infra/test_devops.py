"""The DevOps component under Pulumi mocks: the build and deploy pipelines' graph per stack, the
pipeline's manifest against what Pulumi deploys, and what the pipelines may do."""

from __future__ import annotations

import json
import re

import kubernetes_validate
import pytest
import yaml

from infra import devops, workload
from infra.render import kubernetes_objects, pipeline_manifest
from tests.infra import harness
from tests.infra.harness import OCI_STACKS, PROD_STACKS, PROJECT, inputs, setting, stack_run
from tests.infra.test_workload import spec

BUILD_SPEC = yaml.safe_load((harness.ROOT / devops.BUILD_SPEC).read_text())
STAGE = "oci:DevOps/buildPipelineStage:BuildPipelineStage"
DEPLOY_STAGE = "oci:DevOps/deployStage:DeployStage"
ARTIFACT = "oci:DevOps/deployArtifact:DeployArtifact"


def predecessors(resource: harness.Resource, key: str) -> list[str]:
    return [item["id"] for item in inputs(resource)[key]["items"]]


def build_stages(run: harness.Run) -> dict[str, harness.Resource]:
    return {inputs(s)["buildPipelineStageType"]: s for s in run.of_type(STAGE)}


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_build_pipeline_runs_build_then_deliver_then_trigger(stack):
    run = stack_run(stack)
    pipeline = run.one("oci:DevOps/buildPipeline:BuildPipeline")
    stages = build_stages(run)
    assert set(stages) == {"BUILD", "DELIVER_ARTIFACT", "TRIGGER_DEPLOYMENT_PIPELINE"} and len(run.of_type(STAGE)) == 3
    key = "buildPipelineStagePredecessorCollection"
    assert predecessors(stages["BUILD"], key) == [pipeline.id]
    assert predecessors(stages["DELIVER_ARTIFACT"], key) == [stages["BUILD"].id]
    assert predecessors(stages["TRIGGER_DEPLOYMENT_PIPELINE"], key) == [stages["DELIVER_ARTIFACT"].id]

    build = inputs(stages["BUILD"])
    assert build["buildSpecFile"] == devops.BUILD_SPEC and (harness.ROOT / build["buildSpecFile"]).is_file()
    (source,) = build["buildSourceCollection"]["items"]
    repository = run.one("oci:DevOps/repository:Repository")
    assert source["repositoryId"] == repository.id and source["name"] == build["primaryBuildSource"]
    assert source["branch"] == setting(stack, "devops", {}).get("branch", "main")

    # DELIVER maps each of the build spec's output artifacts to this stack's image artifact.
    images = {inputs(a)["displayName"]: a for a in run.of_type(ARTIFACT) if inputs(a)["deployArtifactType"] == "DOCKER_IMAGE"}
    delivered = {item["artifactName"]: item["artifactId"]
                 for item in inputs(stages["DELIVER_ARTIFACT"])["deliverArtifactCollection"]["items"]}
    assert set(delivered) == {o["name"] for o in BUILD_SPEC["outputArtifacts"]}
    repositories = run.outputs["imageRepositories"]
    for key, name in devops.OUTPUT_ARTIFACTS.items():
        artifact = next(a for a in images.values() if a.id == delivered[name])
        source = inputs(artifact)["deployArtifactSource"]
        assert source == {"deployArtifactSourceType": "OCIR",
                          "imageUri": f"{repositories[key]}:${{{devops.IMAGE_TAG}}}"}
        assert inputs(artifact)["argumentSubstitutionMode"] == "SUBSTITUTE_PLACEHOLDERS"
    # The build spec pushes to the repositories the pipeline's parameters name: the stack's own.
    parameters = {p["name"]: p["defaultValue"] for p in inputs(pipeline)["buildPipelineParameters"]["items"]}
    assert parameters == {**{devops.REPOSITORY_PARAMETERS[k]: repositories[k] for k in devops.OUTPUT_ARTIFACTS},
                          devops.CONDA_PACK_PARAMETER: ""}  # the server's own environment unless a stack names a pack

    trigger = inputs(stages["TRIGGER_DEPLOYMENT_PIPELINE"])
    assert trigger["deployPipelineId"] == run.one("oci:DevOps/deployPipeline:DeployPipeline").id
    assert trigger["isPassAllParametersEnabled"] is True


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_deploy_pipeline_rolls_out_by_digest_with_rollback_and_approval_in_prod(stack):
    run = stack_run(stack)
    pipeline = run.one("oci:DevOps/deployPipeline:DeployPipeline")
    parameters = [p["name"] for p in inputs(pipeline)["deployPipelineParameters"]["items"]]
    assert parameters == [devops.IMAGE_DIGEST] and devops.IMAGE_DIGEST in BUILD_SPEC["env"]["exportedVariables"]
    stages = {inputs(s)["deployStageType"]: s for s in run.of_type(DEPLOY_STAGE)}
    rollout = inputs(stages["OKE_DEPLOYMENT"])
    assert rollout["rollbackPolicy"] == {"policyType": "AUTOMATED_STAGE_ROLLBACK_POLICY"}
    assert rollout["okeClusterDeployEnvironmentId"] == run.one("oci:DevOps/deployEnvironment:DeployEnvironment").id
    assert rollout["namespace"] == setting(stack, "server", {}).get("namespace", "mis")
    (manifest,) = [a for a in run.of_type(ARTIFACT) if inputs(a)["deployArtifactType"] == "KUBERNETES_MANIFEST"]
    assert rollout["kubernetesManifestDeployArtifactIds"] == [manifest.id]
    assert inputs(manifest)["argumentSubstitutionMode"] == "SUBSTITUTE_PLACEHOLDERS"
    # Every placeholder the manifest holds is a parameter the pipeline is given.
    assert set(re.findall(r"\$\{(\w+)\}", pipeline_manifest(run))) == set(parameters)

    key = "deployStagePredecessorCollection"
    if stack in PROD_STACKS:
        approval = stages["MANUAL_APPROVAL"]
        assert predecessors(approval, key) == [pipeline.id]
        assert predecessors(stages["OKE_DEPLOYMENT"], key) == [approval.id]
        policy = inputs(approval)["approvalPolicy"]
        assert policy["approvalPolicyType"] == "COUNT_BASED_APPROVAL" and policy["numberOfApprovalsRequired"] >= 1
    else:
        assert set(stages) == {"OKE_DEPLOYMENT"}
        assert predecessors(stages["OKE_DEPLOYMENT"], key) == [pipeline.id]


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_project_notifies_its_topic_and_only_dev_builds_on_push(stack):
    run = stack_run(stack)
    project = inputs(run.one("oci:DevOps/project:Project"))
    assert project["notificationConfig"]["topicId"] == run.one("oci:Ons/notificationTopic:NotificationTopic").id
    assert inputs(run.one("oci:DevOps/repository:Repository"))["repositoryType"] == "HOSTED"
    triggers = run.of_type("oci:DevOps/trigger:Trigger")
    assert len(triggers) == (1 if setting(stack, "env") == "dev" else 0)
    for trigger in triggers:
        (action,) = inputs(trigger)["actions"]
        assert action["type"] == "TRIGGER_BUILD_PIPELINE"
        assert action["buildPipelineId"] == run.one("oci:DevOps/buildPipeline:BuildPipeline").id
        assert action["filter"] == {"triggerSource": "DEVOPS_CODE_REPOSITORY", "events": ["PUSH"],
                                    "include": {"headRef": "main"}}
        assert inputs(trigger)["repositoryId"] == run.one("oci:DevOps/repository:Repository").id


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_private_api_endpoints_are_reached_through_a_private_channel(stack):
    run = stack_run(stack)
    environment = inputs(run.one("oci:DevOps/deployEnvironment:DeployEnvironment"))
    assert environment["clusterId"] == run.one("oci:ContainerEngine/cluster:Cluster").id
    private = not setting(stack, "publicApiEndpoint", False)
    channel = environment.get("networkChannel")
    statements = [s for p in run.of_type("oci:Identity/policy:Policy") if p.name.endswith("-devops")
                  for s in inputs(p)["statements"]]
    if private:
        (workers,) = [s for s in run.of_type("oci:Core/subnet:Subnet") if s.name.endswith("-workers")]
        assert channel["networkChannelType"] == "PRIVATE_ENDPOINT_CHANNEL" and channel["subnetId"] == workers.id
        assert any(" to use vnics " in s for s in statements)
    else:
        assert not channel
        assert not any(" to use vnics " in s for s in statements)
    # Only what the stages need: no generic artifacts, no whole-family management.
    assert not any(re.search(r" to manage ", s) for s in statements), statements


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_pipeline_manifest_is_what_pulumi_deploys_but_the_image(stack):
    run = stack_run(stack)
    rendered = list(yaml.safe_load_all(pipeline_manifest(run)))
    deployed = {(o["kind"], o["metadata"]["name"]): o for o in kubernetes_objects(run)}
    version = setting(stack, "kubernetesVersion").lstrip("v")
    repository = run.outputs["imageRepositories"]["server"]
    for manifest in rendered:
        kubernetes_validate.validate(manifest, version, strict=True)
        pulumi_side = deployed[(manifest["kind"], manifest["metadata"]["name"])]
        if manifest["kind"] == "Deployment":
            (container,) = manifest["spec"]["template"]["spec"]["containers"]
            assert container["image"] == f"{repository}@${{{devops.IMAGE_DIGEST}}}"
            container["image"] = pulumi_side["spec"]["template"]["spec"]["containers"][0]["image"]
        assert manifest == pulumi_side, manifest["kind"]
    assert [m["kind"] for m in rendered] == [m["kind"] for m in workload.server_manifests(spec())]


def test_a_new_stack_leaves_the_deployment_to_the_pipeline():
    config, secrets = harness.stack_config("dev-phoenix")
    server = json.loads(config[f"{PROJECT}:server"])
    del server["imageDigest"]
    run = harness.run_program("dev-phoenix", {**config, f"{PROJECT}:server": json.dumps(server)}, secrets)
    assert not run.of_type("kubernetes:apps/v1:Deployment")
    assert "kind: Deployment" in pipeline_manifest(run)
    for kind in ("core/v1:Service", "autoscaling/v2:HorizontalPodAutoscaler", "core/v1:ConfigMap"):
        run.one(f"kubernetes:{kind}")


def test_pulumi_leaves_the_image_to_the_pipeline_after_creating_the_deployment(monkeypatch):
    options = []
    original = workload._RESOURCE_CLASSES["Deployment"]

    def recording(name, opts=None, **arguments):
        options.append(opts)
        return original(name, opts=opts, **arguments)

    monkeypatch.setitem(workload._RESOURCE_CLASSES, "Deployment", recording)
    harness.run_program("qa-sanjose")
    (opts,) = options
    assert opts.ignore_changes == [workload.IMAGE_FIELD] == ["spec.template.spec.containers[0].image"]
    options.clear()
    harness.run_program("edge-hybrid")  # no pipeline: Pulumi rolls the image
    (opts,) = options
    assert not opts.ignore_changes


def test_a_mirrored_repository_uses_a_connection_with_the_vault_token():
    config, secrets = harness.stack_config("qa-sanjose")
    secret_id = "ocid1.vaultsecret.oc1..example-github-token"
    mirror = {"url": "https://github.com/example/model-inference-server.git",
              "connectionType": "GITHUB_ACCESS_TOKEN", "accessTokenSecretId": secret_id}
    run = harness.run_program("qa-sanjose", {**config, f"{PROJECT}:devops": json.dumps({"mirror": mirror})}, secrets)
    connection = run.one("oci:DevOps/connection:Connection")
    assert inputs(connection)["accessToken"] == secret_id
    repository = inputs(run.one("oci:DevOps/repository:Repository"))
    assert repository["repositoryType"] == "MIRRORED"
    assert repository["mirrorRepositoryConfig"]["connectorId"] == connection.id
    assert repository["mirrorRepositoryConfig"]["repositoryUrl"] == mirror["url"]
    statements = [s for p in run.of_type("oci:Identity/policy:Policy") for s in inputs(p)["statements"]]
    assert any(f"target.secret.id = '{secret_id}'" in s and "read secret-bundles" in s for s in statements)


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_deployers_may_apply_the_server_objects_and_nothing_more(stack):
    objects = kubernetes_objects(stack_run(stack))
    assert not any(o.get("roleRef", {}).get("name") in ("edit", "admin", "cluster-admin") for o in objects)
    (role,) = [o for o in objects if o["kind"] == "Role"]
    granted = {(group, resource) for rule in role["rules"] for group in rule["apiGroups"] for resource in rule["resources"]}
    applied = {workload._API_RESOURCES[o["kind"]] for o in inputs_of_server(objects) if o["kind"] != "Namespace"}
    assert applied <= granted
    assert granted - applied == {("apps", "replicasets"), ("", "pods")}
    for rule in role["rules"]:
        if (rule["apiGroups"][0], rule["resources"][0]) in {("apps", "replicasets"), ("", "pods")}:
            assert rule["verbs"] == ["get", "list", "watch"]
        assert "*" not in rule["verbs"] and "delete" not in rule["verbs"]
    assert not any("secrets" in rule["resources"] for rule in role["rules"])
    (cluster_role,) = [o for o in objects if o["kind"] == "ClusterRole"]
    (rule,) = cluster_role["rules"]
    assert rule["resources"] == ["namespaces"] and rule["resourceNames"] == [setting(stack, "server", {}).get(
        "namespace", "mis")] and rule["verbs"] == ["get", "patch"]
    group = stack_run(stack).one("oci:Identity/dynamicGroup:DynamicGroup").id
    for binding in (o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]


def inputs_of_server(objects: list[dict]) -> list[dict]:
    kinds = set(workload._API_RESOURCES)
    return [o for o in objects if o["kind"] in kinds]


def test_a_stack_can_build_its_images_in_a_published_conda_pack_which_the_build_may_read():
    config, secrets = harness.stack_config("qa-sanjose")
    pack = "oci://mis-qa-conda-packs@tenancyns/conda_environments/cpu/General ML/1.0/generalml_p311_cpu_x86_64_v1"
    run = harness.run_program("qa-sanjose", {**config, f"{PROJECT}:devops": json.dumps({"condaPack": pack})}, secrets)
    pipeline = run.one("oci:DevOps/buildPipeline:BuildPipeline")
    parameters = {p["name"]: p["defaultValue"] for p in inputs(pipeline)["buildPipelineParameters"]["items"]}
    assert parameters[devops.CONDA_PACK_PARAMETER] == pack
    statements = [s for p in run.of_type("oci:Identity/policy:Policy") for s in inputs(p)["statements"]]
    [conda_bucket] = [inputs(b)["name"] for b in run.of_type("oci:ObjectStorage/bucket:Bucket")
                      if "conda" in inputs(b)["name"]]
    [read] = [s for s in statements if "read objects" in s and "dynamic-group" in s]
    assert read.endswith(f"where target.bucket.name = '{conda_bucket}'")  # that bucket, and nothing else


@pytest.mark.parametrize("pack", ["s3://bucket/pack", "oci://bucket/pack", "oci://bucket@ns/", "oci://b@ns/x/bad slug!"])
def test_a_conda_pack_must_be_addressed_as_data_science_publishes_it(pack):
    config, secrets = harness.stack_config("qa-sanjose")
    with pytest.raises(Exception, match="devops.condaPack"):
        harness.run_program("qa-sanjose", {**config, f"{PROJECT}:devops": json.dumps({"condaPack": pack})}, secrets)
