"""The cluster component: node image selection, and under Pulumi mocks, encryption with the stack keys."""

from __future__ import annotations

import pytest

from infra.cluster import pick_node_image
from tests.infra.harness import OCI_STACKS, inputs, node_pool_options, stack_run


def sources(version: str = "1.33.1"):
    return [(s["sourceName"], s["imageId"]) for s in node_pool_options(version)["sources"]]


def test_picks_the_newest_cpu_image_for_the_version():
    image = pick_node_image(sources(), "v1.33.1", gpu=False, arm=False)
    assert image == "ocid1.image.oc1..Oracle-Linux-8.10-2025.01.31-0-OKE-1.33.1-760"


def test_picks_gpu_and_arm_variants():
    assert "-GPU-" in pick_node_image(sources(), "v1.33.1", gpu=True, arm=False)
    assert "aarch64" in pick_node_image(sources(), "v1.33.1", gpu=False, arm=True)


def test_never_picks_another_versions_image():
    with pytest.raises(ValueError, match="v1.32.1"):
        pick_node_image(sources("1.33.1"), "v1.32.1", gpu=False, arm=False)


def test_a_patch_version_does_not_match_a_longer_one():
    assert pick_node_image([("Oracle-Linux-8.10-2025.01.31-0-OKE-1.33.10-760", "ten"),
                            ("Oracle-Linux-8.10-2025.01.31-0-OKE-1.33.1-760", "one")],
                           "v1.33.1", gpu=False, arm=False) == "one"


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_kubernetes_secrets_and_boot_volumes_use_the_stack_keys(stack):
    result = stack_run(stack)
    key, volume_key = result.master_keys()
    assert inputs(result.one("oci:ContainerEngine/cluster:Cluster"))["kmsKeyId"] == key.id
    pools = result.of_type("oci:ContainerEngine/nodePool:NodePool")
    assert pools
    for pool in pools:
        node_config = inputs(pool)["nodeConfigDetails"]
        assert node_config["kmsKeyId"] == volume_key.id, pool.name
        assert node_config["isPvEncryptionInTransitEnabled"] is True, pool.name
