"""OCI Data Science (ADS) artifacts: an unpacked artifact's score.py, imported once under a module
name of its own; `load_model()` is called once, then `predict(data, model=...)` per request, with
the body checked against the artifact's input schema first (server/frameworks/tables.py)."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from ..artifact import read_schema, schema_feature_names
from ..errors import InvalidInput
from .tables import check_features, in_model_order, read_table, refuse_resource_names

_module_numbers = itertools.count()


class ScoreModuleRuntime:
    def __init__(self, model_id: str, artifact_dir: Path):
        self.module_name = f"mis_score_{re.sub(r'[^0-9A-Za-z_]', '_', model_id)}_{next(_module_numbers)}"
        spec = importlib.util.spec_from_file_location(self.module_name, artifact_dir / "score.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[self.module_name] = module  # pickled objects may refer to their module by name
        try:
            with _artifact_imports(artifact_dir):
                spec.loader.exec_module(module)
                self._model = module.load_model()
        except BaseException:
            sys.modules.pop(self.module_name, None)
            raise
        self._predict = module.predict
        self.feature_names = schema_feature_names(read_schema(artifact_dir, "input"))
        self.n_features = len(self.feature_names) if self.feature_names else None

    def predict(self, payload: Any) -> Any:
        result = self._predict(self._checked(payload), model=self._model)
        if isinstance(result, dict) and set(result) == {"prediction"}:
            return result["prediction"]
        return result

    def _checked(self, payload: Any) -> Any:
        """The body for score.py, once checked against the input schema.

        It goes as sent, but for what the checks settle: one row becomes a list of one row (as for
        native models); named columns (a dict of columns, a DataFrame's JSON) are put in the
        schema's order, because score.py hands the model a DataFrame and a model fitted on arrays
        takes its columns by position; and nulls in a dict of numeric columns become NaN, because
        pandas makes an all-null column (one row with a missing value) an object column, which
        XGBoost and LightGBM refuse.
        """
        try:
            table = read_table(payload)
        except InvalidInput:
            if self.n_features is not None:
                raise
            refuse_resource_names(payload)
            return payload  # no input schema: a body that is not a table may be this score.py's own format
        check_features(table, self.n_features, self.feature_names)
        names = self.feature_names or table.columns
        if table.form == "rows" and not isinstance(table.source[0], list):
            data = [table.source]
        elif table.form == "columns" and table.values.dtype == np.float64 and np.isnan(table.values).any():
            data = dict(zip(names, in_model_order(table, names).T.tolist()))
        elif table.columns is not None and table.columns != names:
            data = _in_order(table.source, names)
            if table.form == "frame_json":
                data = json.dumps(data)
        else:
            return payload
        return {**payload, "data": data} if isinstance(payload, dict) and "data" in payload else data

    @property
    def predict_proba(self) -> Callable[[Any], list] | None:
        """score.py defines predict only: probabilities come from the model load_model() gave, when
        it is a classifier, on the checked table in the schema's column order."""
        if not callable(getattr(self._model, "predict_proba", None)):
            return None

        def probabilities(payload: Any) -> list:
            table = read_table(payload)
            check_features(table, self.n_features, self.feature_names)
            matrix = in_model_order(table, self.feature_names)
            if getattr(self._model, "feature_names_in_", None) is not None:  # fitted on a DataFrame
                matrix = pd.DataFrame(matrix, columns=self.feature_names)
            return np.asarray(self._model.predict_proba(matrix)).tolist()

        return probabilities

    def prepare(self) -> None:
        pass  # the artifact's score.py is foreign code: it predicts as it was written

    def close(self) -> None:
        sys.modules.pop(self.module_name, None)


def _in_order(columns: Any, names: list[str]) -> Any:
    """A dict of columns, or a DataFrame's records, with the columns in the order of `names`."""
    if isinstance(columns, dict):
        return {name: columns[name] for name in names}
    return [{name: record.get(name) for name in names} for record in columns]


@contextlib.contextmanager
def _artifact_imports(artifact_dir: Path) -> Iterator[None]:
    """Make the artifact's own modules importable, without sharing them with any other artifact.

    Two artifacts may both ship e.g. `features.py`. Modules of those names are set aside while this
    score.py imports its own, and this artifact's are dropped from sys.modules afterwards (score.py
    keeps its references), so the next artifact's `import features` finds its own file.
    """
    local = {p.stem for p in artifact_dir.glob("*.py")} | {
        p.parent.name for p in artifact_dir.glob("*/__init__.py")
    }
    local.discard("score")

    def ours(name: str) -> bool:
        return name.split(".")[0] in local

    set_aside = {name: sys.modules.pop(name) for name in list(sys.modules) if ours(name)}
    saved_path = list(sys.path)  # ADS's score.py adds its folder to sys.path too: undo that as well
    sys.path.insert(0, str(artifact_dir))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path[:] = saved_path
        for name in [n for n in sys.modules if ours(n)]:
            del sys.modules[name]
        sys.modules.update(set_aside)
