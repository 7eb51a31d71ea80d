"""server/package.py without oracle-ads: every model file a framework reads becomes an artifact whose
score.py (written for that file and that model) the server runs, answering as the model does."""

from __future__ import annotations

import json
import zipfile

import joblib
import lightgbm
import numpy as np
import pytest
import xgboost
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from server.frameworks.ads import ScoreModuleRuntime
from server.package import PackageError, package

X, Y = load_iris(return_X_y=True)
ROWS = X[::15]


def _booster_predict(booster):
    return booster.predict(xgboost.DMatrix(ROWS)).tolist()


def _forest():
    return RandomForestClassifier(n_estimators=5, random_state=0).fit(X, Y)


def _xgboost_booster():
    return xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(X, Y).get_booster()


def _lightgbm_booster():
    return lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(X, Y).booster_


# file name, how it is saved, framework, model file in the artifact, features, what score.py answers
CASES = {
    "forest.joblib": (lambda m, p: joblib.dump(m, p), _forest, "scikit-learn", "model.joblib", "x",
                      lambda m: m.predict(ROWS).tolist()),
    "forest.pkl": (lambda m, p: joblib.dump(m, p), _forest, "scikit-learn", "model.joblib", "x",
                   lambda m: m.predict(ROWS).tolist()),
    "xgb-classifier.joblib": (lambda m, p: joblib.dump(m, p),
                              lambda: xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(X, Y), "xgboost",
                              "model.joblib", "x", lambda m: m.predict(ROWS).tolist()),
    "booster.json": (lambda m, p: m.save_model(p), _xgboost_booster, "xgboost", "model.json", "x",
                     _booster_predict),
    "booster.ubj": (lambda m, p: m.save_model(p), _xgboost_booster, "xgboost", "model.ubj", "x", _booster_predict),
    "pickled-booster.joblib": (lambda m, p: joblib.dump(m, p), _xgboost_booster, "xgboost", "model.joblib", "x",
                               _booster_predict),
    "booster.txt": (lambda m, p: m.save_model(p), _lightgbm_booster, "lightgbm", "model.txt", "Column_",
                    lambda m: m.predict(ROWS).tolist()),
}


@pytest.mark.parametrize("name", CASES)
def test_each_model_file_becomes_an_artifact_that_scores_as_the_model(tmp_path, name):
    save, make, framework, model_file, prefix, expected = CASES[name]
    model = make()
    save(model, tmp_path / name)
    built = package(tmp_path / name, tmp_path / "out" / "artifact.zip", use_ads=False)
    assert (built.framework, built.model_file, built.writer) == (framework, model_file, "plain")
    assert built.to_dict()["n_features"] == 4 and built.feature_names[0].startswith(prefix)
    with zipfile.ZipFile(built.path) as archive:
        assert set(archive.namelist()) == {"score.py", "runtime.yaml", model_file, "input_schema.json"}
        names = [column["name"] for column in json.loads(archive.read("input_schema.json"))["schema"]]
        archive.extractall(tmp_path / "unpacked")
    assert names == built.feature_names
    runtime = ScoreModuleRuntime("m", tmp_path / "unpacked")
    assert runtime.n_features == 4
    np.testing.assert_allclose(runtime.predict(ROWS.tolist()), expected(model), rtol=1e-6)


def test_an_object_of_no_known_framework_is_refused(tmp_path):
    joblib.dump({"weights": [1, 2]}, tmp_path / "weights.joblib")
    with pytest.raises(PackageError, match="unsupported estimator type builtins.dict: expected a scikit-learn, "
                                           "xgboost or lightgbm model"):
        package(tmp_path / "weights.joblib", tmp_path / "a.zip", use_ads=False)
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(PackageError, match=r"expected \.joblib / \.pkl / \.pickle \(joblib\), \.json / \.ubj "
                                           r"\(XGBoost Booster\) or \.txt \(LightGBM Booster\)"):
        package(tmp_path / "model.onnx", tmp_path / "a.zip", use_ads=False)
    assert not (tmp_path / "a.zip").exists()
