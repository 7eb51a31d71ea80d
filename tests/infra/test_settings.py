"""Stack settings: read once, typed, validated; every error names the offending key."""

from __future__ import annotations

import dataclasses
import ipaddress
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


@pytest.mark.parametrize("name, value", [("MIS_ENV", "dev"), ("MIS_API_KEYS_FILE", "/tmp/k.json"),
                                         ("MIS_AUTH", "off")])
def test_server_config_cannot_override_the_pod_contract_or_turn_authentication_off(name, value):
    fails(edit(base(), "server", config={name: value}), f"{P}:server.config.{name}")


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
    without = {k: v for k, v in base().items() if k not in (f"{P}:registryUser", f"{P}:registryAuthToken")}
    fails({**without, f"{P}:registryUser": "exampletenancyns/ci-bot"}, f"{P}:registryAuthToken")
    fails({**without, f"{P}:registryAuthToken": "token"}, f"{P}:registryUser")


def test_oci_stacks_need_a_way_to_pull_from_their_private_repository():
    without = {k: v for k, v in base().items() if k not in (f"{P}:registryUser", f"{P}:registryAuthToken")}
    message = fails(without, f"{P}:registryUser")
    assert "server.imagePullSecret" in message
    assert load(edit(without, "server", imagePullSecret="ocir-pull")).server.image_pull_secret == "ocir-pull"


# -- who may reach the Kubernetes API and the scoring endpoint ------------------------------------

# What `apiAllowedCidrs` may hold without a reason, in every env.
PRIVATE_RANGES = [["10.0.0.0/24"], ["172.16.0.0/12"], ["192.168.10.0/24", "10.1.0.0/16"], ["100.64.0.0/10"]]
# Public space, whole or in pieces, or a private range widened until it covers public space.
PUBLIC_RANGES = [
    ["0.0.0.0/0"],
    ["0.0.0.0/1", "128.0.0.0/1"],
    ["10.0.0.0/7"],
    ["172.0.0.0/11"],
    ["10.0.0.0/24", "198.51.100.0/24"],
]


def with_api_cidrs(stack: str, cidrs: list[str], **changes) -> dict[str, str]:
    return edit(base(stack), "network", apiAllowedCidrs=cidrs, **changes)


@pytest.mark.parametrize("stack", ["dev-phoenix", "qa-sanjose", "prod-ashburn"])
@pytest.mark.parametrize("cidrs", PUBLIC_RANGES, ids=str)
def test_public_api_cidrs_are_refused_in_every_env_without_a_reason(stack, cidrs):
    message = fails(with_api_cidrs(stack, cidrs, publicApiReason=None), f"{P}:network.apiAllowedCidrs")
    assert "network.publicApiReason" in message


@pytest.mark.parametrize("cidrs", PRIVATE_RANGES, ids=str)
def test_private_api_cidrs_need_no_reason(cidrs):
    loaded = load(with_api_cidrs("qa-sanjose", cidrs))
    assert loaded.network.api_allowed_cidrs == tuple(cidrs) and loaded.network.public_api_reason is None


def test_a_public_api_range_with_a_reason_is_accepted():
    loaded = load(with_api_cidrs("qa-sanjose", ["203.0.113.0/24"], publicApiReason="office egress"))
    assert loaded.network.api_allowed_cidrs == ("203.0.113.0/24",)
    assert loaded.network.public_api_reason == "office egress"


@pytest.mark.parametrize("cidrs", [["0.0.0.0/0"], ["0.0.0.0/1", "128.0.0.0/1"], ["198.18.0.0/15"]], ids=str)
def test_no_reason_opens_the_api_wider_than_a_slash_16(cidrs):
    fails(with_api_cidrs("dev-phoenix", cidrs), f"{P}:network.apiAllowedCidrs")


def test_a_blank_reason_is_no_reason():
    fails(with_api_cidrs("qa-sanjose", ["203.0.113.0/24"], publicApiReason="  "), f"{P}:network.publicApiReason")


def test_a_reason_with_nothing_public_to_justify_is_refused():
    fails(with_api_cidrs("qa-sanjose", ["10.0.0.0/24"], publicApiReason="stale"), f"{P}:network.publicApiReason")


@pytest.mark.parametrize("cidrs", [
    ["0.0.0.0/0"],
    ["0.0.0.0/1", "128.0.0.0/1"],
    # The internet without 10.0.0.0/8: 0.0.0.0/0 in eight pieces.
    [str(block) for block in ipaddress.IPv4Network("0.0.0.0/0").address_exclude(ipaddress.IPv4Network("10.0.0.0/8"))],
], ids=lambda cidrs: f"{len(cidrs)} blocks")
def test_prod_refuses_the_internet_as_scoring_clients_however_it_is_split(cidrs):
    message = fails(edit(base(), "network", clientCidrs=cidrs, publicLoadBalancer=True), f"{P}:network.clientCidrs")
    assert "public addresses" in message


def test_prod_accepts_named_client_ranges():
    cidrs = ["10.0.0.0/8", "198.51.100.0/24", "203.0.113.0/24"]
    loaded = load(edit(base(), "network", clientCidrs=cidrs, publicLoadBalancer=True))
    assert loaded.network.client_cidrs == tuple(cidrs)


def test_dev_may_open_its_scoring_endpoint_to_everyone():
    loaded = load(edit(base("dev-phoenix"), "network", clientCidrs=["0.0.0.0/0"], publicLoadBalancer=True))
    assert loaded.network.client_cidrs == ("0.0.0.0/0",)


def test_public_addresses_counts_the_union_outside_private_space():
    def count(*blocks):
        return settings.public_addresses(ipaddress.IPv4Network(b) for b in blocks)

    assert count("10.0.0.0/8", "100.64.0.0/10") == 0
    assert count("0.0.0.0/1", "128.0.0.0/1") == count("0.0.0.0/0") == 2**32 - 2**24 - 2**20 - 2**16 - 2**22
    assert count("203.0.113.0/24", "203.0.113.128/25") == 256


# -- master key rotation ----------------------------------------------------------------------------

def test_prod_rotates_its_master_key_in_a_virtual_private_vault():
    loaded = load(base())
    assert loaded.vault_type == "VIRTUAL_PRIVATE" and loaded.key_rotation_days == 90
    assert load({**base(), f"{P}:keyRotationDays": "365"}).key_rotation_days == 365


def test_prod_refuses_a_vault_that_cannot_rotate_keys():
    fails({**base(), f"{P}:vaultType": "DEFAULT"}, f"{P}:vaultType")


@pytest.mark.parametrize("days", ["59", "366", "ninety", "90.5"])
def test_rotation_interval_is_what_oci_accepts(days):
    fails({**base(), f"{P}:keyRotationDays": days}, f"{P}:keyRotationDays")


def test_a_default_vault_cannot_promise_rotation():
    loaded = load(base("dev-phoenix"))
    assert loaded.vault_type == "DEFAULT" and loaded.key_rotation_days is None
    fails({**base("dev-phoenix"), f"{P}:keyRotationDays": "90"}, f"{P}:keyRotationDays")
    assert load({**base("dev-phoenix"), f"{P}:vaultType": "VIRTUAL_PRIVATE"}).key_rotation_days == 90
