"""A trained model file as an OCI Data Science (ADS) model artifact zip, offline (`mis package`).

The model file is a scikit-learn, XGBoost or LightGBM model saved with joblib (`.joblib`, `.pkl`),
an XGBoost Booster saved as JSON (`.json`, `.ubj`) or a LightGBM Booster saved as text (`.txt`).
With oracle-ads installed the artifact is ADS's own (server/demo.py builds it with a throwaway OCI
config, so no account is needed); without it, `write_plain_artifact` writes the same layout by
hand: `score.py` (`load_model()`, `predict(data, model=...)`), `runtime.yaml` and the model file.
Either way the zip also carries `input_schema.json` with the model's feature names (its own, or
x0, x1, ...) when its width is known, so the server checks every body's width before it runs.
"""

from __future__ import annotations

import io
import json
import pathlib
import sys
import zipfile
from dataclasses import dataclass
from typing import Any

from server.demo import (
    DEFAULT_INFERENCE_CONDA_ENV,
    FRAMEWORK_LIGHTGBM,
    FRAMEWORK_SKLEARN,
    FRAMEWORK_XGBOOST,
    build_ads_artifact,
    detect_framework,
)

PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"  # the model was pickled here


class PackageError(ValueError):
    """The model file cannot be packaged; the message says why."""


@dataclass(frozen=True)
class Packaged:
    path: pathlib.Path
    framework: str
    model_file: str
    feature_names: list[str] | None
    writer: str  # "oracle-ads" or "plain"

    def to_dict(self) -> dict:
        return {"artifact": str(self.path), "framework": self.framework, "model_file": self.model_file,
                "n_features": len(self.feature_names) if self.feature_names else None,
                "feature_names": self.feature_names, "writer": self.writer}


def load_model_file(path: pathlib.Path) -> Any:
    """The model object in a model file, by its suffix."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".json", ".ubj"):
            import xgboost

            booster = xgboost.Booster()
            booster.load_model(str(path))
            return booster
        if suffix == ".txt":
            import lightgbm

            return lightgbm.Booster(model_file=str(path))
        if suffix in (".joblib", ".pkl", ".pickle"):
            import joblib

            return joblib.load(path)  # nosec B301: the user's own model file, packaged on their own machine
    except (OSError, ValueError, EOFError, ImportError) as exc:
        raise PackageError(f"{path} is not a model file this command can read: {exc}") from None
    except Exception as exc:  # XGBoostError, LightGBMError, unpickling errors
        raise PackageError(f"{path} could not be loaded as a {suffix} model: {type(exc).__name__}: {exc}") from None
    raise PackageError(f"{path}: expected .joblib / .pkl (joblib), .json / .ubj (XGBoost Booster) or .txt "
                       "(LightGBM Booster)")


def feature_names(model: Any) -> list[str] | None:
    """The model's input features: its own names, else x0, x1, ... for its width; None if unknown."""
    names = getattr(model, "feature_names_in_", None)
    if names is None and detect_framework(model) == FRAMEWORK_XGBOOST and hasattr(model, "num_features"):
        names = model.feature_names or [f"x{i}" for i in range(model.num_features())]
    if names is None and hasattr(model, "feature_name") and hasattr(model, "num_feature"):  # LightGBM Booster
        names = model.feature_name()
    if names is None and getattr(model, "n_features_in_", None):
        names = [f"x{i}" for i in range(model.n_features_in_)]
    return [str(name) for name in names] if names is not None and len(names) else None


def input_schema(names: list[str]) -> dict:
    """ADS's input_schema.json for numeric features: names, order and type (no statistics: none are known)."""
    return {"version": "1.1", "schema": [
        {"name": name, "dtype": "float64", "feature_type": "Continuous", "order": order, "required": True,
         "description": name, "domain": {"values": "Continuous", "stats": {}, "constraints": []}}
        for order, name in enumerate(names)]}


def package(model_path: pathlib.Path, dest: pathlib.Path, *, use_ads: bool | None = None,
            conda_env: str = DEFAULT_INFERENCE_CONDA_ENV, python_version: str = PYTHON_VERSION) -> Packaged:
    """Write dest (an artifact zip) for the model in model_path. use_ads: None uses oracle-ads when
    it is installed; True requires it; False writes the plain artifact."""
    model_path = pathlib.Path(model_path)
    if not model_path.is_file():
        raise PackageError(f"{model_path}: no such file")
    model = load_model_file(model_path)
    try:
        framework = detect_framework(model)
    except TypeError as exc:
        raise PackageError(f"{model_path}: {exc}") from None
    names = feature_names(model)
    if use_ads is None:
        use_ads = _ads_installed()
    elif use_ads and not _ads_installed():
        raise PackageError("oracle-ads is not installed: install the `demo` extra, or leave --ads out")
    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if use_ads:
        built = build_ads_artifact(model, None, None, dest, inference_conda_env=conda_env,
                                   inference_python_version=python_version)
        model_file = built["model_file"]
        if names:
            with zipfile.ZipFile(dest, "a", zipfile.ZIP_DEFLATED) as archive:
                archive.writestr("input_schema.json", json.dumps(input_schema(names), indent=2))
    else:
        model_file = write_plain_artifact(model_path, framework, names, dest, conda_env, python_version)
    return Packaged(dest, framework, model_file, names, "oracle-ads" if use_ads else "plain")


def _ads_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ads") is not None


def write_plain_artifact(model_path: pathlib.Path, framework: str, names: list[str] | None, dest: pathlib.Path,
                         conda_env: str, python_version: str) -> str:
    """The artifact without oracle-ads: the model file as it is, a score.py for it and runtime.yaml."""
    import yaml

    suffix = model_path.suffix.lower()
    model_file = "model" + (".joblib" if suffix in (".pkl", ".pickle") else suffix)
    runtime = {
        "MODEL_ARTIFACT_VERSION": "3.0",
        "MODEL_DEPLOYMENT": {"INFERENCE_CONDA_ENV": {
            "INFERENCE_ENV_PATH": "", "INFERENCE_ENV_SLUG": conda_env, "INFERENCE_ENV_TYPE": "data_science",
            "INFERENCE_PYTHON_VERSION": python_version}},
        "MODEL_PROVENANCE": {"TRAINING_CODE": {"ARTIFACT_DIRECTORY": ""}},
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("score.py", SCORE_PY.replace("@MODEL_FILE@", model_file).replace("@FRAMEWORK@", framework))
        archive.writestr("runtime.yaml", yaml.safe_dump(runtime, sort_keys=True))
        archive.write(model_path, model_file)
        if names:
            archive.writestr("input_schema.json", json.dumps(input_schema(names), indent=2))
    dest.write_bytes(buffer.getvalue())
    return model_file


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
    if model_file_name.endswith((".json", ".ubj")):
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(path)
        return booster
    if model_file_name.endswith(".txt"):
        import lightgbm

        return lightgbm.Booster(model_file=path)
    import joblib

    return joblib.load(path)


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
    if type(model).__module__.startswith("xgboost") and hasattr(model, "num_features"):  # a Booster
        import xgboost

        table = xgboost.DMatrix(table, feature_names=model.feature_names)
    return {"prediction": np.asarray(model.predict(table)).tolist()}
'''
