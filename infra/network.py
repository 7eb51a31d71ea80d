"""Network: one VCN per stack with private subnets, NAT and service gateways, and NSGs for OKE.

All traffic rules live in network security groups (one each for the API endpoint, the workers and
the load balancers) and are exactly the flannel-overlay rules OKE documents, nothing more. The
VCN's default security list, which OCI creates with SSH open to 0.0.0.0/0, is taken over and
emptied, and it is the only security list the subnets carry.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_oci as oci

TCP, ICMP, ALL = "6", "1", "all"
ANYWHERE = "0.0.0.0/0"
NODE_PORTS = (30000, 32767)


@dataclass(frozen=True)
class NetworkArgs:
    compartment_id: str
    vcn_cidr: str
    worker_subnet_cidr: str
    endpoint_subnet_cidr: str
    load_balancer_subnet_cidr: str
    api_allowed_cidrs: tuple[str, ...]
    client_cidrs: tuple[str, ...]
    public_api_endpoint: bool
    public_load_balancer: bool


class NetworkComponent(pulumi.ComponentResource):
    vcn_id: pulumi.Output[str]
    worker_subnet_id: pulumi.Output[str]
    endpoint_subnet_id: pulumi.Output[str]
    load_balancer_subnet_id: pulumi.Output[str]
    api_nsg_id: pulumi.Output[str]
    worker_nsg_id: pulumi.Output[str]
    load_balancer_nsg_id: pulumi.Output[str]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mis:infra:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        compartment = args.compartment_id

        vcn = oci.core.Vcn(
            f"{name}-vcn", compartment_id=compartment, cidr_blocks=[args.vcn_cidr],
            display_name=f"{name}-vcn", dns_label="mis", opts=child,
        )
        # The Oracle Services Network of this region (OCIR, Object Storage, OKE), reached privately.
        services = oci.core.get_services_output(
            filters=[{"name": "name", "values": ["All .* Services In Oracle Services Network"], "regex": True}],
            opts=pulumi.InvokeOutputOptions(parent=self),
        ).services[0]
        service_cidr = services.cidr_block
        nat = oci.core.NatGateway(
            f"{name}-nat", compartment_id=compartment, vcn_id=vcn.id, display_name=f"{name}-nat", opts=child,
        )
        service_gateway = oci.core.ServiceGateway(
            f"{name}-sgw", compartment_id=compartment, vcn_id=vcn.id, display_name=f"{name}-sgw",
            services=[{"service_id": services.id}], opts=child,
        )
        private_routes = oci.core.RouteTable(
            f"{name}-private-rt", compartment_id=compartment, vcn_id=vcn.id, display_name=f"{name}-private-rt",
            route_rules=[
                {"destination": ANYWHERE, "destination_type": "CIDR_BLOCK", "network_entity_id": nat.id,
                 "description": "egress to the internet (image pulls) without public IPs"},
                {"destination": service_cidr, "destination_type": "SERVICE_CIDR_BLOCK",
                 "network_entity_id": service_gateway.id,
                 "description": "OCI services without leaving Oracle's network"},
            ],
            opts=child,
        )
        public_routes = None
        if args.public_api_endpoint or args.public_load_balancer:
            internet = oci.core.InternetGateway(
                f"{name}-igw", compartment_id=compartment, vcn_id=vcn.id, display_name=f"{name}-igw", opts=child,
            )
            public_routes = oci.core.RouteTable(
                f"{name}-public-rt", compartment_id=compartment, vcn_id=vcn.id, display_name=f"{name}-public-rt",
                route_rules=[{"destination": ANYWHERE, "destination_type": "CIDR_BLOCK",
                              "network_entity_id": internet.id, "description": "public endpoints"}],
                opts=child,
            )
        # Emptied rather than left unused: a subnet created later by hand would get it, SSH rule and all.
        no_rules = oci.core.DefaultSecurityList(
            f"{name}-default-security-list", manage_default_resource_id=vcn.default_security_list_id,
            compartment_id=compartment, display_name=f"{name}-default-security-list",
            ingress_security_rules=[], egress_security_rules=[], opts=child,
        )

        def subnet(role: str, cidr: str, public: bool) -> oci.core.Subnet:
            return oci.core.Subnet(
                f"{name}-{role}", compartment_id=compartment, vcn_id=vcn.id, cidr_block=cidr,
                display_name=f"{name}-{role}", dns_label=role.replace("-", "")[:15],
                prohibit_public_ip_on_vnic=not public, prohibit_internet_ingress=not public,
                route_table_id=(public_routes if public else private_routes).id,
                security_list_ids=[no_rules.id], opts=child,
            )

        workers = subnet("workers", args.worker_subnet_cidr, public=False)
        endpoint = subnet("api", args.endpoint_subnet_cidr, public=args.public_api_endpoint)
        balancers = subnet("lb", args.load_balancer_subnet_cidr, public=args.public_load_balancer)

        nsgs = {
            role: oci.core.NetworkSecurityGroup(
                f"{name}-{role}-nsg", compartment_id=compartment, vcn_id=vcn.id,
                display_name=f"{name}-{role}-nsg", opts=child,
            )
            for role in ("api", "workers", "lb")
        }
        path_discovery = {"type": 3, "code": 4}
        # (nsg, direction, protocol, peer, ports or ICMP options, why). A peer is another NSG's role,
        # "services" (the region's Oracle Services Network), or a CIDR block.
        rules = [
            ("api", "INGRESS", TCP, "workers", (6443, 6443), "workers to the Kubernetes API"),
            ("api", "INGRESS", TCP, "workers", (12250, 12250), "workers and workload identity to the control plane"),
            ("api", "INGRESS", ICMP, "workers", path_discovery, "path MTU discovery"),
            *[("api", "INGRESS", TCP, cidr, (6443, 6443), "operators to the Kubernetes API")
              for cidr in args.api_allowed_cidrs],
            ("api", "EGRESS", TCP, "services", (443, 443), "control plane to OCI services"),
            ("api", "EGRESS", TCP, "workers", None, "control plane to kubelets and pods"),
            ("api", "EGRESS", ICMP, "workers", path_discovery, "path MTU discovery"),
            ("workers", "INGRESS", ALL, "workers", None, "pod-to-pod and node-to-node traffic"),
            ("workers", "INGRESS", TCP, "api", None, "control plane to kubelets and webhooks"),
            ("workers", "INGRESS", TCP, "lb", NODE_PORTS, "load balancers to node ports"),
            ("workers", "INGRESS", TCP, "lb", (10256, 10256), "load balancer health checks of kube-proxy"),
            ("workers", "INGRESS", ICMP, args.vcn_cidr, path_discovery, "path MTU discovery"),
            ("workers", "EGRESS", ALL, "workers", None, "pod-to-pod and node-to-node traffic"),
            ("workers", "EGRESS", TCP, "api", (6443, 6443), "kubelets to the Kubernetes API"),
            ("workers", "EGRESS", TCP, "api", (12250, 12250), "kubelets and workload identity to the control plane"),
            ("workers", "EGRESS", TCP, "services", None, "OCIR, Object Storage and OKE via the service gateway"),
            ("workers", "EGRESS", TCP, ANYWHERE, (443, 443), "HTTPS through the NAT gateway"),
            ("workers", "EGRESS", ICMP, ANYWHERE, path_discovery, "path MTU discovery"),
            *[("lb", "INGRESS", TCP, cidr, (80, 80), "clients to the scoring endpoint") for cidr in args.client_cidrs],
            ("lb", "EGRESS", TCP, "workers", NODE_PORTS, "load balancers to node ports"),
            ("lb", "EGRESS", TCP, "workers", (10256, 10256), "health checks of kube-proxy"),
        ]
        protocol_names = {TCP: "tcp", ICMP: "icmp", ALL: "all"}
        for role, direction, protocol, peer, ports, description in rules:
            if peer in nsgs:
                peer_type, peer_value = "NETWORK_SECURITY_GROUP", nsgs[peer].id
            elif peer == "services":
                peer_type, peer_value = "SERVICE_CIDR_BLOCK", service_cidr
            else:
                peer_type, peer_value = "CIDR_BLOCK", peer
            endpoints = (
                {"source": peer_value, "source_type": peer_type} if direction == "INGRESS"
                else {"destination": peer_value, "destination_type": peer_type}
            )
            options = {}
            if protocol == ICMP:
                options["icmp_options"] = ports
            elif ports is not None:
                options["tcp_options"] = {"destination_port_range": {"min": ports[0], "max": ports[1]}}
            # Named by content, not position, so adding a rule never replaces the others.
            port_part = f"-{ports[0]}-{ports[1]}" if isinstance(ports, tuple) else ""
            peer_part = peer.replace(".", "-").replace("/", "-")
            oci.core.NetworkSecurityGroupSecurityRule(
                f"{name}-{role}-{direction.lower()}-{peer_part}-{protocol_names[protocol]}{port_part}",
                network_security_group_id=nsgs[role].id,
                direction=direction, protocol=protocol, description=description, stateless=False,
                **endpoints, **options, opts=child,
            )

        self.vcn_id = vcn.id
        self.worker_subnet_id = workers.id
        self.endpoint_subnet_id = endpoint.id
        self.load_balancer_subnet_id = balancers.id
        self.api_nsg_id = nsgs["api"].id
        self.worker_nsg_id = nsgs["workers"].id
        self.load_balancer_nsg_id = nsgs["lb"].id
        self.register_outputs({
            "vcnId": self.vcn_id,
            "workerSubnetId": self.worker_subnet_id,
            "endpointSubnetId": self.endpoint_subnet_id,
            "loadBalancerSubnetId": self.load_balancer_subnet_id,
        })
