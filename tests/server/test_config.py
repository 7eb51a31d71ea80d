from pathlib import Path

import pytest

from server.config import VARIABLES, Config, ConfigError


def test_defaults_serve_the_embedded_catalog_on_loopback():
    config = Config.from_env({})
    assert config.bind == "127.0.0.1:8080" and config.env is None and config.workers >= 2
    assert config.catalog == "local" and config.preload is None and config.demo_models is True
    assert config.catalog_dir == Path("var/catalog") and config.store_dir == Path("var/store")


def test_values_are_read_from_the_environment():
    config = Config.from_env({"MIS_ENV": "prod", "MIS_BIND": "0.0.0.0:9000", "MIS_WORKERS": "4",
                              "MIS_PRELOAD": "a, b,,", "MIS_DEMO_MODELS": "off", "MIS_MAX_BODY_BYTES": "10"})
    assert (config.env, config.bind, config.workers) == ("prod", "0.0.0.0:9000", 4)
    assert config.preload == ("a", "b") and config.demo_models is False and config.max_body_bytes == 10
    assert Config.from_env({"MIS_PRELOAD": ""}).preload == ()


@pytest.mark.parametrize("name, value", [
    ("MIS_BIND", "8080"), ("MIS_BIND", "host:99999"), ("MIS_WORKERS", "0"), ("MIS_WORKERS", "two"),
    ("MIS_CATALOG", "s3"), ("MIS_DEMO_MODELS", "maybe"), ("MIS_MAX_UPLOAD_BYTES", "-1"),
    ("MIS_METADATA_TTL_S", "soon"),
])
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Config.from_env({name: value})


def test_every_variable_is_documented_in_the_readme():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in VARIABLES:
        assert f"`{name}`" in readme, name
