"""The OCI Data Science (ADS) model artifact format, read and written in this one place.

An artifact is a zip holding, at its top level, `score.py` (`load_model()` and `predict(data,
model=...)`), `runtime.yaml` (the Conda environment and Python version it is meant to run in), the
model file, and, where its maker knew them, `input_schema.json` / `output_schema.json` (the
features: names, order, types). Here: what an unpacked artifact says (its schemas, its inference
environment), and writing one: runtime.yaml's inference environment (oracle-ads leaves it empty
offline) and a whole artifact without oracle-ads, with a score.py for its framework.
"""

from __future__ import annotations

import io
import json
import textwrap
import zipfile
from pathlib import Path

import yaml

#: OCI Data Science service conda pack written into runtime.yaml (General Machine Learning, CPU,
#: Python 3.11). Informational for this server; OCI Model Deployment would use it.
DEFAULT_INFERENCE_CONDA_ENV = "generalml_p311_cpu_x86_64_v1"
DEFAULT_INFERENCE_PYTHON_VERSION = "3.11"


# -- reading an unpacked artifact -------------------------------------------------------------

def read_schema(artifact_dir: Path, kind: str) -> dict | None:
    """The artifact's `input_schema.json` or `output_schema.json` (`kind` "input" or "output");
    None when it has none or it is not JSON."""
    try:
        return json.loads((artifact_dir / f"{kind}_schema.json").read_text())
    except (OSError, ValueError):
        return None


def schema_feature_names(schema) -> list[str] | None:
    """The feature names of an input schema, in its order; None when it names none."""
    try:
        return [str(column["name"]) for column in schema.get("schema")] or None
    except (AttributeError, TypeError, KeyError):
        return None


def schema_types(schema) -> dict[str, str]:
    """{feature name: dtype} of a schema ({"schema": [{"name", "dtype", "order"}, ...]})."""
    features = schema.get("schema") if isinstance(schema, dict) else None
    if not isinstance(features, list):
        return {}
    return {str(f["name"]): str(f.get("dtype")) for f in features if isinstance(f, dict) and "name" in f}


def inference_conda_env(artifact: Path) -> dict:
    """runtime.yaml's MODEL_DEPLOYMENT.INFERENCE_CONDA_ENV, every scalar as text (BaseLoader:
    `INFERENCE_PYTHON_VERSION: 3.10` unquoted is 3.10, not 3.1); empty where it says nothing, is
    unreadable, or `artifact` is a native model file rather than an unpacked artifact."""
    document = None
    if artifact.is_dir():
        try:
            text = (artifact / "runtime.yaml").read_text()
            document = yaml.load(text, Loader=yaml.BaseLoader)  # nosec B506: BaseLoader builds only str, list and dict
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            pass
    return _mapping(_mapping(_mapping(document).get("MODEL_DEPLOYMENT")).get("INFERENCE_CONDA_ENV"))


def _mapping(value) -> dict:
    return value if isinstance(value, dict) else {}


# -- writing one ------------------------------------------------------------------------------

def input_schema(names: list[str]) -> dict:
    """ADS's input_schema.json for numeric features: names, order and type (no statistics: none are known)."""
    return {"version": "1.1", "schema": [
        {"name": name, "dtype": "float64", "feature_type": "Continuous", "order": order, "required": True,
         "description": name, "domain": {"values": "Continuous", "stats": {}, "constraints": []}}
        for order, name in enumerate(names)]}


def add_input_schema(archive: zipfile.ZipFile, names: list[str]) -> None:
    archive.writestr("input_schema.json", json.dumps(input_schema(names), indent=2))


def _inference_env(conda_env: str, python_version: str) -> dict:
    """runtime.yaml's INFERENCE_CONDA_ENV for a service pack's slug or a published pack (oci://...)."""
    if conda_env.startswith("oci://"):
        return {"INFERENCE_ENV_PATH": conda_env, "INFERENCE_ENV_SLUG": "", "INFERENCE_ENV_TYPE": "published",
                "INFERENCE_PYTHON_VERSION": python_version}
    return {"INFERENCE_ENV_PATH": "", "INFERENCE_ENV_SLUG": conda_env, "INFERENCE_ENV_TYPE": "data_science",
            "INFERENCE_PYTHON_VERSION": python_version}


def set_inference_env(artifact_dir: Path, conda_env: str, python_version: str) -> None:
    """Record the inference environment in an artifact directory's runtime.yaml: with
    ignore_conda_error oracle-ads leaves INFERENCE_CONDA_ENV empty (resolving a slug or an oci://
    pack would need Object Storage)."""
    path = artifact_dir / "runtime.yaml"
    runtime = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    runtime.setdefault("MODEL_DEPLOYMENT", {}).setdefault("INFERENCE_CONDA_ENV", {}).update(
        _inference_env(conda_env, python_version))
    path.write_text(yaml.safe_dump(runtime, sort_keys=True), encoding="utf-8")


def write_plain_artifact(dest: Path, model_path: Path, model_file: str, score: str, names: list[str] | None,
                         conda_env: str, python_version: str) -> None:
    """The artifact without oracle-ads: the model file as it is (named `model_file`), `score`
    as score.py, runtime.yaml, and input_schema.json when the features are known."""
    runtime = {
        "MODEL_ARTIFACT_VERSION": "3.0",
        "MODEL_DEPLOYMENT": {"INFERENCE_CONDA_ENV": _inference_env(conda_env, python_version)},
        "MODEL_PROVENANCE": {"TRAINING_CODE": {"ARTIFACT_DIRECTORY": ""}},
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("score.py", score)
        archive.writestr("runtime.yaml", yaml.safe_dump(runtime, sort_keys=True))
        archive.write(model_path, model_file)
        if names:
            add_input_schema(archive, names)
    dest.write_bytes(buffer.getvalue())


def score_py(model_file: str, framework: str, load: str, predict: str = "") -> str:
    """A score.py for one model file: `load`, the body of load_model() (`path` is the file's path),
    and `predict`, lines that turn `table` (the rows) into what the model predicts on."""
    return (SCORE_PY.replace("@MODEL_FILE@", model_file).replace("@FRAMEWORK@", framework)
            .replace("@LOAD@\n", textwrap.indent(load, "    ") + "\n")
            .replace("@PREDICT@\n", textwrap.indent(predict, "    ") + "\n" if predict else ""))


# ADS's score.py contract (load_model(), predict(data, model=...) -> {"prediction": [...]}) for the
# bodies the server hands over once checked: rows, {"data": rows} or a dict of columns.
SCORE_PY = '''"""Scores @MODEL_FILE@ (@FRAMEWORK@); written by `mis package` in the OCI Data Science layout."""
import functools
import os

import numpy as np
import pandas as pd

MODEL_FILE = "@MODEL_FILE@"
FRAMEWORK = "@FRAMEWORK@"


@functools.lru_cache(maxsize=1)
def load_model(model_file_name=MODEL_FILE):
    path = os.path.join(os.path.dirname(os.path.realpath(__file__)), model_file_name)
@LOAD@


def _table(data, model):
    if isinstance(data, dict) and "data" in data:
        data = data["data"]
    if isinstance(data, dict):  # columns, in the order of input_schema.json (the server ensures it)
        frame = pd.DataFrame(data)
        if getattr(model, "feature_names_in_", None) is not None:
            return frame
        data = frame.to_numpy()
    return np.asarray(data, dtype=float)


def predict(data, model=None):
    model = load_model() if model is None else model
    table = _table(data, model)
@PREDICT@
    return {"prediction": np.asarray(model.predict(table)).tolist()}
'''
