"""Hive-wide settings: `<home>/hyperhive.toml`, each key overridable by the environment
variable `HYPERHIVE_<SECTION>_<KEY>` (how the NixOS host module passes its options).

Every key has a default, so a hive without the file runs as documented; an unknown
section or key, or a value of the wrong type, is an error that names it (a typo must not
silently keep the default)."""

import dataclasses
import math
import os
import re
import tomllib
from dataclasses import dataclass, field

from hyperhive.errors import BadSettings
from hyperhive.home import Home

HH_MM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")  # a time of day, 24 h (the scheduler's too)


@dataclass(frozen=True)
class Retention:
    failed_days: int = 30  # failed/* and denied/* older than this are pruned; 0 = never
    prune_at: str = "03:30"  # daily, the daemon's local time (HH:MM)

    def check(self) -> None:
        _at_least("retention.failed_days", self.failed_days, 0)
        if not HH_MM.fullmatch(self.prune_at):
            raise BadSettings(f"retention.prune_at must be HH:MM (24 h), not {self.prune_at!r}")


@dataclass(frozen=True)
class Telemetry:
    raw_hours: int = 48  # per-turn rows are kept this long, then rolled up per minute
    minute_days: int = 14  # per-minute rows, then rolled up per hour
    hour_days: int = 365  # per-hour rows, then deleted
    sample_seconds: int = 60  # the sampler's period (hive-wide series)
    stuck_minutes: int = 15  # inbox non-empty and no turn for this long: stuck

    def check(self) -> None:
        for f in dataclasses.fields(self):
            _at_least(f"telemetry.{f.name}", getattr(self, f.name), 1)
        # Each level must outlive the one it is rolled up from, or data skips a level.
        if self.minute_days * 24 < self.raw_hours:
            raise BadSettings(
                f"telemetry.minute_days ({self.minute_days} d) must cover "
                f"telemetry.raw_hours ({self.raw_hours} h)"
            )
        if self.hour_days < self.minute_days:
            raise BadSettings(
                f"telemetry.hour_days ({self.hour_days}) must be at least "
                f"telemetry.minute_days ({self.minute_days})"
            )


@dataclass(frozen=True)
class Git:
    max_push_bytes: int = 50 * 1024 * 1024  # a larger push (the pack as sent) is refused
    max_object_bytes: int = 10 * 1024 * 1024  # a pushed object inflating to more is refused
    max_push_inflated_bytes: int = 200 * 1024 * 1024  # a push's objects inflated, together

    def check(self) -> None:
        for f in dataclasses.fields(self):
            _at_least(f"git.{f.name}", getattr(self, f.name), 1)


@dataclass(frozen=True)
class Forge:
    session_hours: int = 12  # a forge session ends this long after its login, used or not
    idle_minutes: int = 60  # ... or once unused this long
    proxy_hops: int = 0  # reverse proxies in front whose X-Forwarded-For/-Host are trusted

    def check(self) -> None:
        _at_least("forge.session_hours", self.session_hours, 1)
        _at_least("forge.idle_minutes", self.idle_minutes, 1)
        _at_least("forge.proxy_hops", self.proxy_hops, 0)
        if self.idle_minutes > self.session_hours * 60:
            raise BadSettings(
                f"forge.idle_minutes ({self.idle_minutes}) must be within "
                f"forge.session_hours ({self.session_hours} h)"
            )


@dataclass(frozen=True)
class Http:
    """The forge's listener (hyperhive/daemon/httpworker.py)."""

    header_seconds: int = 10  # a request line and headers must arrive within this
    body_seconds: int = 30  # then a body of up to 64 KiB (bigger: git pushes, read by a thread)
    io_seconds: int = 60  # a request's read or write that waits longer ends it
    max_connections: int = 4096  # open at once (at most half the fd limit)
    websockets: int = 32  # open at once; each holds a thread

    def check(self) -> None:
        for f in dataclasses.fields(self):
            _at_least(f"http.{f.name}", getattr(self, f.name), 1)


@dataclass(frozen=True)
class Local:
    # The local runtime runs each agent in a bubblewrap sandbox (runtime/sandbox.py);
    # false runs them open, as the daemon's user with its view of the host.
    sandbox: bool = True
    # The daemon keeps each deployed agent's harness running (daemon/supervisor.py): one
    # that crashed is restarted after this, doubling with each crash in a row up to 5 min.
    restart_seconds: float = 5.0
    # ... and this often it checks that every deployed agent runs its deployed revision
    # and that its `claude` can be found (a deploy or a destroy acts at once besides).
    sync_seconds: float = 5.0

    def check(self) -> None:
        # a harness restarted faster than this is a busy loop; slower than the backoff's cap
        # would make the cap meaningless
        _within("local.restart_seconds", self.restart_seconds, 0.1, 300)
        _within("local.sync_seconds", self.sync_seconds, 0.1, 3600)


@dataclass(frozen=True)
class Checks:
    """The checks of proposals (workflow/checks.py, daemon/checker.py)."""

    workers: int = 2  # checks run at once, beside (never in) the build queue
    timeout_seconds: int = 600  # a check still running after this is stopped and fails

    def check(self) -> None:
        _at_least("checks.workers", self.workers, 1)
        _at_least("checks.timeout_seconds", self.timeout_seconds, 1)


@dataclass(frozen=True)
class Settings:
    retention: Retention = field(default_factory=Retention)
    telemetry: Telemetry = field(default_factory=Telemetry)
    git: Git = field(default_factory=Git)
    forge: Forge = field(default_factory=Forge)
    http: Http = field(default_factory=Http)
    local: Local = field(default_factory=Local)
    checks: Checks = field(default_factory=Checks)


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise BadSettings(f"{key} must be at least {low}, not {value}")


def _within(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise BadSettings(f"{key} must be from {low:g} to {high:g}, not {value:g}")


BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def _coerce(key: str, raw: object, kind: type, from_env: bool = False) -> object:
    """A TOML value (typed already) or an environment string as the field's type."""
    if from_env and kind is bool:
        if str(raw).lower() not in BOOLEANS:
            raise BadSettings(f"{key} must be true or false, not {raw!r}")
        return BOOLEANS[str(raw).lower()]
    if from_env and kind is int:
        try:
            return int(raw)
        except ValueError:
            raise BadSettings(f"{key} must be an integer, not {raw!r}") from None
    if kind is float:  # seconds: 2 or 0.5, never a NaN or an infinity
        value = raw
        if from_env:
            try:
                value = float(str(raw))
            except ValueError:
                raise BadSettings(f"{key} must be a number, not {raw!r}") from None
        elif type(raw) not in (int, float):
            raise BadSettings(f"{key} must be a number, not {raw!r}")
        if not math.isfinite(value):
            raise BadSettings(f"{key} must be a finite number, not {raw!r}")
        return float(value)
    if type(raw) is not kind:
        raise BadSettings(f"{key} must be {kind.__name__}, not {raw!r}")
    return raw


def load_settings(home: Home, environ: dict[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    path = home.root / "hyperhive.toml"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        data = {}
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BadSettings(f"{path}: {e}") from None
    sections = {f.name: f.type for f in dataclasses.fields(Settings)}
    for name in set(data) - set(sections):
        raise BadSettings(f"{path}: unknown section [{name}] (known: {', '.join(sections)})")
    built = {}
    for name, cls in sections.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise BadSettings(f"{path}: {name} must be a table")
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        for key in set(table) - set(fields):
            raise BadSettings(f"{path}: unknown key {name}.{key} (known: {', '.join(fields)})")
        values = {k: _coerce(f"{path}: {name}.{k}", v, fields[k]) for k, v in table.items()}
        overrides = []
        for key, kind in fields.items():
            var = f"HYPERHIVE_{name}_{key}".upper()
            if var in env:
                values[key] = _coerce(var, env[var], kind, from_env=True)
                overrides.append(var)
        section = cls(**values)
        try:
            section.check()
        except BadSettings as e:  # name where the values came from: the file, variables
            where = [str(path)] if table else []
            if overrides:
                where.append(", ".join(overrides))
            raise BadSettings(f"{' with '.join(where) or path}: {e}") from None
        built[name] = section
    return Settings(**built)
