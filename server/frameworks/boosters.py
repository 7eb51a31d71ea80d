"""What the XGBoost and LightGBM runtimes share: a booster's raw scores, turned into class labels
and probabilities as the libraries' scikit-learn wrappers turn them."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .tables import native_matrix
from .trees import Scorer


class BoosterRuntime:
    """Binary classifiers compare the score with a threshold, multiclass ones take the argmax."""

    n_features: int | None
    feature_names: list[str] | None
    binary_threshold: float | None = None
    multiclass: bool = False

    _fast: Scorer | None = None

    def library_scores(self, matrix: np.ndarray) -> np.ndarray: ...

    def compile(self) -> Scorer | None: ...

    def prepare(self) -> None:
        """In the process that will predict (compiling checks itself by predicting; the gunicorn
        master only loads): the exact fast path, when the booster has one."""
        self._fast = self.compile()

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        return self._fast(matrix) if self._fast is not None else self.library_scores(matrix)

    def predict(self, payload: Any) -> list:
        scores = self.scores(native_matrix(payload, self))
        if self.binary_threshold is not None:
            return (scores > self.binary_threshold).astype(np.int64).tolist()
        if self.multiclass:
            return np.argmax(scores, axis=1).tolist()
        return scores.tolist()

    @property
    def predict_proba(self) -> Callable[[Any], list] | None:
        """Class probabilities of a classifier, as the scikit-learn wrapper's predict_proba gives
        them: a binary booster's score is the positive class's."""
        if self.binary_threshold is None and not self.multiclass:
            return None

        def probabilities(payload: Any) -> list:
            scores = self.scores(native_matrix(payload, self))
            if self.multiclass:
                return scores.tolist()
            positive = self.binary_probability(scores)
            return np.column_stack([1 - positive, positive]).tolist()

        return probabilities

    def binary_probability(self, scores: np.ndarray) -> np.ndarray:
        return scores

    def close(self) -> None:
        pass
