"""The meta repo: one commit per deploy, pinning every agent's deployed revision."""

import json
import logging
import time

from dulwich.object_store import tree_lookup_path
from dulwich.repo import Repo

from hyperhive.gitstore import refs
from hyperhive.gitstore.history import write_commit
from hyperhive.gitstore.repos import init_bare, open_repo
from hyperhive.home import Home
from hyperhive.names import format_target
from hyperhive.runtime.policy import deployed_policy
from hyperhive.workflow.lock import locked, transition_lock

log = logging.getLogger("hyperhive.meta")

MAIN = b"refs/heads/main"
PINS_FILE = "hyperhive.json"
ACTOR = "hyperhive"


def render_flake(home: Home, pins: dict[str, dict]) -> str:
    """flake.nix pinning each agent's applied repo at its deployed revision."""
    inputs = "".join(
        f'    "agent-{name}" = {{\n'
        f'      url = "git+file://{home.applied_dir(name)}?rev={pin["rev"]}";\n'
        f"      flake = false;\n"
        f"    }};\n"
        for name, pin in sorted(pins.items())
    )
    revisions = "".join(f'      "{n}" = "{p["rev"]}";\n' for n, p in sorted(pins.items()))
    return (
        "# Written by hyperhive on every deploy: the deployed revision of every agent.\n"
        "# Do not edit; propose a change to the agent's config repo instead.\n"
        "{\n"
        '  description = "hyperhive meta flake";\n'
        f"  inputs = {{\n{inputs}  }};\n"
        "  outputs = inputs: {\n"
        f"    hyperhive.revisions = {{\n{revisions}    }};\n"
        "  };\n"
        "}\n"
    )


def _files(home: Home, pins: dict[str, dict]) -> dict[str, bytes]:
    return {
        "flake.nix": render_flake(home, pins).encode(),
        PINS_FILE: (json.dumps({"agents": pins}, indent=2, sort_keys=True) + "\n").encode(),
    }


def init(home: Home) -> None:
    repo = init_bare(home.meta_dir)
    commit = write_commit(repo, _files(home, {}), "init hive\n", ACTOR, [])
    refs.cas(repo, MAIN, None, commit)


def _pins(repo: Repo, head: bytes) -> dict[str, dict]:
    _, sha = tree_lookup_path(repo.__getitem__, repo[head].tree, PINS_FILE.encode())
    return json.loads(repo[sha].data)["agents"]


def pins(home: Home) -> dict[str, dict]:
    """Every agent's deployed `{"rev", "approval"}` as the meta repo's main records it."""
    repo = open_repo(home.meta_dir)
    return _pins(repo, repo.refs[MAIN])


def record_deploy(home: Home, name: str, approval_id: int, rev: str) -> bytes:
    """Commit the new pin of `name` on meta's main (compare-and-swap) and return the commit.
    A destroyed agent is never pinned again (its pin was dropped by `record_destroy`): main
    is returned unchanged."""
    repo = open_repo(home.meta_dir)
    with locked(transition_lock(home.meta_dir)):
        head = repo.refs[MAIN]
        if home.is_destroyed(name):
            log.warning("%s is destroyed: not pinning %s in meta", name, rev[:12])
            return head
        current = _pins(repo, head)
        # The deployed policy travels with the pin, so the deploy log says what each agent
        # was allowed to do, and when it started running that revision.
        current[name] = {
            "rev": rev,
            "approval": approval_id,
            "time": int(time.time()),
            "policy": deployed_policy(home, name),
        }
        target = format_target(name, approval_id)
        message = (
            f"deploy {target} {rev[:12]}\n\n"
            f"Agent: {name}\nApproval: {approval_id}\nRevision: {rev}\n"
        )
        commit = write_commit(repo, _files(home, current), message, ACTOR, [head])
        refs.cas(repo, MAIN, head, commit)
    return commit


def record_destroy(home: Home, name: str) -> bytes:
    """Commit "destroy NAME" on meta's main (compare-and-swap), dropping the agent's pin
    (if it had one), and return the commit."""
    repo = open_repo(home.meta_dir)
    with locked(transition_lock(home.meta_dir)):
        head = repo.refs[MAIN]
        current = _pins(repo, head)
        dropped = current.pop(name, None)
        was = f"Revision: {dropped['rev']}\n" if dropped else "Revision: none (never deployed)\n"
        message = f"destroy {name}\n\nAgent: {name}\n{was}"
        commit = write_commit(repo, _files(home, current), message, ACTOR, [head])
        refs.cas(repo, MAIN, head, commit)
    return commit
