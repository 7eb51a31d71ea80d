"""Every stack starts a server: the environment the container gets (the image's ENV, then the pod's
env and ConfigMap as each stack renders them) parses with the server's own config parser, and no
stack asks an image without oracle-ads to build the demo models."""

from __future__ import annotations

import pytest

from infra.render import kubernetes_objects
from server.config import Config
from tests.infra.harness import STACKS, setting, stack_run
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
