"""Hive-wide settings: hyperhive.toml, environment overrides, clear refusals."""

import pytest

from hyperhive.errors import BadInput
from hyperhive.home import Home
from hyperhive.settings import load_settings


def test_defaults_without_a_file(tmp_path):
    s = load_settings(Home(tmp_path), {})
    assert s.retention.failed_days == 30 and s.retention.prune_at == "03:30"
    assert s.git.max_push_bytes == 50 * 1024 * 1024
    assert s.telemetry.stuck_minutes == 15


def test_file_then_environment(tmp_path):
    (tmp_path / "hyperhive.toml").write_text(
        '[retention]\nfailed_days = 0\nprune_at = "23:05"\n[telemetry]\nstuck_minutes = 5\n'
    )
    s = load_settings(Home(tmp_path), {"HYPERHIVE_RETENTION_FAILED_DAYS": "7"})
    assert s.retention.failed_days == 7  # the environment wins (the NixOS module's way)
    assert s.retention.prune_at == "23:05" and s.telemetry.stuck_minutes == 5


@pytest.mark.parametrize(
    "toml, env, message",
    [
        ("[retention]\nfailed_dayz = 3\n", {}, "unknown key retention.failed_dayz"),
        ("[retension]\n", {}, "unknown section [retension]"),
        ('[retention]\nfailed_days = "3"\n', {}, "retention.failed_days must be int"),
        ("[retention]\nfailed_days = -1\n", {}, "at least 0"),
        ('[retention]\nprune_at = "25:00"\n', {}, "HH:MM"),
        ("[git]\nmax_push_bytes = 0\n", {}, "git.max_push_bytes must be at least 1"),
        ("[retention\n", {}, "hyperhive.toml"),
        ("", {"HYPERHIVE_TELEMETRY_RAW_HOURS": "lots"}, "must be an integer"),
    ],
)
def test_bad_settings_are_named(tmp_path, toml, env, message):
    (tmp_path / "hyperhive.toml").write_text(toml)
    with pytest.raises(BadInput, match=None) as e:
        load_settings(Home(tmp_path), env)
    assert message in str(e.value)
