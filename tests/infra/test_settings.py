"""Stack settings: read once, typed, validated; every error names the offending key."""

from __future__ import annotations

import dataclasses
import json

import pytest

from infra import settings
from tests.infra import harness

P = "model-inference-platform"


def base(stack: str = "prod-ashburn") -> dict[str, str]:
    return dict(harness.stack_config(stack)[0])


def load(config: dict[str, str], stack: str = "test") -> settings.Settings:
    return harness.with_config(stack, config, settings.load)


def edit(stack_config: dict[str, str], key: str, **changes) -> dict[str, str]:
    value = json.loads(stack_config[f"{P}:{key}"])
    value.update(changes)
    return {**stack_config, f"{P}:{key}": json.dumps({k: v for k, v in value.items() if v is not None})}


def fails(config: dict[str, str], key: str) -> str:
    with pytest.raises(settings.SettingsError) as error:
        load(config)
    assert key in str(error.value)
    return str(error.value)


@pytest.mark.parametrize("stack", harness.stack_names())
def test_every_stack_file_loads(stack):
    loaded = load(base(stack), stack)
    assert loaded.env in settings.ENVIRONMENTS
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.env = "dev"


def test_oci_settings_are_typed():
    loaded = load(base(), "prod-ashburn")
    assert loaded.region == "us-ashburn-1" and loaded.mode == "oci" and loaded.protect
    assert loaded.network.vcn_cidr == "10.30.0.0/16"
    # Subnets default to slices of the VCN.
    assert loaded.network.worker_subnet_cidr == "10.30.0.0/17"
    assert loaded.network.load_balancer_subnet_cidr == "10.30.128.0/24"
    assert loaded.network.endpoint_subnet_cidr == "10.30.255.240/28"
    assert loaded.cpu_pool.min_nodes == 3 and loaded.gpu_pool.ocpus is None
    assert loaded.server.config == {"MIS_DEMO_MODELS": "false"}
    assert loaded.name_prefix == "mis-prod-ashburn"


def test_unknown_env_names_the_key():
    message = fails({**base(), f"{P}:env": "staging"}, f"{P}:env")
    assert "dev, qa, prod" in message


def test_missing_env_names_the_key():
    config = base()
    del config[f"{P}:env"]
    fails(config, f"{P}:env")


def test_missing_region_names_the_key():
    config = base()
    del config["oci:region"]
    fails(config, "oci:region")


def test_malformed_region_names_the_key():
    fails({**base(), "oci:region": "ashburn"}, "oci:region")


def test_overlapping_subnets_name_the_key():
    config = edit(base(), "network", workerSubnetCidr="10.30.0.0/17", loadBalancerSubnetCidr="10.30.1.0/24")
    fails(config, f"{P}:network.loadBalancerSubnetCidr")


def test_pods_overlapping_the_vcn_names_the_key():
    fails(edit(base(), "network", podsCidr="10.30.0.0/16"), f"{P}:network.podsCidr")


def test_subnet_outside_the_vcn_names_the_key():
    fails(edit(base(), "network", workerSubnetCidr="10.99.0.0/24"), f"{P}:network.workerSubnetCidr")


def test_invalid_cidr_names_the_key():
    fails(edit(base(), "network", vcnCidr="10.30.0.0/33"), f"{P}:network.vcnCidr")


def test_gpu_pool_without_a_shape_names_the_key():
    fails(edit(base(), "gpuPool", shape=None), f"{P}:gpuPool.shape")


def test_cpu_pool_bounds_are_checked():
    fails(edit(base(), "cpuPool", minNodes=5, maxNodes=2), f"{P}:cpuPool.maxNodes")


def test_unknown_setting_in_an_object_names_it():
    fails(edit(base(), "cpuPool", maxNode=3), f"{P}:cpuPool.maxNode")


def test_prod_refuses_a_public_api_endpoint():
    fails({**base(), f"{P}:publicApiEndpoint": "true"}, f"{P}:publicApiEndpoint")


def test_prod_refuses_an_unpinned_image():
    fails(edit(base(), "server", imageTag="latest"), f"{P}:server.imageTag")


def test_public_api_endpoint_needs_allowed_cidrs():
    config = edit(base("dev-phoenix"), "network", apiAllowedCidrs=[])
    fails(config, f"{P}:network.apiAllowedCidrs")


def test_unsupported_kubernetes_version_names_the_key():
    fails({**base(), f"{P}:kubernetesVersion": "v1.20.0"}, f"{P}:kubernetesVersion")


def test_compartment_must_be_a_compartment_ocid():
    fails({**base(), f"{P}:compartmentId": "ocid1.tenancy.oc1..example"}, f"{P}:compartmentId")


def test_server_config_cannot_override_the_pod_contract():
    fails(edit(base(), "server", config={"MIS_ENV": "dev"}), f"{P}:server.config.MIS_ENV")


def test_hybrid_mode_needs_a_kubeconfig_and_an_image():
    config = base("edge-hybrid")
    without_kubeconfig = {k: v for k, v in config.items() if k != f"{P}:kubeconfig"}
    fails(without_kubeconfig, f"{P}:kubeconfig")
    fails(edit(config, "server", image=None), f"{P}:server.image")


def test_hybrid_mode_needs_no_oci_settings():
    loaded = load(base("edge-hybrid"), "edge-hybrid")
    assert loaded.mode == "hybrid" and loaded.network is None and loaded.compartment_id is None
    assert loaded.server.service_type == "ClusterIP"


def test_registry_user_and_token_come_together():
    fails({**base(), f"{P}:registryUser": "exampletenancyns/ci-bot"}, f"{P}:registryAuthToken")
    fails({**base(), f"{P}:registryAuthToken": "token"}, f"{P}:registryUser")
