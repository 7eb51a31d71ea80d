"""The environment this server runs in, and whether an artifact was made for it.

An OCI Data Science artifact says what it needs in its runtime.yaml (the Conda pack's slug and
Python version it is meant to run in) and, in the catalog, its taxonomy metadata (framework and
version). A model pickled under one scikit-learn and loaded under another either fails to load
(`No module named 'sklearn.svm.classes'`) or, worse, predicts differently: `check_environment`
says so before it serves, and `missing_library` names a library that is missing altogether.
"""

from __future__ import annotations

import functools
import importlib
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from . import frameworks
from .artifact import inference_conda_env
from .catalog import ModelInfo
from .errors import EnvIncompatible, MissingLibrary


@dataclass(frozen=True)
class ServerEnvironment:
    slug: str | None  # None: unknown, so slugs are not compared
    python: str  # major.minor.micro

    @classmethod
    def detect(cls, slug: str | None) -> "ServerEnvironment":
        """`slug` from the configuration, else the active Conda environment's name (a Conda pack
        activated in an image sets CONDA_DEFAULT_ENV; a bare prefix names it by its folder)."""
        found = slug or os.environ.get("CONDA_DEFAULT_ENV") or (
            Path(os.environ["CONDA_PREFIX"]).name if os.environ.get("CONDA_PREFIX") else None)
        return cls(found, platform.python_version())

    def to_dict(self, installation: bool) -> dict:
        """`installation`: also where the server is installed and its libraries' exact versions,
        which tell an attacker what to aim at (admins only)."""
        found = {"slug": self.slug, "python": self.python}
        return {**found, "prefix": sys.prefix, "libraries": library_versions()} if installation else found


@functools.cache
def library_versions() -> dict[str, str | None]:
    """The versions of the libraries models are loaded with (None: not installed)."""
    return {name: _version(name) for name in ("numpy", "pandas", *frameworks.modules())}


def _version(module: str) -> str | None:
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:  # not installed, or broken (LightGBM without its OpenMP runtime raises OSError)
        return None


@dataclass(frozen=True)
class Needs:
    """What an artifact says it needs; None where it says nothing."""

    slug: str | None
    python: str | None
    framework: str | None
    framework_version: str | None

    @classmethod
    def of(cls, info: ModelInfo, artifact: Path) -> "Needs":
        conda = inference_conda_env(artifact)
        taxonomy = {t.get("key"): t.get("value") for t in info.taxonomy_metadata or [] if isinstance(t, dict)}
        return cls(_text(conda.get("INFERENCE_ENV_SLUG")), _text(conda.get("INFERENCE_PYTHON_VERSION")),
                   _text(taxonomy.get("Framework")), _text(taxonomy.get("FrameworkVersion")))


def _text(value) -> str | None:
    return str(value).strip() or None if value is not None else None


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def check_environment(model_id: str, needs: Needs, server: ServerEnvironment, policy: str) -> list[str]:
    """The mismatches between what the artifact needs and this server, as sentences naming both
    sides. `strict` raises EnvIncompatible (409) on any that can change predictions (slug,
    Python minor version, framework major version, or no slug at all); `warn` returns them all;
    `off` looks at nothing."""
    if policy == "off":
        return []
    refusing, notes = [], []
    if needs.slug is None:
        if policy == "strict":
            refusing.append("the artifact's runtime.yaml names no INFERENCE_ENV_SLUG")
    elif server.slug is not None and needs.slug.lower() != server.slug.lower():
        refusing.append(f"it was made for Conda environment {needs.slug!r}; this server runs in {server.slug!r}")
    if needs.python and _major_minor(needs.python) != _major_minor(server.python):
        refusing.append(f"it was made for Python {needs.python}; this server runs Python {server.python}")
    module = frameworks.module_of(needs.framework or "")
    have = _version(module) if module else None
    if module and needs.framework_version and have and needs.framework_version != have:
        sentence = f"it was saved with {needs.framework} {needs.framework_version}; this server has {have}"
        same_major = needs.framework_version.split(".")[0] == have.split(".")[0]
        (notes if same_major else refusing).append(sentence)
    if refusing and policy == "strict":
        raise EnvIncompatible(f"model {model_id!r} does not match this server's environment: {'; '.join(refusing)} "
                              "(MIS_ENV_COMPAT=strict)", model_id=model_id, mismatches=refusing,
                              server={"slug": server.slug, "python": server.python})
    return refusing + notes


def missing_library(model_id: str, exc: BaseException, server: ServerEnvironment) -> MissingLibrary | None:
    """A clear error when loading failed for want of a module (an import in score.py, or a pickle
    naming a module), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen and not isinstance(exc, ModuleNotFoundError):
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    installed = _version(top) if top != exc.name else None
    where = f"Conda environment {server.slug!r}" if server.slug else f"environment (Python {server.python})"
    if installed:
        reason = (f"model {model_id!r} needs module {exc.name!r}, which {top} {installed} in this server's {where} does "
                  f"not have: the model was saved with another version of {top}")
    else:
        reason = f"model {model_id!r} needs the Python library {top!r}, which this server's {where} does not have"
    return MissingLibrary(reason, model_id=model_id, library=exc.name)
