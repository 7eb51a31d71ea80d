"""pipelines/build_spec.yaml: the OCI DevOps build spec format, every command it runs present in the
repository, and its exported names and output artifacts the ones the DevOps component wires."""

from __future__ import annotations

import re

import yaml

from infra import devops
from tests.pipelines.image import ROOT

SPEC_PATH = ROOT / devops.BUILD_SPEC
SCRIPT_PATHS = re.compile(r"\b(?:pipelines|server|infra|tests)/[\w./-]*[\w]")


def spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


def commands() -> list[str]:
    found = []
    for step in spec()["steps"]:
        found.append(step["command"])
        found += [handler["command"] for handler in step.get("onFailure", [])]
    return found


def test_is_an_oci_devops_build_spec():
    document = spec()
    assert document["version"] == 0.1 and document["component"] == "build"
    assert set(document) <= {"version", "component", "timeoutInSeconds", "shell", "env", "inputArtifacts", "steps",
                             "outputArtifacts", "runAs"}
    assert 0 < document["timeoutInSeconds"] <= devops.BUILD_TIMEOUT_S
    for step in document["steps"]:
        assert step["type"] == "Command" and step["name"] and step["command"].strip()
        assert 0 < step["timeoutInSeconds"] <= document["timeoutInSeconds"]


def test_exports_what_deliver_and_deploy_use():
    exported = spec()["env"]["exportedVariables"]
    assert exported == [devops.IMAGE_TAG, devops.IMAGE_DIGEST]
    assert not any(name.lower().startswith("oci") for name in exported), "OCI reserves names starting with oci"
    # Each exported variable is set by a step of its own (exported once set, for the next stages).
    script = "\n".join(commands())
    for name in exported:
        assert re.search(rf"^\s*export {name}=", script, re.M), f"no step sets {name}"


def test_output_artifacts_are_the_delivered_images():
    outputs = spec()["outputArtifacts"]
    assert {o["name"] for o in outputs} == set(devops.OUTPUT_ARTIFACTS.values())
    for output in outputs:
        assert output["type"] == "DOCKER_IMAGE"
        assert output["location"].endswith(f":${{{devops.IMAGE_TAG}}}")
    # The images build_images.sh tags are the ones listed.
    built = (ROOT / "pipelines" / "build_images.sh").read_text()
    for output in outputs:
        assert f'name="{output["location"].split(":")[0]}"' in built


def test_every_command_it_runs_is_in_the_repository():
    scripts = []
    for command in commands():
        for target in re.findall(r"\bmake\s+([\w-]+)", command):
            assert re.search(rf"^{target}:", (ROOT / "Makefile").read_text(), re.M), f"no make target {target}"
        for path in re.findall(r"\bbash\s+([\w./-]+)", command):
            assert (ROOT / path).is_file(), f"{path} is not in the repository"
            scripts.append(ROOT / path)
        for path in SCRIPT_PATHS.findall(command):
            assert (ROOT / path).exists(), f"{path} is not in the repository"
    assert scripts, "the build spec runs the repository's scripts"
    for script in scripts:
        for path in SCRIPT_PATHS.findall(script.read_text()):
            assert (ROOT / path).exists(), f"{script.name} uses {path}, which is not in the repository"


def test_uses_only_variables_someone_defines():
    document = spec()
    known = set(document["env"]["variables"]) | set(document["env"]["exportedVariables"])
    known |= {*devops.REPOSITORY_PARAMETERS.values(), devops.CONDA_PACK_PARAMETER}  # build pipeline parameters
    script = "\n".join(commands())
    used = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", script))
    unknown = {name for name in used - known if not name.startswith("OCI_")}
    assert not unknown, f"the build spec uses variables nothing defines: {sorted(unknown)}"
    assert {"OCI_PRIMARY_SOURCE_DIR", "OCI_BUILD_RUN_ID", "OCI_TRIGGER_COMMIT_HASH"} <= used
