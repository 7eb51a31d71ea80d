"""The demo models, and the embedded demo catalog they are built into.

``ensure_demo_catalog`` trains ``DEMO_MODELS`` (small models on scikit-learn's bundled datasets)
and builds each into a real OCI Data Science artifact with oracle-ads, offline
(server/ads_builder.py), in the local catalog layout read by ``server/backends/local_catalog.py``::

    <catalog_dir>/<model_id>/metadata.json
    <catalog_dir>/<model_id>/artifact.zip

Each entry is built in a dot-named temporary directory inside ``catalog_dir`` and renamed into
place, so a reader never sees half an entry (readers should skip names starting with ``.``).

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
import logging
import os
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .ads_builder import build_ads_artifact
from .catalog import METADATA_FILE, ModelInfo, write_entry

log = logging.getLogger(__name__)

ARTIFACT_FILE = "artifact.zip"


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
        framework="scikit-learn",
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
        framework="xgboost",
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
        framework="lightgbm",
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


def build_demo_entry(demo: DemoModel, entry_dir: pathlib.Path, env: str) -> ModelInfo:
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
    info = ModelInfo(
        id=demo.id,
        name=demo.name,
        version="1",
        framework=built["framework"],
        lifecycle_state="ACTIVE",
        compartment_id="local",
        project_id="local",
        time_created=_utc_now_iso(),
        description=demo.description,
        taxonomy_metadata=built["taxonomy_metadata"],
        custom_metadata=[
            {"key": "env", "value": env, "category": "Other"},
            {"key": "dataset", "value": demo.dataset, "category": "Training and Validation Datasets"},
            {"key": "model_file", "value": built["model_file"], "category": "Other"},
        ],
        input_schema=built["input_schema"],
        output_schema=built["output_schema"],
        artifact=ARTIFACT_FILE,
    )
    write_entry(entry_dir, info)  # last: an entry with metadata.json is complete even before the rename
    return info


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
