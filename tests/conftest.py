"""Fixtures shared by the server tests: a demo catalog built once, fresh data dirs, app clients."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from falcon import testing

from server.app import build_registry, create_app
from server.config import Config
from server.demo import ensure_demo_catalog
from server.warmup import Warmup


@pytest.fixture(scope="session")
def demo_catalog(tmp_path_factory) -> Path:
    """The demo models, built by oracle-ads once per test session (read-only: copy before use)."""
    root = tmp_path_factory.mktemp("demo") / "catalog"
    ensure_demo_catalog(root)
    return root


@pytest.fixture
def data_dir(tmp_path, demo_catalog) -> Path:
    shutil.copytree(demo_catalog, tmp_path / "catalog")
    return tmp_path


@pytest.fixture
def make_config(data_dir):
    def make(**env: str) -> Config:
        auth = {} if "MIS_API_KEYS_FILE" in env else {"MIS_AUTH": "off"}
        return Config.from_env({"MIS_DATA_DIR": str(data_dir), "MIS_PRELOAD": "", **auth, **env})

    return make


@pytest.fixture
def make_client(make_config):
    """A TestClient over a fresh app whose warmup has finished (MIS_* overrides as keywords)."""

    def make(**env: str) -> testing.TestClient:
        config = make_config(**env)
        registry = build_registry(config)
        warmup = Warmup(registry, config.preload)
        warmup.run()
        return testing.TestClient(create_app(config, registry, warmup))

    return make


@pytest.fixture
def client(make_client) -> testing.TestClient:
    return make_client()

