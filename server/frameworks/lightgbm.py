"""LightGBM: a Booster saved as text, scored with `Booster.predict`; a classifier answers the class
index, as LGBMClassifier does for 0..k-1 labels. The exact fast path is the library's own C API for
single rows. `FRAMEWORK`, at the end, is what the framework registry reads."""

from __future__ import annotations

import ctypes
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from .base import Framework
from .boosters import BoosterRuntime
from .trees import Compiled, Scorer


class LightGBMRuntime(BoosterRuntime):
    """Booster.predict; classifiers answer the class index, as LGBMClassifier does for 0..k-1 labels."""

    def __init__(self, booster: Any):
        self._booster = booster
        self.n_features = booster.num_feature() or None
        self.feature_names = booster.feature_name()  # Column_0... when fitted on an array
        objective = str(booster.params.get("objective", ""))
        self.binary_threshold = 0.5 if objective in ("binary", "cross_entropy") else None
        self.multiclass = objective in ("multiclass", "softmax", "multiclassova")

    def library_scores(self, matrix: np.ndarray) -> np.ndarray:
        return self._booster.predict(matrix)

    def compile(self) -> Scorer | None:
        return compile_lightgbm(self._booster)


# -- the fast path ----------------------------------------------------------------------------

def compile_lightgbm(booster: Any) -> Scorer | None:
    """`booster.predict(X)` (all trees or the best iteration, as Booster.predict picks), or None."""
    try:
        model = _lightgbm_model(booster)
    except Exception:  # noqa: BLE001 - the C API refused this booster (or is not there): the library path it is
        return None
    rng = np.random.default_rng(0)
    probes = rng.normal(size=(64, model.n_features)) * rng.choice([0.1, 1, 10, 1000], size=(64, 1))
    probes[rng.random(probes.shape) < 0.2] = np.nan
    probes[rng.random(probes.shape) < 0.1] = 0.0
    return model.checked(probes).predict


def _lightgbm_model(booster: Any) -> Compiled:
    """Booster.predict through LightGBM's single-row C API: the library's own predictor on the
    library's own row reader (the one LGBM_BoosterPredictForMat uses), so it takes every value
    as the library does (NaN, Infinity). What it saves is the per-call Python and the per-call
    parsing of the prediction parameters in C. Several rows go to Booster.predict.

    The C handle serialises concurrent calls with its own mutex and each call writes its own
    buffer, so threads may share the function."""
    from lightgbm.basic import _LIB, _safe_call

    n_features, n_out = booster.num_feature(), booster.num_model_per_iteration()
    handle = _LightGBMRowHandle(booster, n_features)
    # Its own function object, so that its argument types (which skip ctypes' slow pointer
    # conversions) do not change the one lightgbm calls.
    predict_row = ctypes.CDLL(_LIB._name).LGBM_BoosterPredictForMatSingleRowFast
    predict_row.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int64),
                            ctypes.POINTER(ctypes.c_double)]
    predict_row.restype = ctypes.c_int
    out_type = ctypes.c_double * n_out

    def one_row(X: np.ndarray, has_nan: bool) -> np.ndarray:
        if len(X) != 1:
            return booster.predict(X)
        out, length = out_type(), ctypes.c_int64()
        _safe_call(predict_row(handle.value, X.tobytes(), length, out))  # tobytes: the row, C order
        if length.value != n_out:
            raise ValueError("unexpected prediction length")
        return np.array(out).reshape(1, n_out) if n_out > 1 else np.array(out)

    return Compiled(n_features=n_features, predict_kernel=one_row, predict_library=booster.predict, nan_ok=True,
                  any_value=True, max_rows=1)


class _LightGBMRowHandle:
    """LightGBM's single-row prediction handle ("FastConfig"), freed with this object. It points
    into the booster, which this object keeps alive."""

    def __init__(self, booster: Any, n_features: int):
        from lightgbm.basic import _LIB, _c_str, _safe_call

        self.booster = booster
        handle = ctypes.c_void_p()
        _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle, ctypes.c_int(0),  # normal prediction (not raw, leaf or contributions)
            ctypes.c_int(0), ctypes.c_int(booster.best_iteration),  # what Booster.predict picks without num_iteration
            ctypes.c_int(1), ctypes.c_int32(n_features),  # float64 rows
            _c_str(""), ctypes.byref(handle)))
        self.value = handle.value
        weakref.finalize(self, _LIB.LGBM_FastConfigFree, handle).atexit = False


# -- the declaration ---------------------------------------------------------------------------

def _read(path: Path) -> Any:
    import lightgbm

    return lightgbm.Booster(model_file=str(path))


def _feature_names(model: Any) -> list[str] | None:
    """A Booster's names (Column_0, ... when it was fitted on an array)."""
    return model.feature_name() if hasattr(model, "feature_name") and hasattr(model, "num_feature") else None


FRAMEWORK = Framework(
    name="lightgbm",
    aliases=(),
    module="lightgbm",
    suffixes=(".txt",),
    read=_read,
    runtime=LightGBMRuntime,
    packages={".txt": "model.txt"},
    reads_as="LightGBM Booster",
    score_load="""\
import lightgbm

return lightgbm.Booster(model_file=path)""",
    feature_names=_feature_names,
    ads_model="ads.model.framework.lightgbm_model.LightGBMModel",
)
