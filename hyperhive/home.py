"""Where the hive's state lives on disk (DESIGN.md, "State on disk")."""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hyperhive.errors import InvalidName, NotInitialized, UnknownAgent
from hyperhive.names import check_agent_name
from hyperhive.wire.events import EventBus

# What every hyperhive process masks off what it creates: other users get nothing of a hive
# (hive.db, logs, agents' state, tokens), its group never writes. NixOS's unit sets the same.
UMASK = 0o027
MAX_PATHS = 4096  # agents' paths a Home keeps built


def restrict_umask() -> None:
    """Add UMASK to this process's umask (a stricter one stays)."""
    os.umask(os.umask(UMASK) | UMASK)


def default_home() -> Path:
    env = os.environ.get("HYPERHIVE_HOME")
    if env:
        return Path(env)
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "hyperhive"


@dataclass(frozen=True)
class Home:
    root: Path
    # The daemon's event bus, in the daemon's process only (`Hive` hands out a home that
    # carries its bus): wire/notify.py publishes on it there, and asks host.sock elsewhere.
    bus: EventBus | None = field(default=None, compare=False, repr=False)
    # The daemon's build queue (`submit(name, id)` -> builds ahead), in the daemon's
    # process only: an approval written there is queued without a hook process
    # (workflow/hooks.py), as the shipped hook's `hyperhive deploy` would queue it.
    deploys: Callable[[str, int], int] | None = field(default=None, compare=False, repr=False)
    # The paths of agents asked for so far ((kind, name, suffix) -> Path): a dashboard load asks for
    # the same few hundred over and over, and each pathlib join costs more than a stat.
    _paths: dict[tuple[str, str, str], Path] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def close_to_others(self) -> bool:
        """Take other users' access to the home's top directory away (a home made before
        UMASK, or by hand), if this user owns it; whether it changed."""
        st = self.root.stat()
        if st.st_uid != os.geteuid() or not st.st_mode & 0o007:
            return False
        self.root.chmod(st.st_mode & 0o7770)
        return True

    @property
    def meta_dir(self) -> Path:
        return self.root / "meta.git"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def host_socket(self) -> Path:
        return self.run_dir / "host.sock"

    def is_initialized(self) -> bool:
        return os.path.isfile(f"{os.fspath(self.root)}/meta.git/HEAD")

    def require(self) -> "Home":
        if not self.is_initialized():
            raise NotInitialized(f"no hive at {self.root}: run `hyperhive init --home {self.root}`")
        return self

    def agent_socket(self, name: str) -> Path:
        """The agent's socket, in a directory of its own: a container binds the directory
        at /run/hyperhive, which survives the daemon recreating the socket."""
        return self.run_dir / "agents" / check_agent_name(name) / "agent.sock"

    def _path(self, kind: str, name: str, suffix: str = "") -> Path:
        """`<root>/<kind>/<name><suffix>` for a valid `name`, built once (at most
        MAX_PATHS kept: names come from requests too)."""
        path = self._paths.get((kind, name, suffix))
        if path is None:
            path = self.root / kind / f"{check_agent_name(name)}{suffix}"
            if len(self._paths) >= MAX_PATHS:
                self._paths.clear()
            self._paths[(kind, name, suffix)] = path
        return path

    def agent_dir(self, name: str) -> Path:
        return self._path("agents", name)

    def config_dir(self, name: str) -> Path:
        return self.agent_dir(name) / "config"

    def state_dir(self, name: str) -> Path:
        return self.agent_dir(name) / "state"

    def deployed_dir(self, name: str) -> Path:
        return self._path("agents", name, "/deployed")

    def applied_dir(self, name: str) -> Path:
        return self._path("applied", name, ".git")

    def log_dir(self, name: str) -> Path:
        return self._path("logs", name)

    def build_log(self, name: str, approval_id: int) -> Path:
        return self.log_dir(name) / f"{int(approval_id)}.log"

    def check_log(self, name: str, approval_id: int, run: int = 1) -> Path:
        """The log of a check of a proposal (workflow/checks.py); each rerun has its own."""
        suffix = "" if run == 1 else f".{int(run)}"
        return self.log_dir(name) / f"check-{int(approval_id)}{suffix}.log"

    def destroyed_file(self, name: str) -> Path:
        """Marks a destroyed agent whose state and repos were kept (hyperhive.spawn)."""
        return self.agent_dir(name) / "destroyed"

    def is_destroyed(self, name: str) -> bool:
        return os.path.isfile(f"{os.fspath(self.root)}/agents/{check_agent_name(name)}/destroyed")

    def is_agent(self, name: str) -> bool:
        """`name` is an active agent (one `agent_names` lists), found without listing them."""
        try:
            check_agent_name(name)
        except InvalidName:
            return False
        # os.path on strings: every send asks, and pathlib's joins cost four times the INSERT
        root = os.fspath(self.root)
        return os.path.isfile(f"{root}/applied/{name}.git/HEAD") and not os.path.isfile(
            f"{root}/agents/{name}/destroyed"
        )

    def agent_names(self) -> list[str]:
        """The active agents: an applied repo and not destroyed."""
        root = os.fspath(self.root)  # strings, as in is_agent: every dashboard load asks
        try:
            entries = [e.name for e in os.scandir(f"{root}/applied") if e.name.endswith(".git")]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(
            name[: -len(".git")]
            for name in entries
            if os.path.isfile(f"{root}/applied/{name}/HEAD")
            and not os.path.isfile(f"{root}/agents/{name[: -len('.git')]}/destroyed")
        )

    def require_agent(self, name: str) -> str:
        check_agent_name(name)
        self.require()
        if not os.path.isfile(f"{os.fspath(self.root)}/applied/{name}.git/HEAD"):
            raise UnknownAgent(f"unknown agent {name!r}: `hyperhive agent list` shows the agents")
        return name
