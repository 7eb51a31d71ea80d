"""The demo catalog: real OCI Data Science (oracle-ads) artifacts built offline."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

pytest.importorskip("ads", reason="oracle-ads (the `demo` extra) builds the demo artifacts")

from server import demo as demo_mod  # noqa: E402
from server.artifact import DEFAULT_INFERENCE_CONDA_ENV  # noqa: E402
from server.demo import DEMO_MODELS, ensure_demo_catalog  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
ENV = "qa"  # not the default, so the test proves the value is passed through
MODEL_FILES = {"scikit-learn": "model.joblib", "xgboost": "model.json", "lightgbm": "model.joblib"}
METADATA_KEYS = {
    "id", "name", "version", "framework", "lifecycle_state", "compartment_id", "project_id",
    "time_created", "description", "taxonomy_metadata", "custom_metadata", "input_schema",
    "output_schema", "artifact",
}
DEMOS = {d.id: d for d in DEMO_MODELS}


class _NetworkAttempt(AssertionError):
    pass


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Build the demo catalog once, with the network blocked and HOME pointed at an empty dir."""
    catalog = tmp_path_factory.mktemp("catalog")
    home = tmp_path_factory.mktemp("home")
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise _NetworkAttempt(f"network access during the demo build: {args!r}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        mp.setattr(socket, "getaddrinfo", refuse)
        mp.setattr(socket, "create_connection", refuse)
        mp.setenv("HOME", str(home))
        ids = ensure_demo_catalog(catalog, env=ENV)
    return {"catalog": catalog, "ids": ids, "home": home, "attempts": attempts}


@pytest.fixture(scope="module")
def trained():
    """The same demo models trained in-process: {id: (estimator, X, y)}."""
    return {d.id: d.train() for d in DEMO_MODELS}


def _read_metadata(catalog: pathlib.Path, model_id: str) -> dict:
    return json.loads((catalog / model_id / "metadata.json").read_text(encoding="utf-8"))


def _snapshot(root: pathlib.Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def _sample_rows(X: np.ndarray) -> np.ndarray:
    """The first rows plus a spread over the dataset, so several classes appear."""
    return np.concatenate([X[:5], X[5::25]])


# ------------------------------------------------------------------------------------ catalog


def test_returns_the_three_demo_ids_offline(built):
    assert built["ids"] == [d.id for d in DEMO_MODELS]
    assert len(set(built["ids"])) == 3
    assert {d.framework for d in DEMO_MODELS} == {"scikit-learn", "xgboost", "lightgbm"}
    assert built["attempts"] == []
    assert list(built["home"].iterdir()) == []  # nothing written under ~ (no ~/.oci etc.)
    entries = sorted(p.name for p in built["catalog"].iterdir() if not p.name.startswith("."))
    assert entries == sorted(built["ids"])
    leftovers = [p.name for p in built["catalog"].iterdir() if p.name.startswith(".") and p.is_dir()]
    assert leftovers == []


@pytest.mark.parametrize("model_id", list(DEMOS))
def test_metadata_json_follows_the_local_catalog_format(built, model_id):
    demo = DEMOS[model_id]
    meta = _read_metadata(built["catalog"], model_id)
    json.dumps(meta, allow_nan=False)  # strict JSON
    assert set(meta) == METADATA_KEYS
    assert meta["id"] == model_id
    assert isinstance(meta["name"], str) and meta["name"]
    assert isinstance(meta["description"], str) and meta["description"]
    assert meta["version"] == "1"
    assert meta["framework"] == demo.framework
    assert meta["lifecycle_state"] == "ACTIVE"
    assert meta["compartment_id"] == "local"
    assert meta["project_id"] == "local"
    assert meta["artifact"] == "artifact.zip"
    created = datetime.datetime.fromisoformat(meta["time_created"])
    assert created.utcoffset() == datetime.timedelta(0)

    for item in meta["taxonomy_metadata"]:
        assert set(item) == {"key", "value"}
    taxonomy = {item["key"]: item["value"] for item in meta["taxonomy_metadata"]}
    assert taxonomy["Framework"] == demo.framework
    framework_module = {"scikit-learn": "sklearn", "xgboost": "xgboost", "lightgbm": "lightgbm"}
    assert taxonomy["FrameworkVersion"] == __import__(framework_module[demo.framework]).__version__
    assert taxonomy["UseCaseType"] == demo.use_case_type
    assert isinstance(taxonomy["Algorithm"], str) and taxonomy["Algorithm"]
    assert "Hyperparameters" in taxonomy

    for item in meta["custom_metadata"]:
        assert set(item) == {"key", "value", "category"}
    custom = {item["key"]: item for item in meta["custom_metadata"]}
    assert custom["env"] == {"key": "env", "value": ENV, "category": "Other"}
    assert custom["dataset"] == {
        "key": "dataset", "value": demo.dataset, "category": "Training and Validation Datasets",
    }

    names = [column["name"] for column in meta["input_schema"]["schema"]]
    assert names == demo.feature_names()
    assert len(meta["output_schema"]["schema"]) == 1


@pytest.mark.parametrize("model_id", list(DEMOS))
def test_artifact_zip_is_an_ads_artifact(built, model_id):
    import yaml

    demo = DEMOS[model_id]
    with zipfile.ZipFile(built["catalog"] / model_id / "artifact.zip") as zf:
        names = set(zf.namelist())
        assert all("/" not in name for name in names), names  # top-level, no leading folder
        assert {"score.py", "runtime.yaml", MODEL_FILES[demo.framework]} <= names
        assert {"input_schema.json", "output_schema.json", "model_artifact_manifest.json"} <= names
        score = zf.read("score.py").decode()
        runtime = yaml.safe_load(zf.read("runtime.yaml"))
        manifest = json.loads(zf.read("model_artifact_manifest.json"))
    assert "def load_model(" in score and "def predict(" in score
    env = runtime["MODEL_DEPLOYMENT"]["INFERENCE_CONDA_ENV"]
    assert env["INFERENCE_PYTHON_VERSION"] == "3.11"
    assert env["INFERENCE_ENV_SLUG"] == DEFAULT_INFERENCE_CONDA_ENV
    assert MODEL_FILES[demo.framework] in manifest["files"]
    assert "ocid1" not in json.dumps(runtime)  # no OCIDs (fake or real) leak into the artifact


_SCORE_RUNNER = textwrap.dedent(
    """
    import contextlib, importlib.util, io, json, sys
    artifact_dir, module_name = sys.argv[1], sys.argv[2]
    payloads = json.loads(sys.stdin.read())
    sys.path.insert(0, artifact_dir)
    spec = importlib.util.spec_from_file_location(module_name, artifact_dir + "/score.py")
    score = importlib.util.module_from_spec(spec)
    with contextlib.redirect_stdout(io.StringIO()):  # score.py prints while loading
        spec.loader.exec_module(score)
        model = score.load_model()
    out = [score.predict(payload, model=model) for payload in payloads]
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("model_id", list(DEMOS))
def test_score_py_predicts_like_the_trained_estimator(built, trained, tmp_path, model_id):
    demo = DEMOS[model_id]
    estimator, X, _ = trained[model_id]
    rows = _sample_rows(X)
    with zipfile.ZipFile(built["catalog"] / model_id / "artifact.zip") as zf:
        zf.extractall(tmp_path)
    payloads = [rows.tolist(), {"data": rows.tolist()}]
    proc = subprocess.run(
        [sys.executable, "-c", _SCORE_RUNNER, str(tmp_path), f"mis_score_{model_id.replace('-', '_')}"],
        input=json.dumps(payloads), capture_output=True, text=True, timeout=120, check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    for result in results:
        assert set(result) == {"prediction"}
        got = np.asarray(result["prediction"])
        if demo.framework == "xgboost":
            # ADS's XGBoost score.py scores with the Booster: P(class 1) for binary:logistic.
            np.testing.assert_allclose(got, estimator.predict_proba(rows)[:, 1], rtol=1e-6)
            assert ((got > 0.5).astype(int) == estimator.predict(rows)).all()
        else:
            assert got.tolist() == estimator.predict(rows).tolist()
    if demo.framework != "xgboost":
        assert len(set(results[0]["prediction"])) > 1  # the sample covers several classes


def test_training_is_deterministic(trained):
    for demo in DEMO_MODELS:
        estimator, X, _ = demo.train()
        rows = _sample_rows(X)
        expected = trained[demo.id][0].predict_proba(rows)
        assert np.array_equal(estimator.predict_proba(rows), expected), demo.id


# ------------------------------------------------------------------------------- idempotency


def test_second_call_does_not_rebuild(built, monkeypatch):
    before = _snapshot(built["catalog"])

    def no_build(*args, **kwargs):
        raise AssertionError("ensure_demo_catalog rebuilt an existing entry")

    monkeypatch.setattr(demo_mod, "build_demo_entry", no_build)
    monkeypatch.setattr(demo_mod, "build_ads_artifact", no_build)
    assert ensure_demo_catalog(built["catalog"], env="prod") == built["ids"]
    assert _snapshot(built["catalog"]) == before
    assert _read_metadata(built["catalog"], built["ids"][0])["custom_metadata"][0]["value"] == ENV


def test_only_missing_or_incomplete_entries_are_built(built, tmp_path):
    catalog = tmp_path / "catalog"
    shutil.copytree(built["catalog"], catalog)
    sklearn_id, xgb_id, lgbm_id = (d.id for d in DEMO_MODELS)
    shutil.rmtree(catalog / sklearn_id)
    (catalog / lgbm_id / "artifact.zip").unlink()  # a broken leftover: replaced, not kept
    kept = _snapshot(catalog / xgb_id)

    assert ensure_demo_catalog(catalog, env="prod") == built["ids"]

    assert _snapshot(catalog / xgb_id) == kept
    for model_id in (sklearn_id, lgbm_id):
        meta = _read_metadata(catalog, model_id)
        assert {"key": "env", "value": "prod", "category": "Other"} in meta["custom_metadata"]
        assert (catalog / model_id / "artifact.zip").is_file()
    assert sorted(p.name for p in catalog.iterdir() if p.is_dir()) == sorted(built["ids"])


# --------------------------------------------------------------------------------- API edges


def test_importing_server_demo_does_not_import_ads():
    code = "import sys, server.demo; print(sorted(m for m in ('ads', 'oci', 'xgboost', 'lightgbm', 'sklearn') if m in sys.modules))"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_cli_prints_the_ids(built, tmp_path):
    catalog = tmp_path / "catalog"
    shutil.copytree(built["catalog"], catalog)  # complete: the CLI has nothing to build
    proc = subprocess.run(
        [sys.executable, "-m", "server.demo", str(catalog), "--env", "dev"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == built["ids"]


def test_a_relative_catalog_under_var_gets_complete_artifacts(tmp_path, monkeypatch):
    """`make run` builds into var/catalog: ADS's .model-ignore has `var/`, matched against whole
    paths, and a relative artifact dir crashed its zipping."""
    monkeypatch.chdir(tmp_path)
    ensure_demo_catalog(pathlib.Path("var") / "catalog")
    with zipfile.ZipFile(tmp_path / "var" / "catalog" / "demo-sklearn-iris" / "artifact.zip") as archive:
        assert {"score.py", "runtime.yaml", "model.joblib"} <= set(archive.namelist())
