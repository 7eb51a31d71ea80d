"""Render a stack without a cloud: its Kubernetes manifests as YAML, the release pipeline's inline
manifest, or the list of what it would create, from the Pulumi program itself under
`pulumi.runtime.set_mocks` (no Pulumi CLI, no credentials, no network).

    python -m infra.render dev-phoenix                  # the Kubernetes objects, for kubectl or review
    python -m infra.render dev-phoenix --show pipeline  # the deploy pipeline's manifest (image placeholder)
    python -m infra.render dev-phoenix --show resources # every resource the stack would create

Values only the cloud can assign (OCIDs, the tenancy's Object Storage namespace, load balancer
addresses) come out as placeholders; Secrets are listed, never printed. The tests run the program
through the same mocks.

Each run happens on a fresh thread, because the Pulumi runtime keeps its state (settings, config,
root stack) in context variables and a new thread starts with a clean context; each gets its own
event loop. The mocks record every resource's type token, name, inputs and provider, answer the
invokes the program makes with plausible camelCase data, and give each resource the outputs the
program reads (a Service's load balancer address, a vault's management endpoint...).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import runpy
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pulumi
import yaml
from pulumi.runtime import Mocks, set_all_config, set_mocks
from pulumi.runtime.settings import SETTINGS
from pulumi.runtime.stack import run_pulumi_func

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = ROOT / "infra"
ENVIRONMENTS = ROOT / "environments"
SECRET_SIG = "4dabf18193072939515e22adb298388d"  # how a secret value travels in resource inputs
REGION_KEYS = {"us-ashburn-1": "iad", "us-phoenix-1": "phx", "us-sanjose-1": "sjc", "eu-frankfurt-1": "fra"}


def stack_names() -> list[str]:
    return sorted(path.name[len("Pulumi."):-len(".yaml")] for path in ENVIRONMENTS.glob("Pulumi.*.yaml"))


def project() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "Pulumi.yaml").read_text())


def _config_value(value: Any) -> str:
    # What the Pulumi CLI hands a program: strings as-is, everything else JSON-encoded.
    return value if isinstance(value, str) else json.dumps(value)


def stack_config(stack: str) -> tuple[dict[str, str], list[str]]:
    """The configuration the CLI would pass for this stack (project defaults, then the stack file).

    `secure:` values cannot be decrypted without the stack's key, so they become placeholders
    and are marked secret, as the CLI marks them.
    """
    name = project()["name"]
    config: dict[str, str] = {}
    for key, spec in (project().get("config") or {}).items():
        full = key if ":" in key else f"{name}:{key}"
        if isinstance(spec, dict) and ("value" in spec or "default" in spec):
            config[full] = _config_value(spec.get("value", spec.get("default")))
    secrets: list[str] = []
    document = yaml.safe_load((ENVIRONMENTS / f"Pulumi.{stack}.yaml").read_text()) or {}
    for key, value in (document.get("config") or {}).items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            value = f"placeholder-for-{key}"
            secrets.append(key)
        config[key] = _config_value(value)
    return config, secrets



@dataclass
class Resource:
    type: str
    name: str
    inputs: dict[str, Any]
    provider: str  # provider reference "urn::id", or "" for a default provider / component
    id: str


@dataclass
class Run:
    resources: list[Resource] = field(default_factory=list)
    calls: list[tuple[str, dict, str]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)

    def of_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str) -> Resource:
        found = self.of_type(type_)
        assert len(found) == 1, f"expected one {type_}, found {[r.name for r in found]}"
        return found[0]

    def master_keys(self) -> tuple[Resource, Resource]:
        """The stack's master key and its boot volume key."""
        keys = self.of_type("oci:Kms/key:Key")
        (volume,) = [k for k in keys if k.name.endswith("-volume-key")]
        (stack_key,) = [k for k in keys if k is not volume]
        return stack_key, volume

    def provider(self, reference: str) -> Resource | None:
        provider_id = reference.rsplit("::", 1)[-1] if reference else None
        return next((r for r in self.resources if r.type.startswith("pulumi:providers:") and r.id == provider_id), None)


def unwrap(value: Any) -> Any:
    """Inputs with secret markers removed and integral floats (the wire has only doubles) as ints."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) and "value" in value:
            return unwrap(value["value"])
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def inputs(resource: Resource) -> dict[str, Any]:
    return unwrap(resource.inputs)


def random_password(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:48]


class RecordingMocks(Mocks):
    def __init__(self, run: Run):
        self.run = run

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        inputs = dict(args.inputs)
        resource_id = f"ocid1.mock.oc1..{args.name}"
        state = dict(inputs)
        if args.typ.startswith("pulumi:providers:"):
            resource_id = f"provider-{args.name}"
        elif args.typ == "random:index/randomPassword:RandomPassword":
            state["result"] = random_password(args.name)
        elif args.typ == "oci:Kms/vault:Vault":
            state["managementEndpoint"] = f"https://{args.name}-management.kms.example.oraclecloud.com"
        elif args.typ == "oci:Core/vcn:Vcn":
            state["defaultSecurityListId"] = f"ocid1.securitylist.oc1..{args.name}-default"
        elif args.typ == "oci:DevOps/repository:Repository":
            state["httpUrl"] = f"https://devops.scmservice.example.oci.oraclecloud.com/{args.name}.git"
        elif args.typ == "kubernetes:core/v1:Service" and inputs.get("spec", {}).get("type") == "LoadBalancer":
            state["status"] = {"loadBalancer": {"ingress": [{"ip": "10.0.128.10"}]}}
        self.run.resources.append(Resource(args.typ, args.name, inputs, args.provider or "", resource_id))
        return resource_id, state

    def call(self, args: pulumi.runtime.MockCallArgs):
        self.run.calls.append((args.token, dict(args.args), args.provider or ""))
        provider = self.run.provider(args.provider)
        region = (provider.inputs.get("region") if provider else None) or "us-ashburn-1"
        key = REGION_KEYS.get(region, "xyz")
        if args.token == "oci:Core/getServices:getServices":
            return {"services": [{
                "id": f"ocid1.service.oc1.{key}..all", "name": f"All {key.upper()} Services In Oracle Services Network",
                "cidrBlock": f"all-{key}-services-in-oracle-services-network", "description": "all services",
            }]}
        if args.token == "oci:Identity/getAvailabilityDomains:getAvailabilityDomains":
            return {"availabilityDomains": [
                {"id": f"ocid1.availabilitydomain.oc1..{n}", "name": f"Uocm:{key.upper()}-AD-{n}",
                 "compartmentId": args.args["compartmentId"]} for n in (1, 2, 3)
            ]}
        if args.token == "oci:ContainerEngine/getNodePoolOption:getNodePoolOption":
            return node_pool_options(args.args["nodePoolK8sVersion"].lstrip("v"))
        if args.token == "oci:ObjectStorage/getNamespace:getNamespace":
            return {"namespace": "exampletenancyns", "id": "exampletenancyns"}
        if args.token == "oci:ContainerEngine/getClusterKubeConfig:getClusterKubeConfig":
            return {"content": f"apiVersion: v1\nkind: Config\n# cluster {args.args['clusterId']}\n",
                    "clusterId": args.args["clusterId"], "id": "kubeconfig"}
        if args.token == "oci:Secrets/getSecretbundle:getSecretbundle":
            secret = next(r for r in self.run.resources if r.id == args.args["secretId"])
            content = unwrap(secret.inputs["secretContent"])["content"]
            return {"secretId": secret.id, "id": secret.id,
                    "secretBundleContents": [{"contentType": "BASE64", "content": content}]}
        raise AssertionError(f"the program made an invoke the mocks do not know: {args.token}")


def node_pool_options(version: str) -> dict[str, Any]:
    """Like OKE's answer: several dates, GPU and aarch64 variants, and another version's images."""
    names = [
        f"Oracle-Linux-8.10-2024.10.31-0-OKE-{version}-751",
        f"Oracle-Linux-8.10-2025.01.31-0-OKE-{version}-760",
        f"Oracle-Linux-8.10-Gen2-GPU-2025.01.31-0-OKE-{version}-760",
        f"Oracle-Linux-8.10-aarch64-2025.01.31-0-OKE-{version}-760",
        "Oracle-Linux-8.10-2025.02.28-0-OKE-1.30.1-770",
        "Oracle-Linux-8.10-2025.02.28-0",
    ]
    return {
        "id": "all", "kubernetesVersions": [f"v{version}"], "shapes": ["VM.Standard.E5.Flex", "VM.GPU.A10.1"],
        "sources": [{"sourceType": "IMAGE", "sourceName": n, "imageId": f"ocid1.image.oc1..{n}"} for n in names],
    }


def in_fresh_runtime(stack: str, config: dict[str, str], secret_keys: list[str], body: Callable[[Run], Any]):
    """Run body(run) with mocks installed, on a new thread and event loop; return (run, result)."""
    outcome: dict[str, Any] = {}

    def target():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        run = Run()
        try:
            set_mocks(RecordingMocks(run), project=project()["name"], stack=stack, preview=False)
            set_all_config(config, secret_keys)
            outcome["result"] = loop.run_until_complete(body(run, loop))
            outcome["run"] = run
        except BaseException as error:  # noqa: BLE001 - handed to the calling thread
            outcome["error"] = error
        finally:
            # Pulumi keeps pending Outputs in one set for the whole process: this loop's can never finish
            # once it closes (a settings error stops a run half-way), and the next run would wait on them.
            with SETTINGS.lock:
                SETTINGS.outputs.difference_update([task for task in SETTINGS.outputs if task.get_loop() is loop])
            loop.close()

    thread = threading.Thread(target=target, name=f"pulumi-{stack}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["run"], outcome["result"]


def run_program(stack: str, config: dict[str, str] | None = None, secret_keys: list[str] | None = None) -> Run:
    """Run infra/ for a stack (its stack file, unless config is given) and collect its exports."""
    if config is None:
        config, secret_keys = stack_config(stack)

    async def body(run: Run, loop):
        await run_pulumi_func(lambda: runpy.run_path(str(PROGRAM), run_name="__main__"))
        for name, value in pulumi.runtime.get_root_resource().outputs.items():
            output = pulumi.Output.from_input(value)
            run.outputs[name] = await output.future()
            if await output.is_secret():
                run.secret_outputs.add(name)

    run, _ = in_fresh_runtime(stack, config, secret_keys or [], body)
    return run


MANIFEST_ARTIFACT = "oci:DevOps/deployArtifact:DeployArtifact"
PLACEHOLDER_NOTE = "# Rendered offline: OCIDs, the Object Storage namespace and addresses are placeholders."


def kubernetes_objects(run: Run) -> list[dict[str, Any]]:
    """The Kubernetes objects Pulumi would apply, in order, Secrets left out (their values are secret)."""
    objects = [inputs(r) for r in run.resources
               if r.type.startswith("kubernetes:") and r.type != "kubernetes:core/v1:Secret"]
    # The mocks hand inputs back in any order; a reader expects apiVersion, kind and metadata first.
    head = ("apiVersion", "kind", "metadata")
    return [{**{key: o[key] for key in head if key in o}, **{k: v for k, v in o.items() if k not in head}}
            for o in objects]


def pipeline_manifest(run: Run) -> str:
    """The deploy pipeline's inline manifest, as the OKE stage receives it before substitution."""
    (artifact,) = [r for r in run.resources if r.type == MANIFEST_ARTIFACT
                   and inputs(r)["deployArtifactType"] == "KUBERNETES_MANIFEST"]
    return inputs(artifact)["deployArtifactSource"]["base64encodedContent"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.render", description=__doc__.split("\n\n")[0])
    parser.add_argument("stack", help=f"a stack file's name in {ENVIRONMENTS.name}/ (e.g. dev-phoenix)")
    parser.add_argument("--show", choices=("manifests", "pipeline", "resources"), default="manifests")
    options = parser.parse_args(argv)
    if options.stack not in stack_names():
        parser.error(f"no stack {options.stack!r}: the stacks are {', '.join(stack_names())}")
    try:
        run = run_program(options.stack)
    except Exception as error:  # a settings error: one line naming the key, as `pulumi preview` shows it
        print(f"{options.stack}: {error}", file=sys.stderr)
        return 1
    if options.show == "manifests":
        secrets = [inputs(r)["metadata"]["name"] for r in run.resources if r.type == "kubernetes:core/v1:Secret"]
        print(PLACEHOLDER_NOTE)
        print(f"# Secrets Pulumi creates alongside (values from the Vault or the stack): {', '.join(secrets)}")
        print(yaml.safe_dump_all(kubernetes_objects(run), sort_keys=False), end="")
    elif options.show == "pipeline":
        if not run.of_type(MANIFEST_ARTIFACT):
            print(f"{options.stack}: a hybrid stack has no DevOps pipelines", file=sys.stderr)
            return 1
        print(pipeline_manifest(run), end="")
    else:
        for resource in run.resources:
            if not resource.type.startswith("pulumi:providers:"):
                print(f"{resource.type}\t{resource.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
