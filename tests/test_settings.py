"""Hive-wide settings: hyperhive.toml, environment overrides, clear refusals."""

import pytest

from hyperhive.errors import BadInput, BadSettings
from hyperhive.home import Home
from hyperhive.settings import load_settings


def test_defaults_without_a_file(tmp_path):
    s = load_settings(Home(tmp_path), {})
    assert s.retention.failed_days == 30 and s.retention.prune_at == "03:30"
    assert s.git.max_push_bytes == 50 * 1024 * 1024
    assert s.telemetry.stuck_minutes == 15
    assert (s.forge.session_hours, s.forge.idle_minutes, s.forge.proxy_hops) == (12, 60, 0)
    assert (s.http.header_seconds, s.http.body_seconds, s.http.io_seconds) == (10, 30, 60)
    assert (s.http.max_connections, s.http.websockets) == (4096, 32)
    assert s.local.sandbox is True  # agents are sandboxed unless the operator says not
    assert (s.local.restart_seconds, s.local.sync_seconds) == (5.0, 5.0)


def test_file_then_environment(tmp_path):
    (tmp_path / "hyperhive.toml").write_text(
        '[retention]\nfailed_days = 0\nprune_at = "23:05"\n[telemetry]\nstuck_minutes = 5\n'
    )
    s = load_settings(Home(tmp_path), {"HYPERHIVE_RETENTION_FAILED_DAYS": "7"})
    assert s.retention.failed_days == 7  # the environment wins (the NixOS module's way)
    assert s.retention.prune_at == "23:05" and s.telemetry.stuck_minutes == 5


def test_the_sandbox_switch_from_the_file_and_the_environment(tmp_path):
    (tmp_path / "hyperhive.toml").write_text("[local]\nsandbox = false\n")
    assert load_settings(Home(tmp_path), {}).local.sandbox is False
    for value, expected in (("true", True), ("1", True), ("False", False), ("0", False)):
        env = {"HYPERHIVE_LOCAL_SANDBOX": value}
        assert load_settings(Home(tmp_path), env).local.sandbox is expected


def test_seconds_of_the_local_runtime_take_integers_and_fractions(tmp_path):
    (tmp_path / "hyperhive.toml").write_text("[local]\nrestart_seconds = 2\nsync_seconds = 0.5\n")
    s = load_settings(Home(tmp_path), {})
    assert (s.local.restart_seconds, s.local.sync_seconds) == (2.0, 0.5)
    assert type(s.local.restart_seconds) is float
    env = {"HYPERHIVE_LOCAL_RESTART_SECONDS": "0.2", "HYPERHIVE_LOCAL_SYNC_SECONDS": "60"}
    s = load_settings(Home(tmp_path), env)
    assert (s.local.restart_seconds, s.local.sync_seconds) == (0.2, 60.0)


@pytest.mark.parametrize(
    "toml, env, message",
    [
        ("[retention]\nfailed_dayz = 3\n", {}, "unknown key retention.failed_dayz"),
        ("[retension]\n", {}, "unknown section [retension]"),
        ('[retention]\nfailed_days = "3"\n', {}, "retention.failed_days must be int"),
        ("[retention]\nfailed_days = -1\n", {}, "at least 0"),
        ('[retention]\nprune_at = "25:00"\n', {}, "HH:MM"),
        ("[git]\nmax_push_bytes = 0\n", {}, "git.max_push_bytes must be at least 1"),
        ("[http]\nheader_seconds = 0\n", {}, "http.header_seconds must be at least 1"),
        ("", {"HYPERHIVE_HTTP_WEBSOCKETS": "0"}, "http.websockets must be at least 1"),
        ("[retention\n", {}, "hyperhive.toml"),
        ("", {"HYPERHIVE_TELEMETRY_RAW_HOURS": "lots"}, "must be an integer"),
        ("[forge]\nidle_minutes = 0\n", {}, "forge.idle_minutes must be at least 1"),
        ("[forge]\nsession_hours = 1\nidle_minutes = 61\n", {}, "within forge.session_hours"),
        ("", {"HYPERHIVE_FORGE_PROXY_HOPS": "-1"}, "forge.proxy_hops must be at least 0"),
        ('[local]\nsandbox = "no"\n', {}, "local.sandbox must be bool"),
        ("", {"HYPERHIVE_LOCAL_SANDBOX": "off"}, "HYPERHIVE_LOCAL_SANDBOX must be true or false"),
        ("[local]\nrestart_seconds = 0\n", {}, "restart_seconds must be from 0.1 to 300, not 0"),
        ("[local]\nrestart_seconds = 301\n", {}, "must be from 0.1 to 300, not 301"),
        ("[local]\nsync_seconds = 0.05\n", {}, "sync_seconds must be from 0.1 to 3600"),
        ("[local]\nsync_seconds = 3601\n", {}, "sync_seconds must be from 0.1 to 3600"),
        ("[local]\nsync_seconds = nan\n", {}, "must be a finite number, not nan"),
        ("[local]\nrestart_seconds = inf\n", {}, "must be a finite number, not inf"),
        ('[local]\nrestart_seconds = "5"\n', {}, "local.restart_seconds must be a number"),
        ("[local]\nrestart_seconds = true\n", {}, "local.restart_seconds must be a number"),
        ("", {"HYPERHIVE_LOCAL_RESTART_SECONDS": "soon"}, "must be a number, not 'soon'"),
        ("", {"HYPERHIVE_LOCAL_SYNC_SECONDS": "-1"}, "HYPERHIVE_LOCAL_SYNC_SECONDS: local.sync"),
        ("", {"HYPERHIVE_LOCAL_SYNC_SECONDS": "inf"}, "must be a finite number, not 'inf'"),
    ],
)
def test_bad_settings_are_named(tmp_path, toml, env, message):
    (tmp_path / "hyperhive.toml").write_text(toml)
    with pytest.raises(BadInput, match=None) as e:
        load_settings(Home(tmp_path), env)
    assert message in str(e.value)


def test_a_bad_value_names_where_it_came_from(tmp_path):
    """The file, or the variable that overrode it (the NixOS module sets no file)."""
    (tmp_path / "hyperhive.toml").write_text("[retention]\nfailed_days = -1\n")
    with pytest.raises(BadSettings) as e:
        load_settings(Home(tmp_path), {})
    assert str(e.value) == (
        f"{tmp_path / 'hyperhive.toml'}: retention.failed_days must be at least 0, not -1"
    )
    (tmp_path / "hyperhive.toml").write_text("[telemetry]\nminute_days = 2\n")
    with pytest.raises(BadSettings) as e:
        load_settings(Home(tmp_path), {"HYPERHIVE_TELEMETRY_RAW_HOURS": "49"})
    assert str(e.value).startswith(
        f"{tmp_path / 'hyperhive.toml'} with HYPERHIVE_TELEMETRY_RAW_HOURS: telemetry.minute_days"
    )
    (tmp_path / "hyperhive.toml").unlink()
    with pytest.raises(BadSettings) as e:
        load_settings(Home(tmp_path), {"HYPERHIVE_GIT_MAX_PUSH_BYTES": "0"})
    assert str(e.value) == (
        "HYPERHIVE_GIT_MAX_PUSH_BYTES: git.max_push_bytes must be at least 1, not 0"
    )


def test_a_settings_file_that_cannot_be_read_is_named_not_skipped(tmp_path):
    """Unreadable (a directory here; a file the daemon's user may not read alike) is an
    error, not the defaults: the operator meant something by putting it there."""
    (tmp_path / "hyperhive.toml").mkdir()
    with pytest.raises(BadSettings, match="hyperhive.toml: .*Is a directory"):
        load_settings(Home(tmp_path), {})
