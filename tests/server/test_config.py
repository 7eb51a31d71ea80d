from pathlib import Path

import pytest

from server.config import SETTINGS, Config, ConfigError


def test_defaults_serve_the_embedded_catalog_on_loopback():
    config = Config.from_env({"MIS_AUTH": "off"})
    assert config.bind == "127.0.0.1:8080" and config.env is None and config.workers >= 2
    assert config.catalog == "local" and config.preload is None and config.demo_models is True
    assert config.catalog_dir == Path("var/catalog") and config.store_dir == Path("var/store")


def test_values_are_read_from_the_environment():
    config = Config.from_env({"MIS_ENV": "prod", "MIS_BIND": "0.0.0.0:9000", "MIS_WORKERS": "4",
                              "MIS_PRELOAD": "a, b,,", "MIS_DEMO_MODELS": "off", "MIS_MAX_BODY_BYTES": "10",
                              "MIS_API_KEYS_FILE": "/etc/mis/keys.json"})
    assert (config.env, config.bind, config.workers) == ("prod", "0.0.0.0:9000", 4)
    assert config.preload == ("a", "b") and config.demo_models is False and config.max_body_bytes == 10
    assert config.api_keys_file == Path("/etc/mis/keys.json")
    assert Config.from_env({"MIS_PRELOAD": "", "MIS_AUTH": "off"}).preload == ()


@pytest.mark.parametrize("name, value", [
    ("MIS_BIND", "8080"), ("MIS_BIND", "host:99999"), ("MIS_WORKERS", "0"), ("MIS_WORKERS", "two"),
    ("MIS_CATALOG", "s3"), ("MIS_DEMO_MODELS", "maybe"), ("MIS_MAX_UPLOAD_BYTES", "-1"),
    ("MIS_METADATA_TTL_S", "soon"), ("MIS_AUTH", "maybe"), ("MIS_ERROR_DETAIL", "some"),
])
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Config.from_env({"MIS_AUTH": "off", name: value})


def test_authentication_is_on_unless_turned_off_explicitly():
    with pytest.raises(ConfigError, match="MIS_API_KEYS_FILE is not set.*MIS_AUTH=off"):
        Config.from_env({})
    assert Config.from_env({"MIS_AUTH": "off"}).api_keys_file is None


@pytest.mark.parametrize("bind", ["0.0.0.0:8080", "[::]:8080", "10.0.0.5:8080", "mis.example.com:8080"])
def test_no_authentication_beyond_loopback(bind):
    with pytest.raises(ConfigError, match="only on a loopback MIS_BIND.*set MIS_API_KEYS_FILE"):
        Config.from_env({"MIS_AUTH": "off", "MIS_BIND": bind})


@pytest.mark.parametrize("bind", ["127.0.0.1:8080", "127.8.9.1:80", "[::1]:8080", "localhost:8080"])
def test_loopback_binds_may_run_without_authentication(bind):
    assert Config.from_env({"MIS_AUTH": "off", "MIS_BIND": bind}).api_keys_file is None


def test_turning_authentication_off_with_a_keys_file_is_a_contradiction():
    with pytest.raises(ConfigError, match="both set"):
        Config.from_env({"MIS_AUTH": "off", "MIS_API_KEYS_FILE": "/k.json"})


@pytest.mark.parametrize("env, upload_envs, expected", [
    (None, "", None),  # ungated: the env an upload claims is only a label
    ("prod", "", frozenset()),  # gated: uploads start with no env and an admin promotes them
    ("dev", "dev, qa", frozenset({"dev", "qa"})),
    ("prod", "*", None),
])
def test_which_envs_uploads_may_claim(env, upload_envs, expected):
    config = Config.from_env({"MIS_AUTH": "off", "MIS_ENV": env or "", "MIS_UPLOAD_ENVS": upload_envs})
    assert config.upload_envs == expected


def test_every_variable_is_documented_in_the_readme():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in SETTINGS:
        assert f"`{name}`" in readme, name


# Every numeric MIS_* variable, its smallest accepted value and a value just below it.
MINIMUMS = [
    ("MIS_WORKERS", "1", "0"), ("MIS_THREADS", "1", "0"), ("MIS_TIMEOUT_S", "1", "0"),
    ("MIS_PREDICT_TIMEOUT_S", "0.01", "0.009"), ("MIS_QUARANTINE_STRIKES", "1", "0"),
    ("MIS_QUARANTINE_WINDOW_S", "1", "0.999"), ("MIS_MODEL_OUTPUT_BYTES", "0", "-1"),
    ("MIS_HEADER_TIMEOUT_S", "0.1", "0.099"), ("MIS_BODY_TIMEOUT_S", "0.1", "0.099"), ("MIS_KEEPALIVE_S", "0", "-1"),
    ("MIS_GRACEFUL_TIMEOUT_S", "1", "0"), ("MIS_STATE_TTL_S", "0.1", "0.099"), ("MIS_MAX_LOADED_MODELS", "0", "-1"),
    ("MIS_METADATA_TTL_S", "0", "-0.001"), ("MIS_MAX_BODY_BYTES", "1", "0"), ("MIS_MAX_UPLOAD_BYTES", "1", "0"),
    ("MIS_MAX_ARTIFACT_BYTES", "1", "0"), ("MIS_OCI_TIMEOUT_S", "0.1", "0.099"), ("MIS_OCI_ATTEMPTS", "1", "0"),
]
# The OCI variables are read only where a backend is on OCI.
ON_OCI = {"MIS_AUTH": "off", "MIS_STORE": "oci", "MIS_OCI_BUCKET": "models"}


@pytest.mark.parametrize("name, minimum, below", MINIMUMS, ids=[row[0] for row in MINIMUMS])
def test_each_number_is_accepted_at_its_minimum_and_refused_below_it_by_name(name, minimum, below):
    base = ON_OCI if name.startswith("MIS_OCI_") else {"MIS_AUTH": "off"}
    at_minimum = Config.from_env({**base, name: minimum})
    above = Config.from_env({**base, name: str(float(minimum) + 1 if "." in minimum else int(minimum) + 1)})
    assert at_minimum != above, f"{name}={minimum} was not read"
    with pytest.raises(ConfigError, match=rf"\b{name}\b"):
        Config.from_env({**base, name: below})


def test_the_table_of_minimums_covers_every_numeric_variable():
    def numeric(default: str) -> bool:
        try:
            float(default)
        except ValueError:
            return False
        return True

    assert {name for name, setting in SETTINGS.items() if numeric(setting.default)} == {row[0] for row in MINIMUMS}
