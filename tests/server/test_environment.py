"""Artifacts against the server's environment: oracle-ads-built demo artifacts with their
runtime.yaml, taxonomy or model file changed as another environment would have made them, under
each MIS_ENV_COMPAT policy."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import zipfile
from pathlib import Path

import pytest
import sklearn
import yaml

from .protocols.test_v1 import assert_error, upload
from .zips import score_artifact

IRIS = "demo-sklearn-iris"
ADS_SLUG = "generalml_p311_cpu_x86_64_v1"  # what ADS wrote into the demo artifacts' runtime.yaml
THIS_PYTHON = ".".join(platform.python_version_tuple()[:2])


def rewrite_artifact(source: Path, target: Path, runtime=None, members: dict[str, bytes] | None = None) -> Path:
    """A copy of an ADS artifact zip with runtime.yaml's conda section changed (`runtime`: keys of
    INFERENCE_CONDA_ENV, None values removed) and members replaced, their sizes and digests in
    ADS's manifest with them (its score.py checks them before loading)."""
    members = members or {}
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = old.read(item)
            if item.filename == "model_artifact_manifest.json":
                manifest = json.loads(data)
                for name, content in members.items():
                    manifest["files"][name] = {"sha256": hashlib.sha256(content).hexdigest(), "size": len(content)}
                data = json.dumps(manifest).encode()
            if item.filename == "runtime.yaml" and runtime is not None:
                document = yaml.safe_load(data)
                conda = document["MODEL_DEPLOYMENT"]["INFERENCE_CONDA_ENV"]
                for key, value in runtime.items():
                    conda.pop(key) if value is None else conda.__setitem__(key, value)
                data = yaml.safe_dump(document).encode()
            new.writestr(item, members.get(item.filename, data))
    return target


def set_catalog_entry(data_dir: Path, model_id: str, runtime=None, members=None, taxonomy=None) -> None:
    """Make the local catalog's copy of a demo model look as another environment made it."""
    entry = data_dir / "catalog" / model_id
    artifact = entry / "artifact.zip"
    rewrite_artifact(artifact, entry / "new.zip", runtime, members).replace(artifact)
    if taxonomy:
        metadata = json.loads((entry / "metadata.json").read_text())
        metadata["taxonomy_metadata"] = [t for t in metadata["taxonomy_metadata"] if t["key"] not in taxonomy]
        metadata["taxonomy_metadata"] += [{"key": k, "value": v} for k, v in taxonomy.items()]
        (entry / "metadata.json").write_text(json.dumps(metadata))


def load(client, model_id=IRIS):
    return client.simulate_post(f"/api/v1/loadmodel/{model_id}")


def test_serverinfo_names_the_environment_and_its_library_versions(make_client):
    runtime = make_client(MIS_CONDA_SLUG="mlcpuv1_p311", MIS_ENV_COMPAT="strict").simulate_get("/api/v1/serverinfo").json["runtime"]
    assert runtime["slug"] == "mlcpuv1_p311" and runtime["env_compat"] == "strict"
    assert runtime["python"] == platform.python_version()
    assert runtime["libraries"]["sklearn"] == sklearn.__version__ and set(runtime["libraries"]) >= {"xgboost", "lightgbm"}
    assert runtime["prefix"] == sys.prefix  # authentication off: the caller is trusted as an admin


def test_strict_refuses_another_conda_environment_naming_both_sides(make_client, data_dir):
    client = make_client(MIS_CONDA_SLUG="pytorch21_p311_gpu_x86_64_v1", MIS_ENV_COMPAT="strict")
    body = assert_error(load(client), 409, "env_incompatible")
    assert ADS_SLUG in body["error"] and "pytorch21_p311_gpu_x86_64_v1" in body["error"]
    assert body["server"]["slug"] == "pytorch21_p311_gpu_x86_64_v1"
    assert client.simulate_get(f"/api/v1/getmodelinfo/{IRIS}").json["loaded"] is False


def test_slugs_compare_without_case_and_an_unknown_server_slug_is_not_compared(make_client):
    assert load(make_client(MIS_CONDA_SLUG=ADS_SLUG.upper(), MIS_ENV_COMPAT="strict")).status_code == 200


def test_warn_loads_and_reports_the_mismatch_everywhere(make_client):
    client = make_client(MIS_CONDA_SLUG="other_p311", MIS_ENV_COMPAT="warn")
    assert load(client).json["status"] == "loaded"
    [mismatch] = client.simulate_get(f"/api/v1/getmodelinfo/{IRIS}").json["env_mismatches"]
    assert ADS_SLUG in mismatch and "other_p311" in mismatch
    [model] = client.simulate_get("/api/v1/serverinfo").json["models"]
    assert model["env_mismatches"] == [mismatch]
    assert f'mis_model_env_mismatches_total{{model="{IRIS}"}}' in client.simulate_get("/metrics").text
    assert client.simulate_post("/api/v1/score", params={"model_id": IRIS}, json=[[5.1, 3.5, 1.4, 0.2]]).status_code == 200


def test_off_does_not_look(make_client):
    client = make_client(MIS_CONDA_SLUG="other_p311", MIS_ENV_COMPAT="off")
    assert load(client).status_code == 200
    assert client.simulate_get(f"/api/v1/getmodelinfo/{IRIS}").json["env_mismatches"] == []


def test_a_missing_slug_is_a_mismatch_only_under_strict(make_client, data_dir):
    set_catalog_entry(data_dir, IRIS, runtime={"INFERENCE_ENV_SLUG": None})
    assert load(make_client(MIS_CONDA_SLUG=ADS_SLUG, MIS_ENV_COMPAT="warn")).json["status"] == "loaded"
    body = assert_error(load(make_client(MIS_CONDA_SLUG=ADS_SLUG, MIS_ENV_COMPAT="strict")), 409, "env_incompatible")
    assert "names no INFERENCE_ENV_SLUG" in body["error"]


def test_another_python_minor_version_is_a_mismatch(make_client, data_dir):
    other = "3.8" if THIS_PYTHON != "3.8" else "3.12"
    set_catalog_entry(data_dir, IRIS, runtime={"INFERENCE_PYTHON_VERSION": other})
    assert f"made for Python {other}" in assert_error(load(make_client(MIS_ENV_COMPAT="strict")), 409, "env_incompatible")["error"]


@pytest.mark.parametrize("saved_with, strict_status", [("0.23.2", 409), ("1.0.2", 200)])
def test_a_model_saved_with_another_framework_version(make_client, data_dir, saved_with, strict_status):
    """Taxonomy metadata says which scikit-learn saved the model: another major version is refused
    under strict; another minor version only reported."""
    set_catalog_entry(data_dir, IRIS, taxonomy={"Framework": "scikit-learn", "FrameworkVersion": saved_with})
    result = load(make_client(MIS_ENV_COMPAT="strict"))
    assert result.status_code == strict_status
    client = make_client(MIS_ENV_COMPAT="warn")
    load(client)
    [mismatch] = client.simulate_get(f"/api/v1/getmodelinfo/{IRIS}").json["env_mismatches"]
    assert f"saved with scikit-learn {saved_with}; this server has {sklearn.__version__}" in mismatch


def test_a_pickle_from_an_older_library_layout_names_the_module(make_client, data_dir):
    # What joblib wrote for a model fitted under scikit-learn 0.21, whose SVC lived in sklearn.svm.classes.
    old_pickle = b"csklearn.svm.classes\nSVC\n)\x81."
    set_catalog_entry(data_dir, IRIS, members={"model.joblib": old_pickle})
    body = assert_error(load(make_client()), 422, "missing_library")
    assert body["library"] == "sklearn.svm.classes"
    assert f"sklearn {sklearn.__version__}" in body["error"] and "saved with another version of sklearn" in body["error"]
    assert "Traceback" not in body["error"]


def test_an_artifact_importing_a_library_the_server_lacks_is_refused_naming_it(make_client, tmp_path):
    client = make_client()
    archive = score_artifact(tmp_path / "catboost.zip", """
        import catboost

        def load_model():
            return catboost.CatBoostClassifier()

        def predict(data, model=None):
            return model.predict(data)
        """)
    body = assert_error(upload(client, archive, model_name="boosted"), 422, "missing_library")
    assert body["library"] == "catboost" and "needs the Python library 'catboost'" in body["error"]
    assert client.simulate_get("/api/v1/listmodels").json["count"] == 3  # the demo models only: nothing kept


def test_an_upload_for_another_environment_is_refused_under_strict_and_nothing_is_kept(make_client, demo_catalog, tmp_path):
    client = make_client(MIS_CONDA_SLUG="other_p311", MIS_ENV_COMPAT="strict")
    archive = rewrite_artifact(demo_catalog / IRIS / "artifact.zip", tmp_path / "iris.zip")
    assert_error(upload(client, archive, model_name="iris"), 409, "env_incompatible")
    assert client.simulate_get("/api/v1/listmodels").json["count"] == 3


@pytest.mark.parametrize("runtime_yaml, strict_status", [
    (b"MODEL_DEPLOYMENT:\n", 409),  # no conda section at all: no slug, a mismatch only under strict
    (b"- a list, not a mapping\n", 409),
    (b"MODEL_DEPLOYMENT: [1, 2]\n", 409),
    (b"MODEL_DEPLOYMENT:\n  INFERENCE_CONDA_ENV:\n    INFERENCE_ENV_SLUG: %s\n    INFERENCE_PYTHON_VERSION: %s\n"
     % (ADS_SLUG.encode(), THIS_PYTHON.encode()), 200),  # unquoted 3.10 or 3.11 is a version, not a float
])
def test_odd_runtime_yaml_is_read_as_saying_less_never_failing_the_load(make_client, data_dir, runtime_yaml,
                                                                      strict_status):
    set_catalog_entry(data_dir, IRIS, members={"runtime.yaml": runtime_yaml})
    assert load(make_client(MIS_CONDA_SLUG=ADS_SLUG, MIS_ENV_COMPAT="strict")).status_code == strict_status
    assert load(make_client(MIS_CONDA_SLUG=ADS_SLUG, MIS_ENV_COMPAT="warn")).status_code == 200
