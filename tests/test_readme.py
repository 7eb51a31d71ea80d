"""Every shell example in README.md and infra/README.md runs as written against a live server.

The server is what `make run` starts (tests/processes.py GunicornProcess: no keys, the demo
catalog), on a free loopback port: each block's `127.0.0.1:8080` is rewritten to it, and `mis`
finds it through MIS_URL, the default it stands for. The blocks of a file run in order, in one
directory that looks like the repository (its top-level entries linked, `var` the server's data
directory), so a block may use what an earlier one made (a packaged model, an upload). Each runs
under `bash -e -o pipefail`, with `curl` failing on an HTTP error (--fail-with-body), so a 4xx
fails the example. `make` is checked, not run (`make -n`): `make run` is the server started here
and `make test` is this suite. A block whose first line is `# needs: ...` naming something this
machine has not got (OCI, the Pulumi CLI, Docker, a Kubernetes cluster) is not run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from .processes import REPO, GunicornProcess

BLOCK = re.compile(r"^```(?:bash|sh)\n(.*?)^```", re.S | re.M)
NEEDS = re.compile(r"# needs: (.+)")
EXTERNAL = ("OCI", "the Pulumi CLI", "Docker", "a Kubernetes cluster")
SHIMS = """curl() { command curl --fail-with-body "$@"; }
make() { command make --dry-run "$@" > /dev/null; }
"""


def blocks(document: str) -> list[tuple[int, str]]:
    """(line number, code) of every bash/sh block."""
    text = (REPO / document).read_text()
    return [(text.count("\n", 0, match.start()) + 1, match.group(1)) for match in BLOCK.finditer(text)]


def needs(code: str) -> list[str] | None:
    """What a marked block needs from outside this machine; None for a block that runs here."""
    first = code.splitlines()[0] if code.strip() else ""
    marker = NEEDS.fullmatch(first.strip())
    return None if marker is None else [thing for thing in EXTERNAL if thing in marker.group(1)]


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_catalog):
    data_dir = tmp_path_factory.mktemp("readme-server")
    shutil.copytree(demo_catalog, data_dir / "catalog")
    process = GunicornProcess(data_dir, data_dir / "server.log", MIS_WORKERS="2").start()
    yield process
    process.stop()


def workdir(base: Path, data_dir: Path) -> Path:
    """A directory that looks like the repository after `make run`, where examples may write."""
    base.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in (".git", ".venv", "var"):
            (base / entry.name).symlink_to(entry)
    (base / ".venv").symlink_to(Path(sys.prefix))  # the environment running the tests
    (base / "var").symlink_to(data_dir)
    return base


@pytest.mark.parametrize("document", ["README.md", "infra/README.md"])
def test_every_example_runs(document, server, tmp_path):
    found = blocks(document)
    assert found, f"{document} has no shell examples"
    cwd = workdir(tmp_path / "repo", server.data_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("MIS_KEY", "METRICS_KEY")}
    env["MIS_URL"] = server.url
    ran = 0
    for line, code in found:
        external = needs(code)
        if external is not None:
            assert external, f"{document}:{line}: `# needs:` names none of {EXTERNAL}"
            continue
        script = SHIMS + code.replace("127.0.0.1:8080", server.url.removeprefix("http://"))
        result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=cwd, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (f"{document}:{line} failed ({result.returncode}):\n{code}\n"
                                        f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-3000:]}")
        ran += 1
    assert ran
    if document == "README.md":  # the examples did reach the server: its uploads are there
        with urllib.request.urlopen(f"{server.url}/api/v1/listmodels/") as response:
            names = [(m["name"], m["version"]) for m in json.loads(response.read())["models"]]
        assert {("churn", "1"), ("churn", "2"), ("churn", "3"), ("iris-tree", "1")} <= set(names)

