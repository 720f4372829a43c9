"""Settings: defaults from config/defaults.toml, overridden by a file and by HASHSVC_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from hashsvc.errors import ConfigError
from hashsvc.settings import DEFAULTS_FILE, load_settings


def test_defaults_come_from_the_config_folder() -> None:
    assert DEFAULTS_FILE.resolve() == (Path(__file__).parents[1] / "config" /
                                       "defaults.toml").resolve()
    s = load_settings(env={})
    assert s.pdq_threshold == 31 and s.decision_rule == "pdq_or_exact"


def test_environment_overrides_and_types(tmp_path: Path) -> None:
    s = load_settings(env={"HASHSVC_PDQ_THRESHOLD": "24", "HASHSVC_MAX_RATIO": "50.5",
                           "HASHSVC_DATA_DIR": str(tmp_path)})
    assert s.pdq_threshold == 24 and s.max_ratio == 50.5
    assert s.data_path == tmp_path
    assert s.db_url == f"sqlite:///{tmp_path / 'hashsvc.sqlite3'}"


def test_config_file_then_environment(tmp_path: Path) -> None:
    conf = tmp_path / "site.toml"
    conf.write_text("[matching]\npdq_threshold = 20\nphash_threshold = 6\n")
    s = load_settings(env={"HASHSVC_CONFIG": str(conf), "HASHSVC_PHASH_THRESHOLD": "4"})
    assert (s.pdq_threshold, s.phash_threshold) == (20, 4)


def test_plain_postgresql_url_uses_psycopg3() -> None:
    s = load_settings(env={"HASHSVC_DATABASE_URL": "postgresql://u@h/db"})
    assert s.db_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize("env", [{"HASHSVC_WORKERS": "many"},
                                 {"HASHSVC_CONFIG": "/nonexistent.toml"}])
def test_bad_settings_are_config_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_settings(env=env)


def test_unknown_key_in_a_config_file_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "site.toml"
    conf.write_text("pdq_treshold = 20\n")
    with pytest.raises(ConfigError, match="pdq_treshold"):
        load_settings(env={"HASHSVC_CONFIG": str(conf)})
