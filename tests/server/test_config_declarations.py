"""Every MIS_* variable is declared once (server/config.py), and README.md's tables are the declarations."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from server.config import SETTINGS, Config, markdown_table

REPO = Path(__file__).resolve().parents[2]
TABLE = re.compile(r"^\| Variable \| Default \| Meaning \|\n(?:\|.*\n)+", re.M)


def test_readme_tables_are_the_declarations():
    tables = [table.rstrip("\n") for table in TABLE.findall((REPO / "README.md").read_text())]
    assert tables == [markdown_table(oci=False), markdown_table(oci=True)], (
        "README.md's configuration tables differ from server/config.py: paste `python -m server.config --markdown`")


def test_the_tables_are_printed_for_pasting():
    printed = subprocess.run([sys.executable, "-m", "server.config", "--markdown"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    assert printed == f"{markdown_table(oci=False)}\n\n{markdown_table(oci=True)}\n"


def test_every_field_of_the_config_is_one_declared_variable():
    declared = [field.metadata.get("setting") for field in dataclasses.fields(Config)]
    assert None not in declared
    assert [setting.name for setting in declared] == list(SETTINGS)
    assert len(set(SETTINGS)) == len(declared)
    assert all(name.startswith("MIS_") for name in SETTINGS)


@pytest.mark.parametrize("setting", SETTINGS.values(), ids=lambda setting: setting.name)
def test_every_setting_has_a_doc_and_a_default_that_passes_its_own_checks(setting):
    assert setting.doc.strip() and "\n" not in setting.doc and "|" not in setting.doc
    assert setting.default or setting.shown, "an empty default is shown as what it means, e.g. (unset)"
    setting.read(setting.name, setting.default)


def test_the_defaults_make_the_config_that_no_variable_makes():
    # MIS_AUTH=off: the one default the cross-field rules refuse is authentication with no keys file.
    config = Config.from_env({"MIS_AUTH": "off"})
    for field in dataclasses.fields(Config):
        setting = field.metadata["setting"]
        if setting.name not in ("MIS_AUTH", "MIS_UPLOAD_ENVS"):  # MIS_UPLOAD_ENVS unset, ungated: any env
            assert getattr(config, field.name) == setting.read(setting.name, setting.default), setting.name
    assert config.auth is False and config.upload_envs is None


def test_a_log_level_logging_does_not_know_is_refused_by_name():
    """Workers would otherwise fail in logging.basicConfig with a traceback naming no variable."""
    assert Config.from_env({"MIS_AUTH": "off", "MIS_LOG_LEVEL": "WARNING"}).log_level == "warning"
    assert Config.from_env({"MIS_AUTH": "off", "MIS_LOG_LEVEL": "warn"}).log_level == "warning"
    with pytest.raises(ValueError, match="MIS_LOG_LEVEL must be one of debug, info, warning, warn, error, critical"):
        Config.from_env({"MIS_AUTH": "off", "MIS_LOG_LEVEL": "verbose"})
