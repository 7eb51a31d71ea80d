"""The image's environment made from a Conda pack (pipelines/make_env.sh, the Containerfile's
dependency step), offline: unpacked, relocated by its own conda-unpack, the server's libraries
added beside the pack's, and the server run in it.

No conda channel is reachable here, so the test builds the closest honest equivalent of a
conda-pack tarball itself: a relocatable Python environment (`venv --copies`, so bin/python is a
real interpreter binary; its standard library is the host's, where a real pack carries its own)
holding numpy, pandas and scikit-learn as installed files, and a bin/conda-unpack that rewrites
the prefix it was built at, as conda-pack's does. No XGBoost or LightGBM: a pack lacking a library
is what the server must name.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import requests
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.processes import GunicornProcess

ROOT = Path(__file__).resolve().parents[2]
PACK_LIBRARIES = ("numpy", "pandas", "scikit-learn", "cloudpickle")  # ADS's score.py loads with cloudpickle
CONDA_UNPACK = '''#!/usr/bin/env python
"""Rewrite the prefix this environment was built at to where it is now."""
import pathlib

OLD = {old!r}
here = pathlib.Path(__file__).resolve().parent.parent
for path in [*here.glob("bin/*"), here / "pyvenv.cfg"]:
    if path.is_file() and not path.is_symlink():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        if OLD in text:
            path.write_text(text.replace(OLD, str(here)))
'''


def with_dependencies(names) -> set[str]:
    """The distributions `names` need to run, as installed here (optional extras left out)."""
    found, todo = set(), list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        found.add(name)
        for line in importlib.metadata.distribution(name).requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("pack-build") / "testpack_p311"
    subprocess.run([sys._base_executable, "-m", "venv", "--copies", str(build)], check=True, timeout=300)
    site = next(build.glob("lib/python3.*/site-packages"))
    for name in with_dependencies(PACK_LIBRARIES):
        distribution = importlib.metadata.distribution(name)
        for file in distribution.files or []:
            source = Path(distribution.locate_file(file))
            if file.parts[0] == ".." or not source.is_file():  # console scripts outside site-packages
                continue
            (site / file).parent.mkdir(parents=True, exist_ok=True)
            os.link(source, site / file) if source.stat().st_dev == site.stat().st_dev else shutil.copy2(source, site / file)
    unpack = build / "bin" / "conda-unpack"
    unpack.write_text(CONDA_UNPACK.format(old=str(build)))
    unpack.chmod(0o755)
    tarball = build.parent / "testpack_p311.tar"
    with tarfile.open(tarball, "w") as archive:
        archive.add(build, arcname=".")
    shutil.rmtree(build)  # the pack must work from where it is unpacked, not from here
    return tarball


def installed(python: Path) -> dict[str, str]:
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            check=True, timeout=120).stdout.split()
    return {line.split("==")[0].lower().replace("_", "-"): line.split("==")[1] for line in listed}


def test_the_server_runs_in_a_conda_pack_keeping_the_packs_libraries(pack, tmp_path, demo_catalog):
    target = tmp_path / "opt" / "mis"
    subprocess.run(["bash", "pipelines/make_env.sh", str(target), "xgboost-cpu", str(pack)], cwd=ROOT, check=True,
                   timeout=600)
    python = target / "bin" / "python"
    versions = installed(python)
    for name in ("numpy", "pandas", "scikit-learn"):  # the pack's, untouched
        assert versions[name] == importlib.metadata.version(name)
    assert {"falcon", "gunicorn", "oci", "prometheus-client"} <= set(versions)  # the server's, added
    assert "xgboost" not in versions and "xgboost-cpu" not in versions and "lightgbm" not in versions
    assert str(target) in (target / "bin" / "pip").read_text().splitlines()[0]  # relocated by conda-unpack

    shutil.copytree(demo_catalog, tmp_path / "data" / "catalog")
    server = GunicornProcess(tmp_path / "data", tmp_path / "gunicorn.log", python=str(python), MIS_WORKERS="1",
                             MIS_CONDA_SLUG="testpack_p311", MIS_DEMO_MODELS="false",
                             MIS_PRELOAD="demo-sklearn-iris").start()
    try:
        runtime = requests.get(f"{server.url}/api/v1/serverinfo", timeout=30).json()["runtime"]
        assert runtime["prefix"] == str(target) and runtime["slug"] == "testpack_p311"
        assert runtime["libraries"]["sklearn"] == importlib.metadata.version("scikit-learn")
        assert runtime["libraries"]["xgboost"] is None
        scored = requests.post(f"{server.url}/api/v1/score", params={"model_id": "demo-sklearn-iris"},
                               json=[[5.1, 3.5, 1.4, 0.2]], timeout=30)
        assert scored.json()["prediction"] == [0]
        # A model the pack has no library for is refused naming it.
        refused = requests.post(f"{server.url}/api/v1/loadmodel/demo-xgboost-breast-cancer", timeout=60)
        assert refused.status_code == 422 and refused.json()["code"] == "missing_library"
        assert refused.json()["library"] == "xgboost"
    finally:
        server.stop()


FAKE_OCI = """#!/usr/bin/env bash
# Stands in for the OCI CLI: records its arguments, writes the object where --file says.
printf '%s\\n' "$@" > "$RECORD"
while [ $# -gt 0 ]; do [ "$1" = --file ] && echo pack > "$2"; shift; done
"""


@pytest.mark.parametrize("uri, expected", [
    ("oci://conda-packs@tenancyns/conda_environments/cpu/General ML for CPUs/1.0/generalml_p311_cpu_x86_64_v1",
     ["os", "object", "get", "--namespace", "tenancyns", "--bucket-name", "conda-packs", "--name",
      "conda_environments/cpu/General ML for CPUs/1.0/generalml_p311_cpu_x86_64_v1",
      "--file", "pipelines/packs/generalml_p311_cpu_x86_64_v1.tar.gz"]),
    ("", None),
    ("s3://bucket/pack", 2),
    ("oci://bucket/no-namespace", 2),
    ("oci://b@ns/path/not a slug!", 2),
])
def test_the_build_fetches_the_pack_data_science_published(tmp_path, uri, expected):
    work = tmp_path / "checkout"
    shutil.copytree(ROOT / "pipelines", work / "pipelines", ignore=shutil.ignore_patterns("*.tar*"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "oci").write_text(FAKE_OCI)
    (tmp_path / "bin" / "oci").chmod(0o755)
    record = tmp_path / "oci-arguments"
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "RECORD": str(record)}
    done = subprocess.run(["bash", "pipelines/fetch_conda_pack.sh", uri], cwd=work, env=env, capture_output=True,
                          text=True, timeout=60)
    if expected == 2:
        assert done.returncode == 2 and ("oci://BUCKET@NAMESPACE/PATH" in done.stderr or "slug" in done.stderr)
        assert not record.exists()
    elif expected is None:
        assert done.returncode == 0 and not record.exists()
    else:
        assert done.returncode == 0, done.stderr
        assert record.read_text().splitlines() == expected
        assert (work / expected[-1]).read_text() == "pack\n"
