"""Demo models as real OCI Data Science (ADS) model artifacts, and the embedded demo catalog.

``build_ads_artifact`` turns a fitted scikit-learn, XGBoost or LightGBM estimator into the zip
that OCI Data Science stores for a model, produced by oracle-ads itself (``prepare`` plus ADS's
own ``zip_artifact``), fully offline: ADS is pointed at a throwaway API-key config (generated RSA
key, fake ``ocid1.*..example`` OCIDs) for the duration of the build, and conda-pack lookups in
Object Storage are skipped (``ignore_conda_error=True``); the requested inference conda env and
Python version are then written into ``runtime.yaml`` by this module. Nothing goes to the network.

``ensure_demo_catalog`` builds ``DEMO_MODELS`` into the local catalog layout read by
``server/backends/local_catalog.py``::

    <catalog_dir>/<model_id>/metadata.json
    <catalog_dir>/<model_id>/artifact.zip

Each entry is built in a dot-named temporary directory inside ``catalog_dir`` and renamed into
place, so a reader never sees half an entry (readers should skip names starting with ``.``).

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
image need not have ``ads`` installed unless the demo catalog has to be built.

CLI: ``python -m server.demo <catalog_dir> [--env dev]`` builds the catalog if missing and prints
the demo model ids.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import io
import json
import logging
import math
import os
import pathlib
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

log = logging.getLogger(__name__)

FRAMEWORK_SKLEARN = "scikit-learn"
FRAMEWORK_XGBOOST = "xgboost"
FRAMEWORK_LIGHTGBM = "lightgbm"

#: OCI Data Science service conda pack written into runtime.yaml (General Machine Learning, CPU,
#: Python 3.11). Informational for this server; OCI Model Deployment would use it.
DEFAULT_INFERENCE_CONDA_ENV = "generalml_p311_cpu_x86_64_v1"
DEFAULT_INFERENCE_PYTHON_VERSION = "3.11"

METADATA_FILE = "metadata.json"
ARTIFACT_FILE = "artifact.zip"

_FAKE_TENANCY = "ocid1.tenancy.oc1..example"
_FAKE_USER = "ocid1.user.oc1..example"
_FAKE_REGION = "us-ashburn-1"
_FAKE_PROFILE = "MIS_DEMO"


# --------------------------------------------------------------------------------------------
# ADS artifact building
# --------------------------------------------------------------------------------------------


def detect_framework(estimator: Any) -> str:
    """Return "scikit-learn", "xgboost" or "lightgbm" for a fitted estimator; TypeError otherwise."""
    top = type(estimator).__module__.split(".", 1)[0]
    # XGBoost / LightGBM sklearn wrappers subclass sklearn's BaseEstimator: check them first.
    if top == "xgboost":
        return FRAMEWORK_XGBOOST
    if top == "lightgbm":
        return FRAMEWORK_LIGHTGBM
    if top == "sklearn":
        return FRAMEWORK_SKLEARN
    raise TypeError(
        f"unsupported estimator type {type(estimator).__module__}.{type(estimator).__qualname__}:"
        " expected a scikit-learn, xgboost or lightgbm model"
    )


def _ads_model_class(framework: str) -> type:
    try:
        import ads  # noqa: F401
    except ImportError as exc:
        raise ModuleNotFoundError(
            "oracle-ads is needed to build model artifacts: install the `demo` extra"
            " (pip install 'model-inference-server[demo]')",
            name="ads",
        ) from exc
    if framework == FRAMEWORK_SKLEARN:
        from ads.model.framework.sklearn_model import SklearnModel

        return SklearnModel
    if framework == FRAMEWORK_XGBOOST:
        from ads.model.framework.xgboost_model import XGBoostModel

        return XGBoostModel
    if framework == FRAMEWORK_LIGHTGBM:
        from ads.model.framework.lightgbm_model import LightGBMModel

        return LightGBMModel
    raise ValueError(f"unknown framework {framework!r}")


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


def _patch_runtime_yaml(artifact_dir: pathlib.Path, conda_env: str, python_version: str) -> None:
    """Record the inference env: with ignore_conda_error ADS leaves INFERENCE_CONDA_ENV empty
    (resolving a slug or an oci:// pack would need Object Storage)."""
    import yaml

    path = artifact_dir / "runtime.yaml"
    runtime = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    env = runtime.setdefault("MODEL_DEPLOYMENT", {}).setdefault("INFERENCE_CONDA_ENV", {})
    if conda_env.startswith("oci://"):
        env["INFERENCE_ENV_PATH"] = conda_env
        env["INFERENCE_ENV_SLUG"] = ""
        env["INFERENCE_ENV_TYPE"] = "published"
    else:
        env["INFERENCE_ENV_PATH"] = ""
        env["INFERENCE_ENV_SLUG"] = conda_env
        env["INFERENCE_ENV_TYPE"] = "data_science"
    env["INFERENCE_PYTHON_VERSION"] = python_version
    path.write_text(yaml.safe_dump(runtime, sort_keys=True), encoding="utf-8")


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
    framework = detect_framework(estimator)
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
        _patch_runtime_yaml(artifact_dir, inference_conda_env, inference_python_version)
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
        input_schema = _schema_dict(artifact_dir / "input_schema.json")
        output_schema = _schema_dict(artifact_dir / "output_schema.json")
        return {
            "framework": framework,
            "model_file": model.model_file_name,
            "taxonomy_metadata": sorted(taxonomy, key=lambda item: item["key"]),
            "input_schema": input_schema,
            "output_schema": output_schema,
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


def _schema_dict(path: pathlib.Path) -> dict | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# Demo models
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DemoModel:
    """A small deterministic model on one of scikit-learn's bundled datasets (no download)."""

    id: str
    name: str
    description: str
    framework: str
    dataset: str  # sklearn.datasets.load_<dataset>
    use_case_type: str
    make_estimator: Callable[[], Any]

    def load_data(self) -> tuple[Any, Any]:
        """(X, y) as numpy arrays: the demo models take positional features (lists of rows)."""
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, f"load_{self.dataset}")()
        return bunch.data, bunch.target

    def feature_names(self) -> list[str]:
        import sklearn.datasets

        return [str(n) for n in getattr(sklearn.datasets, f"load_{self.dataset}")().feature_names]

    def train(self) -> tuple[Any, Any, Any]:
        """Fit on the whole dataset; return (estimator, X, y)."""
        X, y = self.load_data()
        estimator = self.make_estimator()
        estimator.fit(X, y)
        return estimator, X, y


def _iris_estimator() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0))


def _breast_cancer_estimator() -> Any:
    from xgboost import XGBClassifier

    return XGBClassifier(
        n_estimators=20, max_depth=3, learning_rate=0.3, random_state=0, n_jobs=1,
        tree_method="hist",
    )


def _wine_estimator() -> Any:
    from lightgbm import LGBMClassifier

    return LGBMClassifier(
        n_estimators=20, num_leaves=8, learning_rate=0.2, random_state=0, n_jobs=1,
        deterministic=True, verbose=-1,
    )


DEMO_MODELS: tuple[DemoModel, ...] = (
    DemoModel(
        id="demo-sklearn-iris",
        name="Iris species (scikit-learn)",
        description=(
            "scikit-learn StandardScaler + LogisticRegression on the iris dataset. Input: rows of"
            " 4 floats (sepal length, sepal width, petal length, petal width in cm). Output:"
            " class label 0=setosa, 1=versicolor, 2=virginica."
        ),
        framework=FRAMEWORK_SKLEARN,
        dataset="iris",
        use_case_type="multinomial_classification",
        make_estimator=_iris_estimator,
    ),
    DemoModel(
        id="demo-xgboost-breast-cancer",
        name="Breast cancer diagnosis (XGBoost)",
        description=(
            "XGBoost XGBClassifier (20 trees) on the Wisconsin breast cancer dataset. Input: rows"
            " of 30 floats. Output (ADS score.py, Booster): probability of class 1 (benign)."
        ),
        framework=FRAMEWORK_XGBOOST,
        dataset="breast_cancer",
        use_case_type="binary_classification",
        make_estimator=_breast_cancer_estimator,
    ),
    DemoModel(
        id="demo-lightgbm-wine",
        name="Wine cultivar (LightGBM)",
        description=(
            "LightGBM LGBMClassifier (20 trees) on the wine dataset. Input: rows of 13 floats."
            " Output: class label 0, 1 or 2."
        ),
        framework=FRAMEWORK_LIGHTGBM,
        dataset="wine",
        use_case_type="multinomial_classification",
        make_estimator=_wine_estimator,
    ),
)

DEMO_MODEL_IDS: tuple[str, ...] = tuple(m.id for m in DEMO_MODELS)


# --------------------------------------------------------------------------------------------
# Local catalog
# --------------------------------------------------------------------------------------------


def _entry_complete(entry_dir: pathlib.Path) -> bool:
    return (entry_dir / METADATA_FILE).is_file() and (entry_dir / ARTIFACT_FILE).is_file()


def _utc_now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def build_demo_entry(demo: DemoModel, entry_dir: pathlib.Path, env: str) -> dict:
    """Train demo and write its metadata.json and artifact.zip into entry_dir (an empty dir)."""
    estimator, X, y = demo.train()
    import pandas as pd

    # Schemas with the dataset's real feature names; the model itself takes positional rows.
    X_sample = pd.DataFrame(X, columns=demo.feature_names())
    y_sample = pd.Series(y, name="target")
    built = build_ads_artifact(
        estimator,
        X_sample,
        y_sample,
        entry_dir / ARTIFACT_FILE,
        use_case_type=demo.use_case_type,
    )
    metadata = {
        "id": demo.id,
        "name": demo.name,
        "version": "1",
        "framework": built["framework"],
        "lifecycle_state": "ACTIVE",
        "compartment_id": "local",
        "project_id": "local",
        "time_created": _utc_now_iso(),
        "description": demo.description,
        "taxonomy_metadata": built["taxonomy_metadata"],
        "custom_metadata": [
            {"key": "env", "value": env, "category": "Other"},
            {"key": "dataset", "value": demo.dataset, "category": "Training and Validation Datasets"},
            {"key": "model_file", "value": built["model_file"], "category": "Other"},
        ],
        "input_schema": built["input_schema"],
        "output_schema": built["output_schema"],
        "artifact": ARTIFACT_FILE,
    }
    # metadata.json last: an entry with metadata.json is complete even before the rename.
    tmp_meta = entry_dir / (METADATA_FILE + ".tmp")
    tmp_meta.write_text(json.dumps(metadata, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp_meta, entry_dir / METADATA_FILE)
    return metadata


@contextlib.contextmanager
def _catalog_lock(catalog_dir: pathlib.Path) -> Iterator[None]:
    """Serialise concurrent builders (several gunicorn workers at start-up) where flock exists."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(catalog_dir / ".demo-build.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _install_entry(tmp_dir: pathlib.Path, final_dir: pathlib.Path) -> None:
    """Rename a fully built entry into place; an incomplete leftover there is moved aside."""
    if final_dir.exists() and not _entry_complete(final_dir):
        trash = pathlib.Path(tempfile.mkdtemp(prefix=f".trash-{final_dir.name}-", dir=final_dir.parent))
        os.rename(final_dir, trash / final_dir.name)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(tmp_dir, final_dir)
    except OSError:
        if _entry_complete(final_dir):  # another builder won the race
            shutil.rmtree(tmp_dir, ignore_errors=True)
            return
        raise


def ensure_demo_catalog(catalog_dir: pathlib.Path, env: str = "dev") -> list[str]:
    """Make sure every demo model exists in catalog_dir (built with `env` metadata if missing).

    Idempotent: complete entries are left untouched (their env metadata too). Returns the ids.
    """
    catalog_dir = pathlib.Path(catalog_dir).resolve()
    catalog_dir.mkdir(parents=True, exist_ok=True)
    missing = [d for d in DEMO_MODELS if not _entry_complete(catalog_dir / d.id)]
    if missing:
        with _catalog_lock(catalog_dir):
            for number, demo in enumerate(missing, 1):
                final_dir = catalog_dir / demo.id
                if _entry_complete(final_dir):
                    continue
                log.info("building demo model %s (%d of %d)...", demo.id, number, len(missing))
                # mkdir, not mkdtemp: the entry gets the umask's mode like every other catalog entry
                # (mkdtemp's 0700), and the lock makes the name ours.
                tmp_dir = catalog_dir / f".tmp-{demo.id}-{os.getpid()}"
                shutil.rmtree(tmp_dir, ignore_errors=True)
                tmp_dir.mkdir()
                try:
                    build_demo_entry(demo, tmp_dir, env)
                    _install_entry(tmp_dir, final_dir)
                except BaseException:
                    shutil.rmtree(tmp_dir, ignore_errors=True)
                    raise
                log.info("built demo model %s in %s", demo.id, final_dir)
    return list(DEMO_MODEL_IDS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m server.demo",
        description="Build the demo models (OCI Data Science artifacts) into a local catalog.",
    )
    parser.add_argument("catalog_dir", type=pathlib.Path)
    parser.add_argument("--env", default="dev", help="value of the models' env metadata (default: dev)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    for model_id in ensure_demo_catalog(args.catalog_dir, env=args.env):
        print(model_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
