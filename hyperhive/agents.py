"""Creating agents and listing them with their deployed state."""

from pathlib import Path

from dulwich.repo import Repo

from hyperhive.errors import AgentExists
from hyperhive.gitstore import refs
from hyperhive.gitstore.history import write_commit
from hyperhive.gitstore.repos import init_bare, init_worktree
from hyperhive.home import Home
from hyperhive.names import check_agent_name
from hyperhive.resources import NIX_DIR
from hyperhive.runtime.base import Runtime
from hyperhive.workflow import hooks, meta
from hyperhive.workflow.approvals import Approval, Approvals

MANAGER = "manager"


AGENT_TEMPLATE = NIX_DIR / "agent-template.nix"


def initial_agent_nix(name: str) -> str:
    return AGENT_TEMPLATE.read_text().replace("@name@", check_agent_name(name))


def _initial_commit(repo: Repo, name: str, actor: str) -> bytes:
    """Commit agent.nix on main and write it to the work tree and index, so `git status`
    in the config checkout is clean."""
    files = {"agent.nix": initial_agent_nix(name).encode()}
    commit = write_commit(repo, files, f"create agent {name}\n", actor, [])
    refs.cas(repo, b"refs/heads/main", None, commit)
    for path, content in files.items():
        (Path(repo.path) / path).write_bytes(content)
    repo.get_worktree().reset_index()
    return commit


def create_agent(home: Home, name: str, runtime: Runtime, actor: str) -> Approval:
    """Create the config and applied repos and the runtime's part, and propose the first
    config: an agent runs nothing until the operator approves it."""
    check_agent_name(name)
    home.require()
    applied = home.applied_dir(name)
    if applied.exists() or home.agent_dir(name).exists():
        raise AgentExists(f"agent {name!r} already exists")
    init_bare(applied)
    hooks.install(applied)
    config = init_worktree(home.config_dir(name))
    _initial_commit(config, name, actor)
    runtime.create(name)
    return Approvals(home, name).propose("HEAD", actor, reason="new agent")


def init_hive(home: Home, runtime: Runtime, actor: str) -> Approval | None:
    """Create the home, the meta repo and the manager agent; None if already initialized."""
    if home.is_initialized():
        return None
    for sub in ("agents", "applied", "logs", "run"):
        (home.root / sub).mkdir(parents=True, exist_ok=True)
    meta.init(home)
    return create_agent(home, MANAGER, runtime, actor)


def describe(home: Home, name: str, runtime: Runtime) -> dict:
    approvals = Approvals(home, name)
    every = approvals.all()
    deployed = [a for a in every if a.state == "deployed"]
    last = max(deployed, key=lambda a: a.states["deployed"].time, default=None)
    return {
        "name": name,
        "deployed_commit": approvals.deployed_commit(),
        "deployed_approval": last.id if last else None,
        "deployed_at": last.states["deployed"].time if last else None,
        "pending": [a.id for a in every if a.state == "proposal"],
        "building": [a.id for a in every if a.state in ("approved", "building")],
        "runtime": runtime.status(name),
    }


def list_agents(home: Home, runtime: Runtime) -> list[dict]:
    home.require()
    return [describe(home, n, runtime) for n in home.agent_names()]
