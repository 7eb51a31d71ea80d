"""Stack settings: read once, typed, validated; every error names the offending key."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import operator

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


# -- the prod client cap counts every block together --------------------------------------------------

def slash_24s(count: int) -> list[str]:
    """`count` adjacent public /24s (198.18.0.0/15 is outside PRIVATE_NETWORKS), each far under a /16."""
    return [str(block) for block in list(ipaddress.IPv4Network("198.18.0.0/15").subnets(new_prefix=24))[:count]]


# Lists whose blocks each open at most a /16 of public space, but whose total is one address or more past it.
OVER_THE_CAP = [
    (["198.51.0.0/17", "198.51.128.0/17", "203.0.113.0/24"], 2**16 + 256),
    (slash_24s(257), 2**16 + 256),
    (["192.168.0.0/15", "203.0.113.7/32"], 2**16 + 1),  # the /15's public half is a /16, plus one address
]
# Exactly a /16's worth of public space: in pieces, partly private, overlapping, or beside private ranges.
AT_THE_CAP = [
    ["198.51.0.0/17", "198.51.128.0/18", "198.51.192.0/18"],
    slash_24s(256),
    ["192.168.0.0/15"],
    ["198.51.0.0/16", "198.51.100.0/24", "198.51.0.0/17", "198.51.0.0/16"],  # overlaps counted once
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "198.51.0.0/16"],  # private space is free
]


@pytest.mark.parametrize("cidrs, total", OVER_THE_CAP, ids=[f"{len(cidrs)} blocks" for cidrs, _ in OVER_THE_CAP])
def test_prod_caps_the_public_scoring_clients_in_total_not_per_block(cidrs, total):
    assert all(settings.public_addresses([ipaddress.IPv4Network(c)]) <= settings.PUBLIC_ADDRESS_LIMIT for c in cidrs)
    message = fails(edit(base(), "network", clientCidrs=cidrs, publicLoadBalancer=True), f"{P}:network.clientCidrs")
    assert f"to {total} public addresses" in message, message


@pytest.mark.parametrize("cidrs", AT_THE_CAP, ids=lambda cidrs: f"{len(cidrs)} blocks")
def test_prod_accepts_scoring_clients_up_to_a_slash_16_of_public_addresses(cidrs):
    loaded = load(edit(base(), "network", clientCidrs=cidrs, publicLoadBalancer=True))
    assert loaded.network.client_cidrs == tuple(cidrs)


@pytest.mark.parametrize("stack", ["dev-phoenix", "qa-sanjose"])
def test_only_prod_caps_its_scoring_clients(stack):
    cidrs = slash_24s(257) + ["0.0.0.0/0"]
    loaded = load(edit(base(stack), "network", clientCidrs=cidrs, publicLoadBalancer=True))
    assert loaded.network.client_cidrs == tuple(cidrs)


def test_the_api_cap_with_a_reason_counts_every_block_together():
    # dev-phoenix has a publicApiReason: a /16's worth in pieces is accepted, one /24 more is not.
    at_the_cap = load(with_api_cidrs("dev-phoenix", slash_24s(256)))
    assert at_the_cap.network.api_allowed_cidrs == tuple(slash_24s(256))
    message = fails(with_api_cidrs("dev-phoenix", slash_24s(257)), f"{P}:network.apiAllowedCidrs")
    assert f"to {2**16 + 256} public addresses" in message, message


# -- every bound of the settings ------------------------------------------------------------------------

def with_setting(stack: str, name: str, value) -> dict[str, str]:
    """The stack's config with one setting changed (None: removed); `section.field` edits an object setting."""
    config = base(stack)
    section, _, field = name.partition(".")
    if not field:
        without = {k: v for k, v in config.items() if k != f"{P}:{name}"}
        return without if value is None else {**without, f"{P}:{name}": value}
    current = json.loads(config.get(f"{P}:{section}", "{}"))
    current = {k: v for k, v in {**current, field: value}.items() if v is not None}
    return {**config, f"{P}:{section}": json.dumps(current)}


MIRROR = {"url": "https://github.com/example/model-inference-server.git", "connectionType": "GITHUB_ACCESS_TOKEN",
          "accessTokenSecretId": "ocid1.vaultsecret.oc1..example-token"}

# (stack, setting, value that crosses a bound, key the message names when it is not the setting itself)
REFUSED = [
    ("prod-ashburn", "mode", "edge", None),
    ("prod-ashburn", "kubernetesVersion", "v1.24.9", None),
    ("prod-ashburn", "kubernetesVersion", "v1.38.0", None),
    ("prod-ashburn", "kubernetesVersion", "1.33.1", None),
    ("prod-ashburn", "kubernetesVersion", "v1.33", None),
    ("prod-ashburn", "homeRegion", None, None),
    ("prod-ashburn", "homeRegion", "ashburn", None),
    ("prod-ashburn", "tenancyId", "ocid1.compartment.oc1..example", None),
    ("prod-ashburn", "compartmentId", None, None),
    ("dev-phoenix", "publicApiEndpoint", "yes", None),
    ("qa-sanjose", "vaultType", "EXTERNAL", None),  # in prod any other type fails as not VIRTUAL_PRIVATE
    ("prod-ashburn", "keyProtectionMode", "EXTERNAL", None),
    ("prod-ashburn", "network", None, None),
    ("prod-ashburn", "network", "10.30.0.0/16", None),
    ("prod-ashburn", "network.vcnCidr", None, None),
    ("prod-ashburn", "network.vcnCidr", "10.30.0.0/15", None),
    ("prod-ashburn", "network.vcnCidr", "10.30.0.0/23", None),
    ("prod-ashburn", "network.vcnCidr", "10.30.0.1/16", None),  # host bits set: not a network
    ("prod-ashburn", "network.endpointSubnetCidr", "10.99.0.0/28", None),
    ("prod-ashburn", "network.loadBalancerSubnetCidr", "10.99.0.0/24", None),
    ("prod-ashburn", "network.endpointSubnetCidr", "10.30.0.0/28", None),  # inside the workers' half
    ("prod-ashburn", "network.servicesCidr", "10.30.0.0/16", None),
    ("prod-ashburn", "network.servicesCidr", "10.244.0.0/16", None),  # the pods' range
    ("prod-ashburn", "network.apiAllowedCidrs", "10.0.0.0/24", None),  # a block, not a list
    ("prod-ashburn", "network.clientCidrs", "10.0.0.0/8", None),
    ("prod-ashburn", "network.clientCidrs", ["10.0.0.0/33"], None),
    ("prod-ashburn", "network.publicLoadBalancer", "yes", None),
    ("prod-ashburn", "cpuPool", None, None),
    ("prod-ashburn", "cpuPool.shape", None, None),
    ("prod-ashburn", "cpuPool.ocpus", 0.5, None),
    ("prod-ashburn", "cpuPool.ocpus", "4", None),
    ("prod-ashburn", "cpuPool.memoryGbs", 0, None),
    ("prod-ashburn", "cpuPool.minNodes", 0, None),
    ("prod-ashburn", "cpuPool.minNodes", 2.5, None),
    ("prod-ashburn", "gpuPool.maxNodes", True, None),  # True would read as 1, above gpuPool.minNodes 0
    ("prod-ashburn", "cpuPool.bootVolumeGbs", 49, None),
    ("prod-ashburn", "gpuPool.ocpus", 2, None),  # a fixed shape takes no shape config
    ("prod-ashburn", "gpuPool.minNodes", -1, None),
    ("prod-ashburn", "gpuPool.maxNodes", 0, None),
    ("prod-ashburn", "server.image", "registry.example.com/mis/model-inference-server:1.0", None),
    ("prod-ashburn", "server.imageDigest", "sha256:3f1c9a7e", None),
    ("edge-hybrid", "server.imageDigest", "sha256:" + "0" * 64, None),
    ("prod-ashburn", "server.minReplicas", 0, None),
    ("prod-ashburn", "server.maxReplicas", 2, None),  # prod-ashburn's minReplicas is 3
    ("prod-ashburn", "server.workers", 0, None),
    ("prod-ashburn", "server.inFlightTarget", 0, None),
    ("prod-ashburn", "server.logLevel", "verbose", None),
    ("prod-ashburn", "server.serviceType", "ExternalName", None),
    ("prod-ashburn", "server.cpuRequest", "lots", None),
    ("prod-ashburn", "server.memoryLimit", "4GB", None),
    ("prod-ashburn", "server.dataSizeLimit", "-1Gi", None),
    ("prod-ashburn", "server.namespace", "MIS", None),
    ("prod-ashburn", "server.imagePullSecret", "ocir_pull", None),
    ("prod-ashburn", "server.config", "MIS_WORKERS=4", None),
    ("prod-ashburn", "server.config", {"WORKERS": "4"}, "server.config.WORKERS"),
    ("prod-ashburn", "server.config", {"MIS_CATALOG": "local"}, "server.config.MIS_CATALOG"),
    ("prod-ashburn", "server.config", {"MIS_OCI_BUCKET": "other"}, "server.config.MIS_OCI_BUCKET"),
    ("prod-ashburn", "server.config", {"MIS_LOG_FORMAT": ["json"]}, "server.config.MIS_LOG_FORMAT"),
    ("prod-ashburn", "server.config", {"MIS_DEMO_MODELS": True}, "server.config.MIS_DEMO_MODELS"),
    ("dev-phoenix", "devops.buildOnPush", "yes", None),
    ("prod-ashburn", "devops.buildOnPush", True, None),
    ("prod-ashburn", "devops.approvals", 0, None),
    ("qa-sanjose", "devops.approvals", -1, None),
    ("qa-sanjose", "devops.branch", "-main", None),
    ("qa-sanjose", "devops.branch", "feature branch", None),
    ("qa-sanjose", "devops.mirror", {k: v for k, v in MIRROR.items() if k != "connectionType"}, None),
    ("qa-sanjose", "devops.mirror", {**MIRROR, "url": "http://github.com/example/mis.git"}, "devops.mirror.url"),
    ("qa-sanjose", "devops.mirror", {**MIRROR, "connectionType": "SSH_KEY"}, "devops.mirror.connectionType"),
    ("qa-sanjose", "devops.mirror", {**MIRROR, "accessTokenSecretId": "ocid1.key.oc1..example"},
     "devops.mirror.accessTokenSecretId"),
]


@pytest.mark.parametrize("stack, name, value, key", REFUSED, ids=[f"{n}={v!r}"[:60] for _, n, v, _ in REFUSED])
def test_each_settings_bound_is_refused_naming_the_key(stack, name, value, key):
    fails(with_setting(stack, name, value), f"{P}:{key or name}")


# (stack, setting, a value just inside its bound, where it lands in Settings)
ACCEPTED = [
    ("prod-ashburn", "kubernetesVersion", "v1.25.0", "kubernetes_version"),
    ("prod-ashburn", "kubernetesVersion", "v1.37.12", "kubernetes_version"),
    ("prod-ashburn", "keyRotationDays", "60", "key_rotation_days"),
    ("prod-ashburn", "keyProtectionMode", "SOFTWARE", "key_protection_mode"),
    ("prod-ashburn", "network.vcnCidr", "10.30.0.0/22", "network.vcn_cidr"),
    ("prod-ashburn", "cpuPool.ocpus", 1, "cpu_pool.ocpus"),
    ("prod-ashburn", "cpuPool.memoryGbs", 1, "cpu_pool.memory_gbs"),
    ("prod-ashburn", "cpuPool.maxNodes", 3, "cpu_pool.max_nodes"),  # prod-ashburn's minNodes is 3
    ("prod-ashburn", "cpuPool.bootVolumeGbs", 50, "cpu_pool.boot_volume_gbs"),
    ("prod-ashburn", "gpuPool.maxNodes", 1, "gpu_pool.max_nodes"),
    ("prod-ashburn", "server.maxReplicas", 3, "server.max_replicas"),  # prod-ashburn's minReplicas is 3
    ("prod-ashburn", "server.workers", 1, "server.workers"),
    ("prod-ashburn", "server.inFlightTarget", 1, "server.in_flight_target"),
    ("prod-ashburn", "server.logLevel", "critical", "server.log_level"),
    ("prod-ashburn", "server.serviceType", "NodePort", "server.service_type"),
    ("prod-ashburn", "devops.approvals", 1, "devops.approvals"),
    ("qa-sanjose", "devops.approvals", 0, "devops.approvals"),
    ("qa-sanjose", "devops.branch", "release/2.1", "devops.branch"),
]


@pytest.mark.parametrize("stack, name, value, attribute", ACCEPTED, ids=[f"{s}-{n}={v!r}" for s, n, v, _ in ACCEPTED])
def test_each_value_just_inside_a_bound_is_accepted(stack, name, value, attribute):
    loaded = operator.attrgetter(attribute)(load(with_setting(stack, name, value)))
    assert loaded == (int(value) if name == "keyRotationDays" else value), (name, value, loaded)


def test_hybrid_stacks_may_point_the_server_at_their_own_catalog_and_bucket():
    # Reserved in OCI mode only: there the stack wires the server to its own compartment and bucket.
    config = {"MIS_CATALOG": "oci", "MIS_OCI_BUCKET": "edge-models"}
    assert load(with_setting("edge-hybrid", "server.config", config)).server.config == config


def test_demo_models_may_only_be_turned_off():
    loaded = load(with_setting("prod-ashburn", "server.config", {"MIS_DEMO_MODELS": False}))
    assert loaded.server.config == {"MIS_DEMO_MODELS": "false"}
