"""Every stack starts a server: the environment the container gets (the image's ENV, then the pod's
env and ConfigMap as each stack renders them) parses with the server's own config parser, and no
stack asks an image without oracle-ads to build the demo models."""

from __future__ import annotations

import pytest

from infra.render import kubernetes_objects
from server.config import Config
from tests.infra.harness import STACKS, is_hybrid, setting, stack_run
from tests.infra.harness import config as harness_config
from tests.pipelines.image import final_env, stages


def container_environment(stack: str) -> dict[str, str]:
    objects = kubernetes_objects(stack_run(stack))
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    config_maps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    environment = dict(final_env())
    for source in container.get("envFrom", []):
        environment.update(config_maps[source["configMapRef"]["name"]])
    environment.update({item["name"]: item["value"] for item in container["env"]})
    return environment


def image_can_build_demo_models() -> bool:
    """The demo builder is oracle-ads (the `demo` set); the image installs the `server` set only."""
    (dependencies, _) = stages()
    return any("oracle-ads" in rest or "'demo'" in rest for keyword, rest in dependencies if keyword == "RUN")


@pytest.mark.parametrize("stack", STACKS)
def test_each_stack_renders_a_server_config_that_parses(stack):
    config = Config.from_env(container_environment(stack))
    assert config.env == setting(stack, "env")
    assert config.bind == "0.0.0.0:8080"
    assert config.api_keys_file is not None, "a deployed server always authenticates"
    assert config.workers == setting(stack, "server", {}).get("workers", 2)
    assert config.log_level == setting(stack, "server", {}).get("logLevel", "info")
    assert not config.demo_models or image_can_build_demo_models(), (
        f"{stack} asks for demo models, which the server image cannot build (no oracle-ads)"
    )
    assert not image_can_build_demo_models()


@pytest.mark.parametrize("stack", STACKS)
def test_oci_stacks_serve_their_catalog_and_bucket_with_workload_identity_and_hybrid_ones_stay_local(stack):
    config = Config.from_env(container_environment(stack))
    if is_hybrid(stack):
        assert (config.catalog, config.store) == ("local", "local")
        return
    prefix = stack_run(stack).of_type("oci:ObjectStorage/bucket:Bucket")
    assert (config.catalog, config.store, config.oci_auth) == ("oci", "oci", "workload_identity")
    assert config.oci_compartment_id == setting(stack, "compartmentId")
    assert config.oci_bucket in {b.name for b in prefix} and config.oci_bucket.endswith("-models")
    assert config.oci_region == harness_config(stack)["oci:region"]
    assert config.preload == ()  # the bucket's loaded set decides, not each pod's start
