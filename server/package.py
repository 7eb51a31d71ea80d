"""A trained model file as an OCI Data Science (ADS) model artifact zip, offline (`mis package`).

The model file is one that a framework in server/frameworks/ reads (each declares its suffixes;
`mis package --help` lists them). With oracle-ads installed the artifact is ADS's own
(server/ads_builder.py builds it with a throwaway OCI config, so no account is needed); without it,
server/artifact.py writes the same layout: `score.py` (`load_model()`, `predict(data,
model=...)`), `runtime.yaml` and the model file.
Either way the zip also carries `input_schema.json` with the model's feature names (its own, or
x0, x1, ...) when its width is known, so the server checks every body's width before it runs.
"""

from __future__ import annotations

import pathlib
import sys
import zipfile
from dataclasses import dataclass
from typing import Any

from . import frameworks
from .ads_builder import build_ads_artifact
from .artifact import DEFAULT_INFERENCE_CONDA_ENV, add_input_schema, score_py, write_plain_artifact
from .frameworks import Framework

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


def load_model_file(path: pathlib.Path) -> tuple[Any, Framework]:
    """The model object in a model file, and the framework that read it (by the file's suffix)."""
    reader = frameworks.package_reader(path)
    if reader is None:
        raise PackageError(f"{path}: expected {frameworks.package_formats()}")
    try:
        return reader.read(path), reader
    except (OSError, ValueError, EOFError, ImportError) as exc:
        raise PackageError(f"{path} is not a model file this command can read: {exc}") from None
    except Exception as exc:  # XGBoostError, LightGBMError, unpickling errors
        raise PackageError(f"{path} could not be loaded as a {path.suffix.lower()} model: "
                           f"{type(exc).__name__}: {exc}") from None


def feature_names(model: Any, framework: Framework) -> list[str] | None:
    """The model's input features: its own names, else x0, x1, ... for its width; None if unknown."""
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        names = framework.feature_names(model)
    if names is None and getattr(model, "n_features_in_", None):
        names = [f"x{i}" for i in range(model.n_features_in_)]
    return [str(name) for name in names] if names is not None and len(names) else None


def package(model_path: pathlib.Path, dest: pathlib.Path, *, use_ads: bool | None = None,
            conda_env: str = DEFAULT_INFERENCE_CONDA_ENV, python_version: str = PYTHON_VERSION) -> Packaged:
    """Write dest (an artifact zip) for the model in model_path. use_ads: None uses oracle-ads when
    it is installed; True requires it; False writes the plain artifact."""
    model_path = pathlib.Path(model_path)
    if not model_path.is_file():
        raise PackageError(f"{model_path}: no such file")
    model, reader = load_model_file(model_path)
    try:
        framework = frameworks.framework_of_estimator(model)
    except TypeError as exc:
        raise PackageError(f"{model_path}: {exc}") from None
    names = feature_names(model, framework)
    if use_ads is None:
        use_ads = _ads_installed()
    elif use_ads and not _ads_installed():
        raise PackageError("oracle-ads is not installed: install the `demo` extra, or leave --ads out")
    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if use_ads:
        model_file = build_ads_artifact(model, None, None, dest, inference_conda_env=conda_env,
                                        inference_python_version=python_version)["model_file"]
        if names:
            with zipfile.ZipFile(dest, "a", zipfile.ZIP_DEFLATED) as archive:
                add_input_schema(archive, names)
    else:
        # Loaded as the file's framework reads it; predicting as the model's own framework does.
        model_file = reader.packages[model_path.suffix.lower()]
        score = score_py(model_file, framework.name, reader.score_load, framework.score_predict)
        write_plain_artifact(dest, model_path, model_file, score, names, conda_env, python_version)
    return Packaged(dest, framework.name, model_file, names, "oracle-ads" if use_ads else "plain")


def _ads_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ads") is not None
