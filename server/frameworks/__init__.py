"""The frameworks the server knows, and every question asked of them.

Each framework declares itself once, as `FRAMEWORK` in its own module (`base.Framework`: its names,
the library module, the model files it opens and how, what `mis package` writes for it). What the
rest of the server asks goes through the functions here, which read `FRAMEWORKS` when asked:
opening a model (an unpacked ADS artifact runs its score.py, `ads.py`; a native model file is
opened by the framework whose suffix it has), the `framework` label of an upload, the module whose
version the environment checks compare, the framework of a model object or file for `mis package`,
and the names for help texts. Adding a framework is a module here and its line in `FRAMEWORKS`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from . import lightgbm, sklearn, xgboost
from .ads import ScoreModuleRuntime
from .base import Framework, Runtime

__all__ = ["FRAMEWORKS", "Framework", "Runtime", "framework_of_artifact", "framework_of_estimator", "module_of",
           "modules", "open_runtime", "package_formats", "package_reader", "preopen"]

FRAMEWORKS: tuple[Framework, ...] = (sklearn.FRAMEWORK, xgboost.FRAMEWORK, lightgbm.FRAMEWORK)

# -- opening a model --------------------------------------------------------------------------

# Runtimes the gunicorn master opened before forking (`preopen`): each worker takes its inherited
# copy instead of loading the model again, so the model's memory is one copy shared by every worker
# (copy-on-write), not one per worker. Keyed by what was opened, so a changed artifact is reopened.
_preopened: dict[tuple, Runtime] = {}


def _opened_key(model_id: str, path: Path) -> tuple:
    stat = path.stat()
    return model_id, str(path), stat.st_mtime_ns, stat.st_ino


def preopen(model_id: str, path: Path) -> None:
    """In the master, before the fork: load, never predict (a model's thread pools, OpenMP's
    above all, do not survive a fork)."""
    _preopened[_opened_key(model_id, path)] = _open(model_id, path)


def open_runtime(model_id: str, path: Path) -> Runtime:
    """The master's preopened runtime for this artifact when there is one, else a fresh one."""
    with contextlib.suppress(OSError):
        runtime = _preopened.pop(_opened_key(model_id, path), None)
        if runtime is not None:
            return runtime
    return _open(model_id, path)


def _open(model_id: str, path: Path) -> Runtime:
    """Pick the runtime from what is on disk: an unpacked artifact directory or a native model file."""
    if path.is_dir():
        return ScoreModuleRuntime(model_id, path)
    suffix = path.suffix.lower()
    for framework in FRAMEWORKS:
        if suffix in framework.suffixes:
            return framework.open(path)
    raise ValueError(f"no runtime for a model file named {path.name!r}")


# -- what a model is --------------------------------------------------------------------------

def framework_of_artifact(unpacked: Path) -> str:
    """An unpacked artifact's framework label, by its model file (`model<suffix>`); "other" if none."""
    return next((framework.name for framework in FRAMEWORKS for suffix in framework.suffixes
                 if (unpacked / f"model{suffix}").is_file()), "other")


def module_of(name: str) -> str | None:
    """The module of the framework a catalog's taxonomy names (by name or alias, any case); None
    for one this server does not know."""
    wanted = name.lower()
    return next((framework.module for framework in FRAMEWORKS
                 if wanted in (known.lower() for known in framework.names)), None)


def modules() -> tuple[str, ...]:
    return tuple(framework.module for framework in FRAMEWORKS)


def framework_of_estimator(estimator: Any) -> Framework:
    """The framework of a fitted model object; TypeError for one no framework owns."""
    for framework in FRAMEWORKS:
        if framework.owns(estimator):
            return framework
    kind = type(estimator)
    raise TypeError(f"unsupported estimator type {kind.__module__}.{kind.__qualname__}: expected a "
                    f"{_one_of(framework.name for framework in FRAMEWORKS)} model")


def package_reader(path: Path) -> Framework | None:
    """The framework that reads this model file for `mis package` (by its suffix); None if none does."""
    suffix = path.suffix.lower()
    return next((framework for framework in FRAMEWORKS if suffix in framework.packages), None)


def package_formats() -> str:
    """The model files `mis package` reads, for its help and errors: ".joblib / .pkl (joblib), ..."."""
    return _one_of(f"{' / '.join(framework.packages)} ({framework.reads_as})" for framework in FRAMEWORKS)


def _one_of(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"
