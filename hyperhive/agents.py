"""Creating agents and listing them with their deployed state.

The one code path that creates an agent's repos: `create_config` (config repo with the
template's first commit, state directory) and `create_applied` (applied repo with hooks,
the runtime's part), each inside a `Creation` that removes what the call made if a later
step fails. `create_agent` (the one-shot spawn) and hyperhive.spawn's draft flow are
built from them.
"""

import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path

from dulwich.repo import Repo

from hyperhive.broker.health import derive
from hyperhive.broker.health import problems as read_problems
from hyperhive.errors import AgentExists, UnknownCommit
from hyperhive.gitstore import refs
from hyperhive.gitstore.history import write_commit
from hyperhive.gitstore.repos import init_bare, init_worktree, open_repo, resolve_commit
from hyperhive.home import Home
from hyperhive.names import MANAGER, check_agent_name, check_new_agent_name
from hyperhive.resources import NIX_DIR
from hyperhive.runtime.base import LOCAL_HOST, Runtime
from hyperhive.workflow import hooks, meta
from hyperhive.workflow.approvals import Approval, Approvals
from hyperhive.workflow.states import State

AGENT_TEMPLATE = NIX_DIR / "agent-template.nix"


def initial_agent_nix(name: str) -> str:
    return AGENT_TEMPLATE.read_text().replace("@name@", check_agent_name(name))


def initial_commit(repo: Repo, name: str, actor: str) -> bytes:
    """Commit agent.nix on main and write it to the work tree and index, so `git status`
    in the config checkout is clean."""
    files = {"agent.nix": initial_agent_nix(name).encode()}
    commit = write_commit(repo, files, f"create agent {name}\n", actor, [])
    refs.cas(repo, refs.MAIN, None, commit)
    for path, content in files.items():
        (Path(repo.path) / path).write_bytes(content)
    repo.get_worktree().reset_index()
    return commit


class Creation:
    """What one creating call made, undone in reverse order if the call fails, so a
    refused or failed call leaves nothing half-created.

    `claim` makes a directory that must not exist yet (an exclusive mkdir: of two
    concurrent calls for one name exactly one gets it) and removes it on failure."""

    def __init__(self) -> None:
        self.undo: list[Callable[[], None]] = []

    def __enter__(self) -> "Creation":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            return
        for step in reversed(self.undo):
            # keep undoing; the original error is what the caller sees
            with contextlib.suppress(Exception):
                step()

    def claim(self, path: Path, taken: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()
        except FileExistsError:
            raise AgentExists(taken) from None
        self.undo.append(lambda: shutil.rmtree(path, ignore_errors=True))
        return path

    def made_if_missing(self, path: Path) -> None:
        """Remove `path` on failure unless it exists now (it is not this call's)."""
        if not path.exists():
            self.undo.append(lambda: shutil.rmtree(path, ignore_errors=True))


def is_repo(path: Path) -> bool:
    return (path / ".git").exists()


def check_not_kept(home: Home, name: str) -> None:
    """Refuse an invalid name, or the name of an agent kept after a destroy (only a purge
    frees it)."""
    check_agent_name(name)
    home.require()
    if home.is_destroyed(name):
        raise AgentExists(
            f"agent {name!r} was destroyed and its state kept: "
            f"`hyperhive agent destroy {name} --purge` frees the name"
        )


def check_not_agent(home: Home, name: str, hint: str = "") -> None:
    """Refuse a name that belongs to an agent, running or kept after a destroy; `hint`
    ends the refusal of a running one."""
    check_not_kept(home, name)
    if home.applied_dir(name).exists():
        raise AgentExists(f"agent {name!r} already exists{hint}")


def check_new(home: Home, name: str) -> None:
    """Refuse a name that is taken: an agent, a kept (destroyed) agent, a draft, or any
    leftover directory of that name."""
    check_new_agent_name(name)
    check_not_agent(home, name)
    if is_repo(home.config_dir(name)):
        raise AgentExists(
            f"a draft of agent {name!r} already exists at {home.config_dir(name)}: "
            "commit there and spawn it with spawn_commit"
        )
    if home.agent_dir(name).exists():
        raise AgentExists(
            f"{home.agent_dir(name)} already exists: "
            f"`hyperhive agent destroy {name} --purge` removes it"
        )


def create_config(home: Home, name: str, actor: str, creation: Creation) -> Path:
    """Claim `agents/<name>` and create the config repo (first commit: the template)
    and the state directory in it."""
    creation.claim(home.agent_dir(name), f"agent {name!r} already exists")
    with init_worktree(home.config_dir(name)) as config:
        initial_commit(config, name, actor)
    home.state_dir(name).mkdir(exist_ok=True)
    return home.config_dir(name)


def create_applied(home: Home, name: str, runtime: Runtime, creation: Creation) -> None:
    """Claim `applied/<name>.git`, create it with the hooks, and let the runtime prepare
    the agent (Runtime.create: nothing runs before the first deploy)."""
    applied = creation.claim(home.applied_dir(name), f"agent {name!r} already exists")
    init_bare(applied).close()
    hooks.install(applied)
    creation.made_if_missing(home.log_dir(name))  # the proposal's hook run writes there
    creation.undo.append(lambda: runtime.destroy(name))
    runtime.create(name)


def resolve_config_commit(home: Home, name: str, commit_ref: str) -> str:
    """The full sha of `commit_ref` in the agent's config repo, or UnknownCommit."""
    config = home.config_dir(name)
    try:
        with open_repo(config) as repo:
            return resolve_commit(repo, commit_ref).decode()
    except UnknownCommit:
        raise UnknownCommit(
            f"unknown commit {commit_ref!r} in {name}'s config repo {config}"
        ) from None


def propose_first(
    home: Home, name: str, commit: str, runtime: Runtime, actor: str, creation: Creation
) -> Approval:
    """Create the applied repo and propose `commit` of the config repo as the agent's
    first config: the deploy of that approval brings the agent up."""
    create_applied(home, name, runtime, creation)
    return Approvals(home, name).propose(commit, actor, reason="new agent")


def create_agent(home: Home, name: str, runtime: Runtime, actor: str) -> Approval:
    """The one-shot spawn: the config repo from the template, the applied repo, and the
    first config proposed. An agent runs nothing until the operator approves it."""
    check_new(home, name)
    with Creation() as creation:
        create_config(home, name, actor, creation)
        commit = resolve_config_commit(home, name, "HEAD")
        return propose_first(home, name, commit, runtime, actor, creation)


def init_hive(home: Home, runtime: Runtime, actor: str) -> Approval | None:
    """Create the home, the meta repo and the manager agent; None if already initialized."""
    if home.is_initialized():
        return None
    for sub in ("agents", "applied", "logs", "run"):
        (home.root / sub).mkdir(parents=True, exist_ok=True)
    meta.init(home)
    return create_agent(home, MANAGER, runtime, actor)


def runtime_state(home: Home, name: str, runtime: Runtime, problems: dict | None = None) -> dict:
    """The runtime's `{"state", "revision"}` with what the daemon knows is wrong
    (broker/health.py): `state` running, failing, crash-looping, stopped, … and `error`.
    `problems`: this agent's rows of `Health.all()`, read here when None."""
    if problems is None:
        problems = read_problems(home).get(name, {})
    return derive(runtime.status(name), problems)


def _summary(by_id: dict[int, Approval]) -> dict:
    """What `describe` says of an agent's approvals (Approvals.derived: once per listing)."""
    every = [by_id[i] for i in sorted(by_id)]
    deployed = [a for a in every if a.state == State.DEPLOYED]
    last = max(deployed, key=lambda a: a.states[State.DEPLOYED].time, default=None)
    return {
        "deployed_approval": last.id if last else None,
        "deployed_at": last.states[State.DEPLOYED].time if last else None,
        "pending": [a.id for a in every if a.state == State.PROPOSAL],
        "building": [a.id for a in every if a.state in (State.APPROVED, State.BUILDING)],
    }


def describe(home: Home, name: str, runtime: Runtime, problems: dict | None = None) -> dict:
    approvals = Approvals(home, name)
    summary = approvals.derived(_summary)
    return {
        "name": name,
        "deployed_commit": approvals.deployed_commit(),
        "deployed_approval": summary["deployed_approval"],
        "deployed_at": summary["deployed_at"],
        "pending": list(summary["pending"]),
        "building": list(summary["building"]),
        "runtime": {"host": LOCAL_HOST, **runtime_state(home, name, runtime, problems)},
    }


def list_agents(home: Home, runtime: Runtime) -> list[dict]:
    home.require()
    found = read_problems(home)
    return [describe(home, n, runtime, found.get(n, {})) for n in home.agent_names()]
