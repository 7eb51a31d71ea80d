"""DevOps: the stack's build and release pipelines in OCI DevOps.

A push to the branch (where the stack builds on push) starts the build pipeline:

    BUILD (pipelines/build_spec.yaml: install, test, build the images, push, export IMAGE_TAG and
    IMAGE_DIGEST) -> DELIVER_ARTIFACT (the images, as this stack's DOCKER_IMAGE artifacts)
    -> TRIGGER_DEPLOYMENT_PIPELINE (passing the exported variables on)

and the deploy pipeline rolls the server out to the stack's cluster:

    [MANUAL_APPROVAL (prod)] -> OKE_DEPLOYMENT (the server's manifests with the image as
    <repository>@${IMAGE_DIGEST}; rolled back automatically when the rollout fails)

The deploy pipeline takes IMAGE_DIGEST as a parameter, so an image built once moves to qa and prod
by running their deploy pipelines with its digest: promotion never rebuilds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import pulumi
import pulumi_oci as oci

BUILD_SPEC = "pipelines/build_spec.yaml"
# What the build stage exports (pipelines/build_spec.yaml `exportedVariables`), and where each is used:
IMAGE_TAG = "IMAGE_TAG"  # the delivered images' tag (DELIVER_ARTIFACT's artifact URIs)
IMAGE_DIGEST = "IMAGE_DIGEST"  # the server image's digest (the deploy pipeline's parameter)
# The build spec's `outputArtifacts`, by image repository key, as DELIVER_ARTIFACT maps them.
OUTPUT_ARTIFACTS = {"server": "server-image", "serverGpu": "server-gpu-image"}
# The build spec pushes to these repositories; the pipeline parameters default to the stack's own.
REPOSITORY_PARAMETERS = {"server": "IMAGE_REPOSITORY", "serverGpu": "GPU_IMAGE_REPOSITORY"}
# A published Conda pack (oci://bucket@namespace/path) the images run the server in; empty by default.
CONDA_PACK_PARAMETER = "CONDA_PACK_URI"
BUILD_SOURCE = "mis"  # the build spec finds the checkout at ${OCI_PRIMARY_SOURCE_DIR}
BUILD_RUNNER_IMAGE = "OL7_X86_64_STANDARD_10"
BUILD_TIMEOUT_S = 3600  # the build spec's own timeoutInSeconds bounds it too


@dataclass(frozen=True)
class MirrorArgs:
    url: str
    connection_type: str
    access_token_secret_id: str


@dataclass(frozen=True)
class DevOpsArgs:
    compartment_id: str
    branch: str
    build_on_push: bool
    approvals: int  # manual approvals before each rollout; 0: none
    mirror: MirrorArgs | None  # None: a repository hosted in OCI DevOps
    image_repositories: Mapping[str, pulumi.Input[str]]  # OUTPUT_ARTIFACTS keys -> OCIR paths
    # The server's Kubernetes objects as YAML, the image written `<repository>@${IMAGE_DIGEST}`.
    manifest: pulumi.Input[str]
    namespace: str
    cluster_id: pulumi.Input[str]
    # A private Kubernetes API endpoint is reached through a private endpoint in this subnet and NSG.
    private_channel_subnet_id: pulumi.Input[str] | None = None
    private_channel_nsg_ids: list[pulumi.Input[str]] | None = None
    conda_pack_uri: str = ""  # the build pipeline's CONDA_PACK_URI default


class DevOpsComponent(pulumi.ComponentResource):
    project_id: pulumi.Output[str]
    repository_url: pulumi.Output[str]
    build_pipeline_id: pulumi.Output[str]
    deploy_pipeline_id: pulumi.Output[str]
    topic_id: pulumi.Output[str]

    def __init__(self, name: str, args: DevOpsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mis:infra:DevOps", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        # DevOps projects must notify somewhere: subscribe people or chat hooks to this topic.
        topic = oci.ons.NotificationTopic(
            f"{name}-devops", compartment_id=args.compartment_id, name=f"{name}-devops",
            description="Build and deployment events of the Model Inference Server", opts=child,
        )
        project = oci.devops.Project(
            f"{name}-project", compartment_id=args.compartment_id, name=name,
            description="Builds, tests and deploys the Model Inference Server",
            notification_config={"topic_id": topic.id}, opts=child,
        )
        repository = self._repository(name, args, project.id)

        images = {
            key: oci.devops.DeployArtifact(
                f"{name}-{artifact}", project_id=project.id, display_name=f"{name}-{artifact}",
                deploy_artifact_type="DOCKER_IMAGE", argument_substitution_mode="SUBSTITUTE_PLACEHOLDERS",
                deploy_artifact_source={
                    "deploy_artifact_source_type": "OCIR",
                    "image_uri": pulumi.Output.concat(args.image_repositories[key], ":${", IMAGE_TAG, "}"),
                },
                opts=child,
            )
            for key, artifact in OUTPUT_ARTIFACTS.items()
        }
        manifest = oci.devops.DeployArtifact(
            f"{name}-manifest", project_id=project.id, display_name=f"{name}-manifest",
            deploy_artifact_type="KUBERNETES_MANIFEST", argument_substitution_mode="SUBSTITUTE_PLACEHOLDERS",
            deploy_artifact_source={"deploy_artifact_source_type": "INLINE", "base64encoded_content": args.manifest},
            opts=child,
        )
        channel = None
        if args.private_channel_subnet_id is not None:
            channel = {
                "network_channel_type": "PRIVATE_ENDPOINT_CHANNEL",
                "subnet_id": args.private_channel_subnet_id,
                "nsg_ids": args.private_channel_nsg_ids or [],
            }
        environment = oci.devops.DeployEnvironment(
            f"{name}-oke", project_id=project.id, display_name=f"{name}-oke", deploy_environment_type="OKE_CLUSTER",
            cluster_id=args.cluster_id, network_channel=channel, opts=child,
        )

        deploy_pipeline = oci.devops.DeployPipeline(
            f"{name}-deploy", project_id=project.id, display_name=f"{name}-deploy",
            description="Rolls the server image given by digest out to the stack's cluster",
            deploy_pipeline_parameters={"items": [{
                "name": IMAGE_DIGEST,
                "description": "sha256 digest of the server image in this stack's repository",
            }]},
            opts=child,
        )
        previous = deploy_pipeline.id
        if args.approvals:
            approval = oci.devops.DeployStage(
                f"{name}-approval", deploy_pipeline_id=deploy_pipeline.id, display_name="Approve the rollout",
                deploy_stage_type="MANUAL_APPROVAL",
                approval_policy={"approval_policy_type": "COUNT_BASED_APPROVAL",
                                 "number_of_approvals_required": args.approvals},
                deploy_stage_predecessor_collection={"items": [{"id": previous}]}, opts=child,
            )
            previous = approval.id
        oci.devops.DeployStage(
            f"{name}-rollout", deploy_pipeline_id=deploy_pipeline.id, display_name="Roll out to OKE",
            deploy_stage_type="OKE_DEPLOYMENT", oke_cluster_deploy_environment_id=environment.id,
            kubernetes_manifest_deploy_artifact_ids=[manifest.id], namespace=args.namespace,
            rollback_policy={"policy_type": "AUTOMATED_STAGE_ROLLBACK_POLICY"},
            deploy_stage_predecessor_collection={"items": [{"id": previous}]}, opts=child,
        )

        build_pipeline = oci.devops.BuildPipeline(
            f"{name}-build", project_id=project.id, display_name=f"{name}-build",
            description="Tests the repository, builds the server images and starts the deploy pipeline",
            build_pipeline_parameters={"items": [
                {"name": REPOSITORY_PARAMETERS[key], "default_value": args.image_repositories[key],
                 "description": f"OCIR repository the {OUTPUT_ARTIFACTS[key]} is pushed to"}
                for key in OUTPUT_ARTIFACTS
            ] + [{"name": CONDA_PACK_PARAMETER, "default_value": args.conda_pack_uri,
                  "description": "Conda pack to run the server in (oci://bucket@namespace/path); empty: its own"}]},
            opts=child,
        )
        build = oci.devops.BuildPipelineStage(
            f"{name}-build-stage", build_pipeline_id=build_pipeline.id, display_name="Test and build",
            build_pipeline_stage_type="BUILD", build_spec_file=BUILD_SPEC, image=BUILD_RUNNER_IMAGE,
            primary_build_source=BUILD_SOURCE, stage_execution_timeout_in_seconds=BUILD_TIMEOUT_S,
            build_source_collection={"items": [{
                "name": BUILD_SOURCE, "connection_type": "DEVOPS_CODE_REPOSITORY",
                "repository_id": repository.id, "repository_url": repository.http_url, "branch": args.branch,
            }]},
            build_pipeline_stage_predecessor_collection={"items": [{"id": build_pipeline.id}]}, opts=child,
        )
        deliver = oci.devops.BuildPipelineStage(
            f"{name}-deliver-stage", build_pipeline_id=build_pipeline.id, display_name="Deliver the images",
            build_pipeline_stage_type="DELIVER_ARTIFACT",
            deliver_artifact_collection={"items": [
                {"artifact_name": OUTPUT_ARTIFACTS[key], "artifact_id": artifact.id} for key, artifact in images.items()
            ]},
            build_pipeline_stage_predecessor_collection={"items": [{"id": build.id}]}, opts=child,
        )
        oci.devops.BuildPipelineStage(
            f"{name}-trigger-stage", build_pipeline_id=build_pipeline.id, display_name="Start the rollout",
            build_pipeline_stage_type="TRIGGER_DEPLOYMENT_PIPELINE", deploy_pipeline_id=deploy_pipeline.id,
            is_pass_all_parameters_enabled=True,
            build_pipeline_stage_predecessor_collection={"items": [{"id": deliver.id}]}, opts=child,
        )
        if args.build_on_push:
            oci.devops.Trigger(
                f"{name}-on-push", project_id=project.id, display_name=f"{name}-on-push",
                trigger_source="DEVOPS_CODE_REPOSITORY", repository_id=repository.id,
                actions=[{
                    "type": "TRIGGER_BUILD_PIPELINE", "build_pipeline_id": build_pipeline.id,
                    "filter": {"trigger_source": "DEVOPS_CODE_REPOSITORY", "events": ["PUSH"],
                               "include": {"head_ref": args.branch}},
                }],
                opts=child,
            )

        self.project_id = project.id
        self.repository_url = repository.http_url
        self.build_pipeline_id = build_pipeline.id
        self.deploy_pipeline_id = deploy_pipeline.id
        self.topic_id = topic.id
        self.register_outputs({
            "projectId": self.project_id, "repositoryUrl": self.repository_url,
            "buildPipelineId": self.build_pipeline_id, "deployPipelineId": self.deploy_pipeline_id,
            "topicId": self.topic_id,
        })

    def _repository(self, name: str, args: DevOpsArgs, project_id: pulumi.Output[str]) -> oci.devops.Repository:
        child = pulumi.ResourceOptions(parent=self)
        common = dict(project_id=project_id, name="model-inference-server", default_branch=f"refs/heads/{args.branch}",
                      description="The Model Inference Server's source", opts=child)
        if args.mirror is None:
            return oci.devops.Repository(f"{name}-repository", repository_type="HOSTED", **common)
        connection = oci.devops.Connection(
            f"{name}-mirror-connection", project_id=project_id, display_name=f"{name}-mirror",
            connection_type=args.mirror.connection_type, access_token=args.mirror.access_token_secret_id, opts=child,
        )
        return oci.devops.Repository(
            f"{name}-repository", repository_type="MIRRORED",
            mirror_repository_config={"connector_id": connection.id, "repository_url": args.mirror.url,
                                      "trigger_schedule": {"schedule_type": "DEFAULT"}},
            **common,
        )
