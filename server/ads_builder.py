"""Real OCI Data Science model artifacts, built by oracle-ads itself, offline (`mis package --ads`, the demo).

``build_ads_artifact`` turns a fitted estimator of a known framework (server/frameworks/) into the
zip that OCI Data Science stores for a model, produced by oracle-ads itself (``prepare`` plus ADS's
own ``zip_artifact``), fully offline: ADS is pointed at a throwaway API-key config (generated RSA
key, fake ``ocid1.*..example`` OCIDs) for the duration of the build, and conda-pack lookups in
Object Storage are skipped (``ignore_conda_error=True``); the requested inference conda env and
Python version are then written into ``runtime.yaml`` (server/artifact.py). Nothing goes to the
network.

What the artifact contains (top-level zip members): ``score.py``, ``runtime.yaml``, the model
file, ``input_schema.json`` / ``output_schema.json`` (when an ``X_sample`` / ``y_sample`` was
given), ``.model-ignore`` and ``model_artifact_manifest.json`` (sha256 and size of every file;
``score.py`` checks the model file against it in ``load_model()``).

What ADS writes per framework (ADS class -> model file -> what ``load_model()`` returns):

* scikit-learn: ``SklearnModel`` -> ``model.joblib`` -> the estimator; ``estimator.predict(X)``.
* xgboost: ``XGBoostModel`` -> ``model.json`` -> an ``xgboost.Booster``;
  ``booster.predict(xgb.DMatrix(X))``.
* lightgbm: ``LightGBMModel`` -> ``model.joblib`` -> the ``LGBM*`` sklearn wrapper;
  ``estimator.predict(X)`` (a raw ``lightgbm.Booster`` would be written as ``model.txt``).

ADS's generated ``score.py`` (same shape for all three frameworks):

* Import it under a unique module name; the module-level ``predict(data, model=load_model(),
  ...)`` default evaluates ``load_model()`` at import time, so the model file must be next to
  ``score.py`` when it is imported. ``load_model()`` is ``lru_cache``-d and ``print()``-s two
  lines to stdout; it inserts the artifact folder into ``sys.path``.
* ``predict(data, model=loaded)`` accepts as ``data`` (the parsed request JSON):

  - a list of rows (``[[f1, f2, ...], ...]``): passed as-is to the model (positional
    features). This is the shape the demo models are trained for (numpy, no feature names).
    A single flat row (``[f1, f2, ...]``) is NOT accepted (the model raises ValueError: wrap it);
  - ``{"data": <rows>}`` (any dict with a ``"data"`` key and no recognised ``data_type``):
    unwrapped, then as above;
  - a dict of columns ``{"col": [v, ...], ...}`` (or ``{"data": {...}}``): turned into a
    ``pandas.DataFrame`` (column order = dict order; scikit-learn warns "X has feature names"
    for models fitted on arrays);
  - ADS's own client format ``{"data": "<DataFrame.to_json()>", "data_type": "<class
    'pandas.core.frame.DataFrame'>"}`` (a bare JSON string also goes through ``pd.read_json``
    with dtypes from input_schema.json; pandas 2.x emits a FutureWarning for literal JSON and
    ``score.py`` leaks a ResourceWarning for the schema file), ``{"data": [...], "data_type":
    "...pandas.core.series.Series..."}``, or ``{"data": "<base64 of np.save>", "data_type":
    "<class 'numpy.ndarray'>"}`` (``allow_pickle=False``).

* It returns ``{"prediction": <list>}`` (``ndarray.tolist()``):

  - scikit-learn and LightGBM (sklearn wrapper): class labels for classifiers (``[0, 2, ...]``),
    values for regressors;
  - XGBoost: the *Booster*'s output, i.e. probabilities, not labels, for classifiers: for
    ``binary:logistic`` one float per row (probability of class 1), for ``multi:softprob`` one
    list of class probabilities per row; values for regressors.

* Imports at predict time: only numpy, pandas, joblib (sklearn / LightGBM) and the framework
  (``xgboost`` is imported at the top of the XGBoost score.py, ``lightgbm`` at the top of the
  LightGBM one). Nothing from ``ads`` or ``oci`` is needed to serve. Because ``load_model`` is
  ``lru_cache``-d, the server's explicit ``load_model()`` returns the object the import-time
  default already loaded (one copy in memory). Each ``load_model`` puts its artifact folder at
  ``sys.path[0]``.

This module imports oracle-ads (and the ML frameworks) lazily, inside functions: the server
image need not have ``ads`` installed, and ``python -m server.demo``, which runs at every start of
a server with demo models, imports it without loading them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import logging
import math
import pathlib
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from typing import Any

from .artifact import DEFAULT_INFERENCE_CONDA_ENV, DEFAULT_INFERENCE_PYTHON_VERSION, read_schema, set_inference_env

log = logging.getLogger(__name__)

_FAKE_TENANCY = "ocid1.tenancy.oc1..example"
_FAKE_USER = "ocid1.user.oc1..example"
_FAKE_REGION = "us-ashburn-1"
_FAKE_PROFILE = "MIS_DEMO"


def _ads_model_class(framework) -> type:
    """oracle-ads' model class for a framework (server/frameworks/base.py's `ads_model`)."""
    try:
        import ads  # noqa: F401
    except ImportError as exc:
        raise ModuleNotFoundError(
            "oracle-ads is needed to build model artifacts: install the `demo` extra"
            " (pip install 'model-inference-server[demo]')",
            name="ads",
        ) from exc
    module, _, name = framework.ads_model.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _write_throwaway_oci_config(directory: pathlib.Path) -> pathlib.Path:
    """Write a fresh RSA key and an OCI config (fake OCIDs) into directory; return the config."""
    import hashlib

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = directory / "oci_api_key.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # OCI key fingerprint: MD5 of the DER public key.
    digest = hashlib.md5(public_der, usedforsecurity=False).hexdigest()
    fingerprint = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    config_file = directory / "config"
    config_file.write_text(
        f"[{_FAKE_PROFILE}]\n"
        f"user={_FAKE_USER}\n"
        f"fingerprint={fingerprint}\n"
        f"tenancy={_FAKE_TENANCY}\n"
        f"region={_FAKE_REGION}\n"
        f"key_file={key_file}\n",
        encoding="utf-8",
    )
    config_file.chmod(0o600)
    return config_file


@contextlib.contextmanager
def _throwaway_ads_auth() -> Iterator[None]:
    """Point ADS at a throwaway API-key config for the duration; restore ADS's auth state after."""
    import ads
    from ads.common.auth import AuthState

    state = AuthState()
    saved = {field.name: getattr(state, field.name) for field in dataclasses.fields(state)}
    with tempfile.TemporaryDirectory(prefix="mis-demo-oci-") as tmp:
        config_file = _write_throwaway_oci_config(pathlib.Path(tmp))
        ads.set_auth(auth="api_key", oci_config_location=str(config_file), profile=_FAKE_PROFILE)
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(state, name, value)


@contextlib.contextmanager
def _captured_output() -> Iterator[io.StringIO]:
    """Swallow ADS's tqdm progress bars and prints (kept for debug logging)."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield buffer
    finally:
        if buffer.getvalue().strip():
            log.debug("oracle-ads output:\n%s", buffer.getvalue())


def _jsonable(value: Any) -> Any:
    """value with anything strict JSON cannot hold (NaN, objects...) turned into str()."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def build_ads_artifact(
    estimator: Any,
    X_sample: Any,
    y_sample: Any,
    dest_zip: pathlib.Path,
    *,
    workdir: pathlib.Path | None = None,
    use_case_type: str | None = None,
    inference_conda_env: str = DEFAULT_INFERENCE_CONDA_ENV,
    inference_python_version: str = DEFAULT_INFERENCE_PYTHON_VERSION,
) -> dict:
    """Build a real OCI Data Science model artifact for a fitted estimator with oracle-ads, offline.

    Writes the artifact zip (top-level members, no leading folder) to ``dest_zip`` and returns
    ``{"framework", "model_file", "taxonomy_metadata", "input_schema", "output_schema"}``:
    taxonomy_metadata is ADS's taxonomy as a list of ``{"key", "value"}`` (values kept when
    JSON-serializable, else str()); the schemas are ADS's schema dicts, or None.

    ``workdir``: where ADS's artifact directory is prepared (a temporary directory, removed
    afterwards, when None). Keep it outside any git work tree: ADS's zip leaves out files that
    git ignores there. ``use_case_type``: an ADS ``UseCaseType`` value such as
    "binary_classification"; ADS leaves it null otherwise.
    """
    from .frameworks import framework_of_estimator  # numpy and pandas: only when building

    framework = framework_of_estimator(estimator)
    model_class = _ads_model_class(framework)
    from ads.model.common.utils import zip_artifact

    dest_zip = pathlib.Path(dest_zip).resolve()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mis-ads-")))
        # Absolute: ADS's zip_artifact mangles member names of a relative artifact directory.
        artifact_dir = pathlib.Path(workdir).resolve() / "artifact"
        if artifact_dir.exists():
            shutil.rmtree(artifact_dir)
        stack.enter_context(_throwaway_ads_auth())
        stack.enter_context(_captured_output())
        model = model_class(
            estimator=estimator,
            artifact_dir=str(artifact_dir),
            model_input_serializer="json",  # ADS's default; naming it silences its warning
        )
        model.prepare(
            inference_conda_env=inference_conda_env,
            inference_python_version=inference_python_version,
            X_sample=X_sample,
            y_sample=y_sample,
            use_case_type=use_case_type,
            force_overwrite=True,
            ignore_conda_error=True,  # else ADS looks conda packs up in Object Storage
            ignore_pending_changes=True,
        )
        set_inference_env(artifact_dir, inference_conda_env, inference_python_version)
        tmp_zip = pathlib.Path(zip_artifact(str(artifact_dir)))
        try:
            _check_complete(tmp_zip, artifact_dir, model.model_file_name)
            dest_zip.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(tmp_zip), str(dest_zip))
            dest_zip.chmod(0o644)  # ADS creates it with NamedTemporaryFile (0600)
        finally:
            tmp_zip.unlink(missing_ok=True)

        taxonomy = [
            {"key": item["key"], "value": _jsonable(item.get("value"))}
            for item in model.metadata_taxonomy.to_dict()["data"]
        ]
        return {
            "framework": framework.name,
            "model_file": model.model_file_name,
            "taxonomy_metadata": sorted(taxonomy, key=lambda item: item["key"]),
            "input_schema": read_schema(artifact_dir, "input"),
            "output_schema": read_schema(artifact_dir, "output"),
        }


def _check_complete(artifact_zip: pathlib.Path, artifact_dir: pathlib.Path, model_file: str) -> None:
    """ADS matches its .model-ignore patterns (`var/`, `lib/`, `env/`...) against the whole
    absolute path, so a build directory under e.g. /var silently yields an empty artifact."""
    with zipfile.ZipFile(artifact_zip) as archive:
        missing = {"score.py", "runtime.yaml", model_file} - set(archive.namelist())
    if missing:
        raise RuntimeError(
            f"ADS left {sorted(missing)} out of the artifact: its .model-ignore patterns match the build "
            f"path {artifact_dir}; build elsewhere (workdir=..., or TMPDIR)"
        )
