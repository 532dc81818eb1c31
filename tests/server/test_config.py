"""Settings: create_app argument > XNAT_ML_<NAME> environment variable > default, each resolved
once with its type checked; a bad value is one line naming the setting; docs/server.md lists
every setting as config.py does."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from xnat_ml.server.app import create_app
from xnat_ml.server.config import SETTINGS, ConfigError, resolve

DOCS = Path(__file__).resolve().parents[2] / "docs" / "server.md"

# For each setting: (an argument value, the environment text of another value, that value).
SAMPLES = {
    "SITE_ID": ("ARG", "ENV", "ENV"),
    "XNAT_VERSION": ("1.8.9", "1.8.11", "1.8.11"),
    "SITE_URL": ("http://arg:1", "http://env:2", "http://env:2"),
    "ADMIN_PASSWORD": ("arg-pw", "env-pw", "env-pw"),
    "SESSION_LIFETIME_S": (10, "20", 20),
    "TOKEN_LIFETIME_S": (10, "20", 20),
    "MAX_CONTENT_LENGTH": (1000, "2000", 2000),
    "EXTRACT_MAX_BYTES": (10, "20", 20),
    "EXTRACT_MAX_FILES": (10, "20", 20),
    "DISK_RESERVE_BYTES": (0, "20", 20),
    "CONTAINER_BACKEND": ("docker", "slurm", "slurm"),
    "CONTAINER_WORKERS": (1, "2", 2),
    "CONTAINER_MAX_ATTEMPTS": (1, "5", 5),
    "CONTAINER_BACKEND_OPTIONS": ({"a": 1}, '{"b": [2]}', {"b": [2]}),
    "CONTAINER_RAW_INPUTS": (["c:i"], '["d:j"]', ["d:j"]),
    "EVENT_SERVICE_ENABLED": (False, "false", False),
}
# For each setting: a value that must be refused, as environment text.
BAD = {
    "SITE_ID": "MY SITE", "XNAT_VERSION": "1.8\n", "SITE_URL": "ftp://x",
    "ADMIN_PASSWORD": "pw\x00",
    "SESSION_LIFETIME_S": "0", "TOKEN_LIFETIME_S": "soon", "MAX_CONTENT_LENGTH": "-1",
    "EXTRACT_MAX_BYTES": "1e9", "EXTRACT_MAX_FILES": "many", "DISK_RESERVE_BYTES": "4 MB",
    "CONTAINER_BACKEND": "kubernetes", "CONTAINER_WORKERS": "0",
    "CONTAINER_MAX_ATTEMPTS": "none", "CONTAINER_BACKEND_OPTIONS": "[1]",
    "CONTAINER_RAW_INPUTS": '["no-colon"]',
    "EVENT_SERVICE_ENABLED": "maybe",
}  # fmt: skip


def test_every_setting_has_samples():
    assert set(SAMPLES) == set(BAD) == {s.name for s in SETTINGS}


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_argument_beats_environment_beats_default(setting):
    argument, env_text, env_value = SAMPLES[setting.name]
    environ = {setting.env: env_text}
    name = setting.name.lower()
    assert resolve({name: argument}, environ)[setting.name] == argument
    assert resolve({name: None}, environ)[setting.name] == env_value
    assert resolve({}, environ)[setting.name] == env_value
    assert resolve({}, {})[setting.name] == setting.default
    assert setting.default != env_value and setting.default != argument


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_a_bad_value_is_one_line_naming_the_setting_and_the_value(setting):
    bad = BAD[setting.name]
    with pytest.raises(ConfigError) as caught:
        resolve({}, {setting.env: bad})
    message = str(caught.value)
    assert "\n" not in message and setting.name in message and repr(bad) in message
    assert setting.env in message  # where the value came from
    with pytest.raises(ConfigError, match=f"argument {setting.name.lower()}"):
        resolve({setting.name.lower(): bad}, {})


def test_an_empty_variable_is_not_given():
    empty = {"XNAT_ML_SITE_URL": "", "XNAT_ML_CONTAINER_WORKERS": ""}
    assert resolve({}, empty) == resolve({}, {})


def test_an_unknown_argument_is_refused():
    with pytest.raises(ConfigError, match="unknown setting.*container_worker\\b"):
        resolve({"container_worker": 2}, {})


def test_a_list_default_is_not_shared_between_apps():
    first, second = resolve({}, {}), resolve({}, {})
    first["CONTAINER_RAW_INPUTS"].append("x:y")
    assert second["CONTAINER_RAW_INPUTS"] == []


def test_create_app_reads_the_environment_and_refuses_bad_values(tmp_path, monkeypatch):
    monkeypatch.setenv("XNAT_ML_SITE_ID", "ENVSITE")
    monkeypatch.setenv("XNAT_ML_CONTAINER_WORKERS", "2")
    app = create_app(tmp_path / "a", container_workers="1")
    assert app.config["SITE_ID"] == "ENVSITE" and app.config["CONTAINER_WORKERS"] == 1
    monkeypatch.setenv("XNAT_ML_TOKEN_LIFETIME_S", "two days")
    with pytest.raises(ConfigError, match="^setting TOKEN_LIFETIME_S"):
        create_app(tmp_path / "b")
    assert not (tmp_path / "b").exists()  # nothing half-made


def test_the_docs_table_lists_every_setting_as_config_does():
    text = DOCS.read_text()
    rows = {
        m["name"]: m
        for m in re.finditer(
            r"^\| `(?P<name>[A-Z_]+)` \| `(?P<env>[A-Z_]+)` \| (?P<default>[^|]*) \|", text, re.M
        )
    }
    assert set(rows) == {s.name for s in SETTINGS}
    for setting in SETTINGS:
        assert rows[setting.name]["env"] == setting.env
        default = rows[setting.name]["default"].strip().strip("`")
        shown = "unset" if setting.default is None else _shown(setting.default)
        assert default == shown, setting.name


def _shown(default) -> str:
    if isinstance(default, bool):
        return str(default).lower()
    return json.dumps(default) if isinstance(default, dict | list) else str(default)
