"""The network component under Pulumi mocks: the default security list and who reaches what."""

from __future__ import annotations

import ipaddress
import json

import pytest

from infra import settings
from tests.infra.harness import (
    OCI_STACKS, PROD_STACKS, PROJECT, inputs, run_program, setting, stack_config, stack_run,
)

NSG_RULE = "oci:Core/networkSecurityGroupSecurityRule:NetworkSecurityGroupSecurityRule"


def cidr_sources(stack: str, nsg_role: str) -> list[ipaddress.IPv4Network]:
    """The CIDR blocks admitted by one NSG (api, workers or lb) of the stack."""
    result = stack_run(stack)
    (nsg,) = [n for n in result.of_type("oci:Core/networkSecurityGroup:NetworkSecurityGroup")
              if n.name.endswith(f"-{nsg_role}-nsg")]
    return [
        ipaddress.IPv4Network(rule["source"]) for rule in map(inputs, result.of_type(NSG_RULE))
        if rule["networkSecurityGroupId"] == nsg.id and rule["direction"] == "INGRESS"
        and rule["sourceType"] == "CIDR_BLOCK"
    ]


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_the_default_security_list_is_emptied_and_the_only_one(stack):
    result = stack_run(stack)
    vcn = result.one("oci:Core/vcn:Vcn")
    default = result.one("oci:Core/defaultSecurityList:DefaultSecurityList")
    spec = inputs(default)
    assert spec["manageDefaultResourceId"] == f"ocid1.securitylist.oc1..{vcn.name}-default"
    assert spec["ingressSecurityRules"] == [] and spec["egressSecurityRules"] == []
    assert not result.of_type("oci:Core/securityList:SecurityList")
    subnets = result.of_type("oci:Core/subnet:Subnet")
    assert len(subnets) == 3
    for subnet in subnets:
        assert inputs(subnet)["securityListIds"] == [default.id], subnet.name


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_the_kubernetes_api_admits_public_ranges_only_with_a_reason(stack):
    sources = cidr_sources(stack, "api")
    assert sources == [ipaddress.IPv4Network(c) for c in setting(stack, "network").get("apiAllowedCidrs", [])]
    exposed = settings.public_addresses(sources)
    assert exposed <= settings.PUBLIC_ADDRESS_LIMIT
    if exposed:
        assert setting(stack, "network")["publicApiReason"].strip()


@pytest.mark.parametrize("stack", PROD_STACKS)
def test_prod_scoring_clients_are_named_ranges_not_the_internet(stack):
    assert settings.public_addresses(cidr_sources(stack, "lb")) <= settings.PUBLIC_ADDRESS_LIMIT


def cidr_ingress(result, nsg_role: str) -> list[tuple[str, str, dict | None]]:
    """(source, protocol, port range or ICMP options) of each CIDR-sourced ingress rule of one NSG."""
    (nsg,) = [n for n in result.of_type("oci:Core/networkSecurityGroup:NetworkSecurityGroup")
              if n.name.endswith(f"-{nsg_role}-nsg")]
    return [
        (rule["source"], rule["protocol"],
         rule.get("tcpOptions", {}).get("destinationPortRange") or rule.get("icmpOptions"))
        for rule in map(inputs, result.of_type(NSG_RULE))
        if rule["networkSecurityGroupId"] == nsg.id and rule["direction"] == "INGRESS"
        and rule["sourceType"] == "CIDR_BLOCK"
    ]


def assert_only_the_named_cidrs_get_in(result, network: dict) -> None:
    api = network.get("apiAllowedCidrs", [])
    clients = network.get("clientCidrs", [network["vcnCidr"]])  # the VCN unless the stack names its clients
    assert cidr_ingress(result, "api") == [(c, "6", {"min": 6443, "max": 6443}) for c in api], "operators: 6443 only"
    assert cidr_ingress(result, "lb") == [(c, "6", {"min": 80, "max": 80}) for c in clients], "clients: port 80 only"
    # The workers admit no address block but the VCN's path MTU discovery (everything else is NSG to NSG).
    assert cidr_ingress(result, "workers") == [(network["vcnCidr"], "1", {"type": 3, "code": 4})]


@pytest.mark.parametrize("stack", OCI_STACKS)
def test_each_nsg_admits_only_the_address_blocks_the_stack_names(stack):
    assert_only_the_named_cidrs_get_in(stack_run(stack), setting(stack, "network"))


def test_the_scoring_and_api_rules_follow_the_configured_client_and_admin_ranges():
    # Blocks that are neither the VCN nor the internet, so a rule that used either instead would show.
    config, secrets = stack_config("qa-sanjose")
    network = {**json.loads(config[f"{PROJECT}:network"]),
               "clientCidrs": ["10.0.0.0/8", "198.51.100.0/24"], "apiAllowedCidrs": ["10.1.0.0/16", "192.168.7.0/24"]}
    result = run_program("qa-sanjose", {**config, f"{PROJECT}:network": json.dumps(network)}, secrets)
    assert_only_the_named_cidrs_get_in(result, network)
