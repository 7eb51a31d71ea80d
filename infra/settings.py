"""Stack settings: the only module that reads `pulumi.Config`.

`load()` reads the stack configuration once, validates all of it before any resource is declared,
and returns frozen dataclasses. Every error names the offending key as the operator writes it with
`pulumi config set` (e.g. `model-inference-platform:network.vcnCidr`), so a bad stack file fails
fast in `pulumi preview` instead of half-way through `pulumi up`.

A section that a component takes as read is that component's own args dataclass (a node pool is a
`NodePoolArgs`), or extends it with only the keys the component does not take (`NetworkSettings`,
`ServerSettings`): each setting is declared once and reaches its component without a copy. Settings
import those args types; components never import settings.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import pulumi

from infra.cluster import NodePoolArgs
from infra.devops import MirrorArgs
from infra.network import NetworkArgs
from infra.workload import ServerSpec

ENVIRONMENTS = ("dev", "qa", "prod")
MODES = ("oci", "hybrid")
# kubernetes-validate bundles schemas for these minor versions; outside them we cannot prove manifests.
KUBERNETES_MINORS = range(25, 38)
SERVICE_TYPES = ("LoadBalancer", "ClusterIP", "NodePort")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# Variables whose values are fixed by the pod layout or the stack, so `server.config` may not set them
# (MIS_AUTH: a deployed server always authenticates with the stack's keys).
RESERVED_SERVER_VARIABLES = ("MIS_ENV", "MIS_BIND", "MIS_DATA_DIR", "MIS_API_KEYS_FILE", "MIS_AUTH")
# In OCI mode the stack wires the server to its own catalog compartment and models bucket with the
# pods' workload identity (infra/workload.py oci_backends_config); hybrid stacks may set them.
RESERVED_OCI_SERVER_VARIABLES = ("MIS_CATALOG", "MIS_STORE", "MIS_OCI_AUTH", "MIS_OCI_COMPARTMENT_ID", "MIS_OCI_BUCKET")
# Address space the internet does not route: RFC 1918, and RFC 6598 shared space (100.64.0.0/10),
# which carriers and overlay VPNs use behind NAT, so no internet host can appear with such a source.
PRIVATE_NETWORKS = tuple(
    ipaddress.IPv4Network(block) for block in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
)
# The most public address space a stack may open the Kubernetes API (with a reason) or prod's scoring
# endpoint to: a /16's worth, an organisation's own egress ranges. Counting addresses rather than
# matching 0.0.0.0/0 means the internet split into pieces (0.0.0.0/1 + 128.0.0.0/1) is still refused.
PUBLIC_ADDRESS_LIMIT = 2**16
# What OCI accepts as an automatic rotation interval for a master key.
KEY_ROTATION_DAYS = range(60, 366)

_REGION = re.compile(r"^[a-z]{2,}-[a-z]+-\d+$")
_OCID = re.compile(r"^ocid1\.[a-z0-9]+\.[a-z0-9-]*\.[a-z0-9-]*\.[A-Za-z0-9._-]+$")
_K8S_VERSION = re.compile(r"^v1\.(\d+)\.(\d+)$")
_QUANTITY = re.compile(r"^\d+(\.\d+)?(m|Ki|Mi|Gi|Ti)?$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")
# As OCI Data Science publishes a Conda pack; the last segment is the pack's slug.
_CONDA_PACK = re.compile(r"^oci://[^@/\s]+@[^/\s]+/(.+/)?[A-Za-z0-9._-]+$")
# How OCI DevOps logs in to the external repository a mirror copies (a token kept in the Vault).
MIRROR_CONNECTION_TYPES = ("GITHUB_ACCESS_TOKEN", "GITLAB_ACCESS_TOKEN", "BITBUCKET_CLOUD_APP_PASSWORD")


class SettingsError(ValueError):
    """The stack configuration cannot be deployed; the message names the config key."""


@dataclass(frozen=True)
class NetworkSettings(NetworkArgs):
    """The network component's args, and the `network` keys that are not its own."""

    pods_cidr: str  # the cluster's
    services_cidr: str  # the cluster's
    # Why apiAllowedCidrs may include public address space; None: they are all private.
    public_api_reason: str | None


@dataclass(frozen=True)
class ServerSettings(ServerSpec):
    """The workload's spec as the stack sets it (`image` is the hybrid mode's reference by digest; OCI
    mode derives it from the stack's repository), and the one `server` key that is not the spec's."""

    # OCI mode: the image digest Pulumi deploys when it creates the Deployment; None on a new stack,
    # whose Deployment the release pipeline's first run creates. Rollouts belong to the pipeline.
    image_digest: str | None = None


@dataclass(frozen=True)
class DevOpsSettings:
    branch: str  # pushes to it start the build pipeline (when build_on_push)
    build_on_push: bool
    approvals: int  # approvals the deploy pipeline waits for before rolling out; 0: none
    mirror: MirrorArgs | None  # None: a repository hosted in OCI DevOps
    conda_pack: str  # oci://bucket@namespace/path of the Conda pack the images run in; "": their own


@dataclass(frozen=True)
class Settings:
    stack: str
    env: str
    mode: str
    kubernetes_version: str
    server: ServerSettings
    # OCI mode only (None in hybrid mode):
    region: str | None
    home_region: str | None
    tenancy_id: str | None
    compartment_id: str | None
    public_api_endpoint: bool
    network: NetworkSettings | None
    cpu_pool: NodePoolArgs | None
    gpu_pool: NodePoolArgs | None
    devops: DevOpsSettings | None
    vault_type: str
    key_protection_mode: str
    # Days between automatic rotations of the master key; None where OCI cannot rotate it (a DEFAULT vault).
    key_rotation_days: int | None
    oci_auth: str | None
    oci_profile: str | None
    # OCI mode: an OCIR user ("<namespace>/<user name>") and its auth token (a secret Output), from
    # which the workload makes its image pull secret; None when the stack sets neither.
    registry_user: str | None
    registry_auth_token: pulumi.Output[str] | None
    # Hybrid mode only: a secret Output holding a kubeconfig (contents or path), and its context.
    kubeconfig: pulumi.Output[str] | None
    kube_context: str | None

    @property
    def name_prefix(self) -> str:
        """Prefix of every cloud resource name: unique per stack, so stacks can share a compartment."""
        return f"mis-{self.stack}"

    @property
    def protect(self) -> bool:
        """Stateful resources (vault, keys, buckets, repositories) resist `pulumi destroy` in prod."""
        return self.env == "prod"

    @property
    def log_retention_days(self) -> int:
        """Flow and bucket access logs: the longest retention OCI Logging offers in prod, a month elsewhere."""
        return 180 if self.env == "prod" else 30


def public_addresses(blocks: Iterable[ipaddress.IPv4Network]) -> int:
    """How many addresses outside PRIVATE_NETWORKS the blocks cover together (overlaps counted once)."""
    remaining = list(ipaddress.collapse_addresses(blocks))
    for private in PRIVATE_NETWORKS:
        # Two CIDR blocks are either disjoint or one contains the other.
        remaining = [
            piece
            for block in remaining if not block.subnet_of(private)
            for piece in (block.address_exclude(private) if private.subnet_of(block) else (block,))
        ]
    return sum(block.num_addresses for block in remaining)


def load() -> Settings:
    """Read and validate the current stack's configuration."""
    reader = _Reader(pulumi.Config(), pulumi.Config("oci"))
    return reader.settings(pulumi.get_stack())


class _Reader:
    def __init__(self, config: pulumi.Config, oci_config: pulumi.Config):
        self.config = config
        self.oci = oci_config

    def key(self, name: str) -> str:
        return f"{self.config.name}:{name}"

    def fail(self, name: str, problem: str) -> SettingsError:
        return SettingsError(f"{self.key(name)} {problem}")

    # -- raw access ---------------------------------------------------------------------------

    def text(self, name: str, default: str | None = None, required: bool = False) -> str | None:
        value = self.config.get(name)
        if value is None or not value.strip():
            if required:
                raise self.fail(name, "is required")
            return default
        return value.strip()

    def integer(self, name: str, default: int, allowed: range) -> int:
        value = self.text(name)
        if value is None:
            return default
        if not re.fullmatch(r"-?\d+", value) or int(value) not in allowed:
            raise self.fail(name, f"must be a whole number from {allowed.start} to {allowed.stop - 1}, got {value!r}")
        return int(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self.config.get(name)
        if value is None:
            return default
        if value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise self.fail(name, f"must be true or false, got {value!r}")

    def obj(
        self, name: str, allowed: tuple[str, ...], required: bool = False, retired: Mapping[str, str] | None = None,
    ) -> dict[str, Any] | None:
        """A mapping setting with only `allowed` keys; `retired` keys fail with what replaced them."""
        raw = self.config.get(name)
        if raw is None:
            if required:
                raise self.fail(name, "is required")
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            raise self.fail(name, "must be an object (a YAML mapping in the stack file)") from None
        if not isinstance(value, dict):
            raise self.fail(name, "must be an object (a YAML mapping in the stack file)")
        for key, replacement in (retired or {}).items():
            if key in value:
                raise self.fail(f"{name}.{key}", f"is no longer a setting: {replacement}")
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise self.fail(f"{name}.{unknown[0]}", f"is not a known setting (known: {', '.join(allowed)})")
        return value

    # -- typed fields of objects ----------------------------------------------------------------

    def field_text(self, obj: dict, parent: str, name: str, default: str | None = None, pattern=None) -> str | None:
        value = obj.get(name, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip() or (pattern and not pattern.match(value)):
            raise self.fail(f"{parent}.{name}", f"has an invalid value {value!r}")
        return value.strip()

    def field_number(self, obj: dict, parent: str, name: str, default, kind=int, minimum=0):
        value = obj.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise self.fail(f"{parent}.{name}", f"must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        if value < minimum:
            raise self.fail(f"{parent}.{name}", f"must be at least {minimum}, got {value!r}")
        return kind(value)

    def field_cidrs(
        self, obj: dict, parent: str, name: str, default: tuple[ipaddress.IPv4Network, ...]
    ) -> tuple[ipaddress.IPv4Network, ...]:
        value = obj.get(name, [str(block) for block in default])
        if not isinstance(value, list):
            raise self.fail(f"{parent}.{name}", "must be a list of CIDR blocks")
        return tuple(self.network_of(f"{parent}.{name}", item) for item in value)

    def network_of(self, key: str, value: Any) -> ipaddress.IPv4Network:
        try:
            return ipaddress.IPv4Network(str(value), strict=True)
        except ValueError:
            raise self.fail(key, f"must be an IPv4 CIDR block such as 10.0.0.0/16, got {value!r}") from None

    # -- sections ---------------------------------------------------------------------------------

    def settings(self, stack: str) -> Settings:
        env = self.text("env", required=True)
        if env not in ENVIRONMENTS:
            raise self.fail("env", f"must be one of {', '.join(ENVIRONMENTS)}, got {env!r}")
        mode = self.text("mode", default="oci")
        if mode not in MODES:
            raise self.fail("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
        version = self.text("kubernetesVersion", required=True)
        match = _K8S_VERSION.match(version)
        if not match or int(match.group(1)) not in KUBERNETES_MINORS:
            raise self.fail(
                "kubernetesVersion",
                f"must be v1.{KUBERNETES_MINORS.start}.x to v1.{KUBERNETES_MINORS.stop - 1}.x, got {version!r}",
            )
        hybrid = mode == "hybrid"
        server = self.server(stack, env, hybrid)
        common = dict(stack=stack, env=env, mode=mode, kubernetes_version=version, server=server)
        if hybrid:
            return Settings(
                **common,
                region=None,
                home_region=None,
                tenancy_id=None,
                compartment_id=None,
                public_api_endpoint=False,
                network=None,
                cpu_pool=None,
                gpu_pool=None,
                devops=None,
                vault_type="DEFAULT",
                key_protection_mode="SOFTWARE",
                key_rotation_days=None,
                oci_auth=None,
                oci_profile=None,
                registry_user=None,
                registry_auth_token=None,
                kubeconfig=self.kubeconfig(),
                kube_context=self.text("kubeContext"),
            )

        region = self.oci.get("region")
        if not region:
            raise SettingsError("oci:region is required (the OCI region this stack deploys to)")
        if not _REGION.match(region):
            raise SettingsError(f"oci:region must be an OCI region identifier such as us-ashburn-1, got {region!r}")
        home_region = self.text("homeRegion", required=True)
        if not _REGION.match(home_region):
            raise self.fail("homeRegion", f"must be an OCI region identifier such as us-ashburn-1, got {home_region!r}")
        public_api = self.flag("publicApiEndpoint", default=False)
        if public_api and env == "prod":
            raise self.fail("publicApiEndpoint", "must be false in prod: the Kubernetes API stays private")
        tenancy_id, compartment_id = self.ocid("tenancyId", "tenancy"), self.ocid("compartmentId", "compartment")
        network = self.network(env, public_api, compartment_id)
        vault_type = self.text("vaultType", default="VIRTUAL_PRIVATE" if env == "prod" else "DEFAULT")
        if vault_type not in ("DEFAULT", "VIRTUAL_PRIVATE"):
            raise self.fail("vaultType", f"must be DEFAULT or VIRTUAL_PRIVATE, got {vault_type!r}")
        # OCI rotates a master key on a schedule only in a virtual private vault.
        if env == "prod" and vault_type != "VIRTUAL_PRIVATE":
            raise self.fail("vaultType", "must be VIRTUAL_PRIVATE in prod: only there does OCI rotate the master key")
        if vault_type == "VIRTUAL_PRIVATE":
            rotation_days = self.integer("keyRotationDays", 90, KEY_ROTATION_DAYS)
        elif self.text("keyRotationDays") is not None:
            raise self.fail("keyRotationDays", "needs vaultType VIRTUAL_PRIVATE: only there does OCI rotate keys")
        else:
            rotation_days = None
        protection = self.text("keyProtectionMode", default="HSM")
        if protection not in ("HSM", "SOFTWARE"):
            raise self.fail("keyProtectionMode", f"must be HSM or SOFTWARE, got {protection!r}")
        return Settings(
            **common,
            region=region,
            home_region=home_region,
            tenancy_id=tenancy_id,
            compartment_id=compartment_id,
            public_api_endpoint=public_api,
            network=network,
            cpu_pool=self.pool("cpuPool", required=True),
            gpu_pool=self.pool("gpuPool", required=False),
            devops=self.devops(env),
            vault_type=vault_type,
            key_protection_mode=protection,
            key_rotation_days=rotation_days,
            oci_auth=self.oci.get("auth"),
            oci_profile=self.oci.get("configFileProfile"),
            **self.registry_credentials(server),
            kubeconfig=None,
            kube_context=None,
        )

    def ocid(self, name: str, kind: str) -> str:
        value = self.text(name, required=True)
        if not _OCID.match(value) or value.split(".")[1] != kind:
            raise self.fail(name, f"must be a {kind} OCID (ocid1.{kind}.oc1..xxxx), got {value!r}")
        return value

    def registry_credentials(self, server: ServerSettings) -> dict[str, Any]:
        # get_secret: reading a secret key with get() would make Pulumi warn about plain-text use.
        user, token = self.text("registryUser"), self.config.get_secret("registryAuthToken")
        if token is not None and user is None:
            raise self.fail("registryUser", "is required with registryAuthToken (e.g. <namespace>/<user name>)")
        if user is not None and token is None:
            raise self.fail(
                "registryAuthToken", "is required with registryUser (pulumi config set --secret registryAuthToken)"
            )
        # The stack's repositories are private: a pod on a fresh cluster pulls with the stack's pull secret.
        if user is None and server.image_pull_secret is None:
            raise self.fail(
                "registryUser",
                "is required (with registryAuthToken) so the pods can pull from the stack's private repository, "
                "unless server.imagePullSecret names a pull secret you create in the namespace",
            )
        return {"registry_user": user, "registry_auth_token": token}

    def devops(self, env: str) -> DevOpsSettings:
        section = "devops"
        raw = self.obj(section, ("branch", "buildOnPush", "approvals", "mirror", "condaPack")) or {}
        build_on_push = raw.get("buildOnPush", env == "dev")
        if not isinstance(build_on_push, bool):
            raise self.fail(f"{section}.buildOnPush", f"must be true or false, got {build_on_push!r}")
        # Production moves only by promotion, and a person approves every rollout.
        if env == "prod" and build_on_push:
            raise self.fail(f"{section}.buildOnPush", "must be false in prod: prod runs images promoted from qa")
        approvals = self.field_number(raw, section, "approvals", 1 if env == "prod" else 0)
        if env == "prod" and approvals < 1:
            raise self.fail(f"{section}.approvals", "must be at least 1 in prod: a person approves each rollout")
        mirror = None
        if "mirror" in raw:
            spec = raw["mirror"]
            if not isinstance(spec, dict) or set(spec) != {"url", "connectionType", "accessTokenSecretId"}:
                raise self.fail(f"{section}.mirror", "must have exactly url, connectionType and accessTokenSecretId")
            url = self.field_text(spec, f"{section}.mirror", "url")
            if not url.startswith("https://"):
                raise self.fail(f"{section}.mirror.url", f"must be an https URL, got {url!r}")
            if spec["connectionType"] not in MIRROR_CONNECTION_TYPES:
                raise self.fail(
                    f"{section}.mirror.connectionType", f"must be one of {', '.join(MIRROR_CONNECTION_TYPES)}"
                )
            secret_id = self.field_text(spec, f"{section}.mirror", "accessTokenSecretId")
            if not _OCID.match(secret_id) or secret_id.split(".")[1] != "vaultsecret":
                raise self.fail(f"{section}.mirror.accessTokenSecretId", f"must be a Vault secret OCID, got {secret_id!r}")
            mirror = MirrorArgs(url=url, connection_type=spec["connectionType"], access_token_secret_id=secret_id)
        return DevOpsSettings(
            branch=self.field_text(raw, section, "branch", "main", _BRANCH),
            build_on_push=build_on_push,
            conda_pack=self.field_text(raw, section, "condaPack", None, _CONDA_PACK) or "",
            approvals=approvals,
            mirror=mirror,
        )

    def kubeconfig(self) -> pulumi.Output[str]:
        # Always a secret: a kubeconfig holds cluster credentials even when set in plain text.
        kubeconfig = self.config.get_secret("kubeconfig")
        if kubeconfig is None:
            raise self.fail(
                "kubeconfig",
                "is required in hybrid mode: a path, or the file's contents set as a secret",
            )
        return kubeconfig

    def network(self, env: str, public_api: bool, compartment_id: str) -> NetworkSettings:
        section = "network"
        raw = self.obj(
            section,
            (
                "vcnCidr", "workerSubnetCidr", "endpointSubnetCidr", "loadBalancerSubnetCidr",
                "podsCidr", "servicesCidr", "apiAllowedCidrs", "clientCidrs", "publicLoadBalancer",
                "publicApiReason",
            ),
            required=True,
        )
        if "vcnCidr" not in raw:
            raise self.fail(f"{section}.vcnCidr", "is required: each stack gets its own block so regions can be peered")
        vcn = self.network_of(f"{section}.vcnCidr", raw["vcnCidr"])
        if not 16 <= vcn.prefixlen <= 22:
            raise self.fail(f"{section}.vcnCidr", f"must be a /16 to /22 block, got {vcn}")
        # Defaults carve the VCN: the first half for workers, then a /24 for load balancers and a /28
        # for the API endpoint, so a stack usually sets only vcnCidr.
        upper = list(vcn.subnets(prefixlen_diff=1))[1]
        defaults = {
            "workerSubnetCidr": list(vcn.subnets(prefixlen_diff=1))[0],
            "loadBalancerSubnetCidr": next(upper.subnets(new_prefix=max(24, upper.prefixlen))),
            "endpointSubnetCidr": list(upper.subnets(new_prefix=28))[-1],
            "podsCidr": ipaddress.IPv4Network("10.244.0.0/16"),
            "servicesCidr": ipaddress.IPv4Network("10.96.0.0/16"),
        }
        blocks = {
            name: self.network_of(f"{section}.{name}", raw[name]) if name in raw else default
            for name, default in defaults.items()
        }
        subnets = ("workerSubnetCidr", "endpointSubnetCidr", "loadBalancerSubnetCidr")
        for name in subnets:
            if not blocks[name].subnet_of(vcn):
                raise self.fail(f"{section}.{name}", f"{blocks[name]} must lie inside network.vcnCidr {vcn}")
        # Pod and service ranges are virtual (flannel overlay) and must not collide with the VCN or each other.
        ordered = [("vcnCidr", vcn)] + [(name, blocks[name]) for name in (*subnets, "podsCidr", "servicesCidr")]
        for i, (name, block) in enumerate(ordered):
            for other, other_block in ordered[:i]:
                if other == "vcnCidr" and name in subnets:
                    continue
                if block.overlaps(other_block):
                    raise self.fail(f"{section}.{name}", f"{block} overlaps network.{other} {other_block}")
        api_allowed = self.field_cidrs(raw, section, "apiAllowedCidrs", ())
        if public_api and not api_allowed:
            raise self.fail(f"{section}.apiAllowedCidrs", "must list the admin CIDRs when publicApiEndpoint is true")
        reason = self.field_text(raw, section, "publicApiReason")
        self.check_api_exposure(section, api_allowed, reason)
        clients = self.field_cidrs(raw, section, "clientCidrs", (vcn,))
        exposed = public_addresses(clients)
        if env == "prod" and exposed > PUBLIC_ADDRESS_LIMIT:
            raise self.fail(
                f"{section}.clientCidrs",
                f"opens prod's scoring endpoint to {exposed} public addresses, more than a /16 "
                f"({PUBLIC_ADDRESS_LIMIT}): list the clients' own ranges",
            )
        public_lb = raw.get("publicLoadBalancer", False)
        if not isinstance(public_lb, bool):
            raise self.fail(f"{section}.publicLoadBalancer", f"must be true or false, got {public_lb!r}")
        return NetworkSettings(
            compartment_id=compartment_id,
            vcn_cidr=str(vcn),
            worker_subnet_cidr=str(blocks["workerSubnetCidr"]),
            endpoint_subnet_cidr=str(blocks["endpointSubnetCidr"]),
            load_balancer_subnet_cidr=str(blocks["loadBalancerSubnetCidr"]),
            pods_cidr=str(blocks["podsCidr"]),
            services_cidr=str(blocks["servicesCidr"]),
            api_allowed_cidrs=tuple(map(str, api_allowed)),
            client_cidrs=tuple(map(str, clients)),
            public_api_endpoint=public_api,
            public_load_balancer=public_lb,
            public_api_reason=reason,
        )

    def check_api_exposure(
        self, section: str, api_allowed: tuple[ipaddress.IPv4Network, ...], reason: str | None
    ) -> None:
        """In every env the Kubernetes API admits only private ranges, unless the stack says why."""
        public = [block for block in api_allowed if public_addresses([block])]
        if public and reason is None:
            raise self.fail(
                f"{section}.apiAllowedCidrs",
                f"{public[0]} is not private address space (RFC 1918 or 100.64.0.0/10): the Kubernetes API "
                f"admits public ranges only when network.publicApiReason says why",
            )
        if reason is not None and not public:
            raise self.fail(f"{section}.publicApiReason", "justifies public apiAllowedCidrs, but they are all private")
        exposed = public_addresses(api_allowed)
        if exposed > PUBLIC_ADDRESS_LIMIT:
            raise self.fail(
                f"{section}.apiAllowedCidrs",
                f"opens the Kubernetes API to {exposed} public addresses, more than a /16 ({PUBLIC_ADDRESS_LIMIT}), "
                f"which no reason justifies",
            )

    def pool(self, section: str, required: bool) -> NodePoolArgs | None:
        raw = self.obj(section, ("shape", "ocpus", "memoryGbs", "minNodes", "maxNodes", "bootVolumeGbs"), required)
        if raw is None:
            return None
        shape = self.field_text(raw, section, "shape")
        if shape is None:
            raise self.fail(f"{section}.shape", "is required (e.g. VM.Standard.E5.Flex, or VM.GPU.A10.1 for GPUs)")
        flex = shape.endswith(".Flex")
        ocpus = self.field_number(raw, section, "ocpus", 2 if flex else None, float, minimum=1)
        memory = self.field_number(raw, section, "memoryGbs", 16 if flex else None, float, minimum=1)
        if not flex and (ocpus is not None or memory is not None):
            raise self.fail(f"{section}.ocpus", f"only applies to flexible shapes, not {shape}")
        min_nodes = self.field_number(raw, section, "minNodes", 1, minimum=0 if section == "gpuPool" else 1)
        max_nodes = self.field_number(raw, section, "maxNodes", max(min_nodes, 1), minimum=1)
        if max_nodes < min_nodes:
            raise self.fail(f"{section}.maxNodes", f"must be at least {section}.minNodes ({min_nodes})")
        return NodePoolArgs(
            shape=shape,
            ocpus=ocpus,
            memory_gbs=memory,
            min_nodes=min_nodes,
            max_nodes=max_nodes,
            boot_volume_gbs=self.field_number(raw, section, "bootVolumeGbs", 100, minimum=50),
        )

    def server(self, stack: str, env: str, hybrid: bool) -> ServerSettings:
        section = "server"
        raw = self.obj(
            section,
            (
                "namespace", "image", "imageDigest", "minReplicas", "maxReplicas", "inFlightTarget", "workers", "logLevel",
                "cpuRequest", "cpuLimit", "memoryRequest", "memoryLimit", "dataSizeLimit", "serviceType",
                "imagePullSecret", "config",
            ),
            retired={"imageTag": "images are deployed by digest, never by tag: set server.imageDigest (sha256:...)"},
        ) or {}
        image = self.field_text(raw, section, "image")
        if hybrid and image is None:
            raise self.fail(f"{section}.image", "is required in hybrid mode (the registry the cluster pulls from)")
        if image is not None and not _DIGEST.match(image.rpartition("@")[2]):
            raise self.fail(f"{section}.image", f"must name the image by digest (name@sha256:...), got {image!r}")
        image_digest = self.field_text(raw, section, "imageDigest", None, _DIGEST)
        if hybrid and image_digest is not None:
            raise self.fail(f"{section}.imageDigest", "applies to OCI mode; in hybrid mode server.image carries the digest")
        min_replicas = self.field_number(raw, section, "minReplicas", 2, minimum=1)
        max_replicas = self.field_number(raw, section, "maxReplicas", max(min_replicas, 4), minimum=1)
        if max_replicas < min_replicas:
            raise self.fail(f"{section}.maxReplicas", f"must be at least server.minReplicas ({min_replicas})")
        log_level = self.field_text(raw, section, "logLevel", "info")
        if log_level not in LOG_LEVELS:
            raise self.fail(f"{section}.logLevel", f"must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
        service_type = self.field_text(raw, section, "serviceType", "ClusterIP" if hybrid else "LoadBalancer")
        if service_type not in SERVICE_TYPES:
            raise self.fail(f"{section}.serviceType", f"must be one of {', '.join(SERVICE_TYPES)}")
        extra = raw.get("config", {})
        if not isinstance(extra, dict):
            raise self.fail(f"{section}.config", "must be a mapping of MIS_* variables to values")
        for name, value in extra.items():
            if not name.startswith("MIS_") or name in RESERVED_SERVER_VARIABLES or (
                    not hybrid and name in RESERVED_OCI_SERVER_VARIABLES):
                raise self.fail(f"{section}.config.{name}", "is not a settable MIS_* variable")
            if not isinstance(value, (str, int, float, bool)):
                raise self.fail(f"{section}.config.{name}", "must be a scalar value")
            # The image has no oracle-ads (the `demo` set): a server told to build the demo models stops at start.
            if name == "MIS_DEMO_MODELS" and str(value).strip().lower() != "false":
                raise self.fail(f"{section}.config.{name}", "can only be false: the server image cannot build demo models")
        return ServerSettings(
            namespace=self.field_text(raw, section, "namespace", "mis", _NAME),
            service_account="model-inference-server",
            env=env,
            instance=stack,
            image=image,
            image_digest=image_digest,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            in_flight_target=self.field_number(raw, section, "inFlightTarget", None, minimum=1),
            workers=self.field_number(raw, section, "workers", 2, minimum=1),
            log_level=log_level,
            cpu_request=self.field_text(raw, section, "cpuRequest", "500m", _QUANTITY),
            cpu_limit=self.field_text(raw, section, "cpuLimit", "2", _QUANTITY),
            memory_request=self.field_text(raw, section, "memoryRequest", "1Gi", _QUANTITY),
            memory_limit=self.field_text(raw, section, "memoryLimit", "4Gi", _QUANTITY),
            data_size_limit=self.field_text(raw, section, "dataSizeLimit", "10Gi", _QUANTITY),
            service_type=service_type,
            image_pull_secret=self.field_text(raw, section, "imagePullSecret", None, _NAME),
            config={name: str(v).lower() if isinstance(v, bool) else str(v) for name, v in extra.items()},
        )
