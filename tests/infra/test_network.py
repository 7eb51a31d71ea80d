"""The network component under Pulumi mocks: the default security list and who reaches what."""

from __future__ import annotations

import ipaddress

import pytest

from infra import settings
from tests.infra.harness import OCI_STACKS, PROD_STACKS, inputs, setting, stack_run

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
