"""server/ads_builder.py: artifacts built by oracle-ads itself, offline, for a known framework's estimator."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

pytest.importorskip("ads", reason="oracle-ads (the `demo` extra) builds the artifacts")

from server.ads_builder import build_ads_artifact  # noqa: E402
from server.demo import DEMO_MODELS  # noqa: E402


def test_build_ads_artifact_rejects_other_estimators(tmp_path):
    with pytest.raises(TypeError, match="unsupported estimator"):
        build_ads_artifact(object(), None, None, tmp_path / "a.zip")
    assert not (tmp_path / "a.zip").exists()


def test_build_ads_artifact_returns_metadata_and_restores_ads_auth(tmp_path):
    from ads.common.auth import AuthState
    from sklearn.linear_model import LinearRegression

    state = AuthState()
    before = (state.oci_config_path, state.oci_key_profile, state.oci_iam_type)
    X = np.arange(20, dtype=float).reshape(10, 2)
    y = X @ np.array([1.0, 2.0])
    result = build_ads_artifact(
        LinearRegression().fit(X, y), X, y, tmp_path / "out" / "model.zip", workdir=tmp_path / "w",
    )
    assert (state.oci_config_path, state.oci_key_profile, state.oci_iam_type) == before
    assert result["framework"] == "scikit-learn"
    assert {i["key"]: i["value"] for i in result["taxonomy_metadata"]}["Algorithm"] == "LinearRegression"
    assert isinstance(result["input_schema"], dict) and isinstance(result["output_schema"], dict)
    with zipfile.ZipFile(tmp_path / "out" / "model.zip") as zf:
        assert {"score.py", "runtime.yaml", "model.joblib"} <= set(zf.namelist())


def test_a_build_dir_that_ads_would_empty_fails_loudly(tmp_path):
    estimator, X, y = DEMO_MODELS[0].train()
    with pytest.raises(RuntimeError, match="left .* out of the artifact"):
        build_ads_artifact(estimator, X[:5], y[:5], tmp_path / "a.zip", workdir=tmp_path / "var" / "w")
    assert not (tmp_path / "a.zip").exists()
