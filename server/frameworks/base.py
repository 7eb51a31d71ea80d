"""What a framework declares once (`Framework`), and what the server holds a loaded model as (`Runtime`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol


class Runtime(Protocol):
    n_features: int | None
    feature_names: list[str] | None

    def predict(self, payload: Any) -> Any: ...

    @property
    def predict_proba(self) -> Callable[[Any], Any] | None:
        """Class probabilities for a classifier; None for a model that has none."""

    def prepare(self) -> None:
        """Get ready to predict in this process (after a fork): compile fast paths and the like."""

    def close(self) -> None: ...


def _no_names(model: Any) -> list[str] | None:
    return None


@dataclass(frozen=True)
class Framework:
    """Everything the server knows about one ML library, in the library's own module.

    Serving: the native model files it opens (`suffixes`; in an unpacked artifact `model<suffix>`
    labels the upload with `name`), and how (`read` the file, then `runtime` over what it holds).
    Environment checks: the `module` whose version is compared with what a catalog's taxonomy names
    (`name` or an alias, any case). Packaging (`mis package`): the files it reads (`packages`: suffix
    -> the model file the artifact gets; `reads_as` says what they are), the lines of score.py that
    load that file (`score_load`, with `path` its path) and that turn the rows into what the model
    predicts on (`score_predict`, `table` the rows), the feature names of a model object beyond
    scikit-learn's `feature_names_in_`, and oracle-ads' model class. An estimator object belongs to
    the framework whose `module` defines its class.
    """

    name: str
    aliases: tuple[str, ...]
    module: str
    suffixes: tuple[str, ...]
    read: Callable[[Path], Any]
    runtime: Callable[[Any], Runtime]
    packages: Mapping[str, str]
    reads_as: str
    score_load: str
    ads_model: str  # "package.module.Class"
    score_predict: str = ""
    feature_names: Callable[[Any], list[str] | None] = field(default=_no_names)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def owns(self, estimator: Any) -> bool:
        return type(estimator).__module__.split(".", 1)[0] == self.module

    def open(self, path: Path) -> Runtime:
        return self.runtime(self.read(path))
