"""server/frameworks/__init__.py, the framework registry: every framework table of the server is the
registry's list, and adding a framework is one module (a tiny one, written here, is served,
labelled, checked, packaged and named in the help without any other file knowing it)."""

from __future__ import annotations

import platform
import textwrap
import zipfile

import pytest
from falcon import testing

from server import frameworks
from server.app import build_registry, create_app
from server.cli import build_parser
from server.config import Config
from server.environment import Needs, ServerEnvironment, check_environment, library_versions
from server.errors import EnvIncompatible
from server.frameworks import FRAMEWORKS, framework_of_artifact, module_of, open_runtime, package_reader
from server.package import PackageError, package
from server.warmup import Warmup

from ..protocols.test_v1 import upload


def package_help(capsys) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["package", "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_unknown_model_file_has_no_runtime(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="no runtime"):
        open_runtime("m", tmp_path / "model.onnx")


def test_what_the_server_knows_of_frameworks_is_the_registrys_list(tmp_path, capsys):
    labels = set()
    for framework in FRAMEWORKS:
        for suffix in framework.suffixes:
            unpacked = tmp_path / f"{framework.module}{suffix}"
            unpacked.mkdir()
            (unpacked / f"model{suffix}").write_bytes(b"")
            labels.add(framework_of_artifact(unpacked))
        for name in framework.names:
            assert module_of(name) == module_of(name.upper()) == framework.module
        for suffix in framework.packages:
            assert package_reader(tmp_path / f"trained{suffix.upper()}") is framework
    assert labels == {framework.name for framework in FRAMEWORKS}
    assert framework_of_artifact(tmp_path) == "other" and module_of("catboost") is None
    assert list(library_versions()) == ["numpy", "pandas", *(framework.module for framework in FRAMEWORKS)]
    text = package_help(capsys)
    assert all(suffix in text and framework.name in text for framework in FRAMEWORKS for suffix in framework.packages)


# -- a framework added as one module ----------------------------------------------------------

# A library, as pip would install it: a linear model saved as JSON.
TINYML = '''
import json

__version__ = "0.1.0"


class Model:
    def __init__(self, weights):
        self.weights = list(weights)

    def predict(self, rows):
        return [sum(w * v for w, v in zip(self.weights, row)) for row in rows]

    def save(self, path):
        with open(path, "w") as out:
            json.dump(self.weights, out)


def load(path):
    with open(path) as source:
        return Model(json.load(source))
'''

# Its framework module, as it would be written in server/frameworks/ (only imports change there).
TINY_FRAMEWORK = '''
from server.frameworks.base import Framework
from server.frameworks.tables import native_matrix


class TinyRuntime:
    predict_proba = None

    def __init__(self, model):
        self._model = model
        self.n_features = len(model.weights)
        self.feature_names = None

    def predict(self, payload):
        return [float(value) for value in self._model.predict(native_matrix(payload, self))]

    def prepare(self):
        pass

    def close(self):
        pass


def _read(path):
    import tinyml

    return tinyml.load(path)


FRAMEWORK = Framework(name="tiny", aliases=("TinyML",), module="tinyml", suffixes=(".tiny",), read=_read,
                      runtime=TinyRuntime, packages={".tiny": "model.tiny"}, reads_as="tinyml Model.save",
                      score_load="import tinyml\\n\\nreturn tinyml.load(path)",
                      feature_names=lambda model: [f"w{i}" for i in range(len(model.weights))],
                      ads_model="ads.model.generic_model.GenericModel")
'''


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """The tiny framework in the registry's list, and a model file of it: weights 1, 2, 3."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "tinyml.py").write_text(textwrap.dedent(TINYML))
    (code / "tiny_framework.py").write_text(textwrap.dedent(TINY_FRAMEWORK))
    monkeypatch.syspath_prepend(str(code))
    import tiny_framework
    import tinyml

    monkeypatch.setattr(frameworks, "FRAMEWORKS", (*FRAMEWORKS, tiny_framework.FRAMEWORK))
    tinyml.Model([1.0, 2.0, 3.0]).save(tmp_path / "trained.tiny")
    return tmp_path / "trained.tiny"


def test_a_framework_module_is_served_packaged_labelled_checked_and_named(tiny, tmp_path, capsys):
    runtime = open_runtime("m", tiny)
    assert runtime.n_features == 3 and runtime.predict([1, 1, 1]) == [6.0]

    built = package(tiny, tmp_path / "tiny.zip", use_ads=False)
    assert (built.framework, built.model_file, built.feature_names) == ("tiny", "model.tiny", ["w0", "w1", "w2"])
    members = set(zipfile.ZipFile(built.path).namelist())
    assert {"score.py", "runtime.yaml", "model.tiny", "input_schema.json"} <= members

    config = Config.from_env({"MIS_DATA_DIR": str(tmp_path / "data"), "MIS_PRELOAD": "", "MIS_AUTH": "off"})
    registry = build_registry(config)
    warmup = Warmup(registry, config.preload)
    warmup.run()
    client = testing.TestClient(create_app(config, registry, warmup))
    uploaded = upload(client, built.path, model_name="tiny")
    assert uploaded.status_code == 201, uploaded.text
    model_id = uploaded.json["model_id"]
    assert client.simulate_get(f"/api/v1/getmodelinfo/{model_id}").json["framework"] == "tiny"
    scored = client.simulate_post("/api/v1/score/", params={"model_id": model_id}, json=[[1, 0, 0], [0, 0, 2]])
    assert scored.json["prediction"] == [1.0, 6.0]  # its score.py, written by `mis package`
    assert client.simulate_post("/api/v1/score/", params={"model_id": model_id}, json=[[1, 0]]).status_code == 422

    server = ServerEnvironment(None, platform.python_version())
    assert check_environment("m", Needs("generalml", None, "tinyml", "0.1.9"), server, "strict") == [
        "it was saved with tinyml 0.1.9; this server has 0.1.0"]
    with pytest.raises(EnvIncompatible, match="saved with TinyML 1.0; this server has 0.1.0"):
        check_environment("m", Needs("generalml", None, "TinyML", "1.0"), server, "strict")
    assert library_versions.__wrapped__()["tinyml"] == "0.1.0"

    assert "or .tiny (tinyml Model.save)" in package_help(capsys)
    (tmp_path / "trained.onnx").write_bytes(b"")
    with pytest.raises(PackageError, match=r"expected .*\.tiny \(tinyml Model.save\)"):
        package(tmp_path / "trained.onnx", tmp_path / "onnx.zip", use_ads=False)
