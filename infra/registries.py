"""Registries: private OCIR repositories for the server images and an Artifact Registry repository.

Repositories are private (pulls need credentials or the cluster's identity) and, in prod,
immutable: a released tag can never be overwritten, so promotion by digest stays meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_oci as oci

IMAGES = {"server": "model-inference-server", "serverGpu": "model-inference-server-gpu"}


@dataclass(frozen=True)
class RegistriesArgs:
    compartment_id: str
    region: str
    namespace: pulumi.Input[str]  # the tenancy's Object Storage namespace, which OCIR paths use too
    immutable: bool
    protect: bool


class RegistriesComponent(pulumi.ComponentResource):
    image_repositories: dict[str, pulumi.Output[str]]
    artifact_repository_id: pulumi.Output[str]

    def __init__(self, name: str, args: RegistriesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mis:infra:Registries", name, None, opts)
        stateful = pulumi.ResourceOptions(parent=self, protect=args.protect)

        self.image_repositories = {}
        for key, image in IMAGES.items():
            repository = oci.artifacts.ContainerRepository(
                f"{name}-{image}", compartment_id=args.compartment_id, display_name=f"{name}/{image}",
                is_public=False, is_immutable=args.immutable, opts=stateful,
            )
            self.image_repositories[key] = pulumi.Output.concat(
                args.region, ".ocir.io/", args.namespace, "/", repository.display_name
            )
        artifacts = oci.artifacts.Repository(
            f"{name}-artifacts", compartment_id=args.compartment_id, display_name=f"{name}-artifacts",
            description="Deployment artifacts (manifests, build outputs) of the Model Inference Server",
            repository_type="GENERIC", is_immutable=args.immutable, opts=stateful,
        )
        self.artifact_repository_id = artifacts.id
        self.register_outputs({
            "imageRepositories": self.image_repositories,
            "artifactRepositoryId": self.artifact_repository_id,
        })
