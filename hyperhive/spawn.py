"""Spawning agents on the approval workflow, drafts, and destroying agents.

A spawn is an approval in the new agent's applied repo whose deploy brings the agent up.
Three ways in, all built from the creation steps in hyperhive.agents (one code path):

- `spawn`: one shot — the config repo from the template, the applied repo, and
  `proposal/<id>` of the template's commit (what `hyperhive agent create` does);
- `spawn_draft`: only `agents/<name>/config` (first commit from the template) and
  `agents/<name>/state`: no applied repo, no runtime part, no proposal. A *draft* is an
  agent directory with a config repo but no applied repo. The manager edits and commits
  there, then
- `spawn_commit`: creates the draft's applied repo and proposes one of its commits.

When the runtime creates the agent: `Runtime.create` (prepare; for the local runtime the
state directory) runs when the applied repo is created, i.e. at `spawn`/`spawn_commit`
time, and nothing runs then; the agent exists in the runtime from the first successful
deploy of its approval (the local runtime's `update` creates the deployed checkout and
calls `create` again itself, so a runtime whose `create` needs a deployed config can do
that work there).

Every refusal (a bad name, a name taken by an agent, a draft or kept state, an unknown
commit) happens before anything is written; a step failing later undoes what the call
made. Destroying keeps an agent's state and repos unless purged; a kept agent is marked
by `agents/<name>/destroyed` (JSON: time, actor, last deployed commit) and is no longer
an active agent (`Home.agent_names`).
"""

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from hyperhive import tokens
from hyperhive.agents import (
    MANAGER,
    Creation,
    check_new,
    check_not_agent,
    check_not_kept,
    create_agent,
    create_config,
    initial_commit,
    is_repo,
    propose_first,
    resolve_config_commit,
)
from hyperhive.errors import (
    AlreadyDestroyed,
    BadInput,
    UnknownAgent,
)
from hyperhive.gitstore import history, refs, worktree
from hyperhive.gitstore.repos import copy_commit, init_worktree, open_repo
from hyperhive.home import Home
from hyperhive.names import check_agent_name
from hyperhive.runtime.base import Runtime
from hyperhive.settings import load_settings
from hyperhive.wire import notify
from hyperhive.workflow import meta
from hyperhive.workflow.approvals import MAIN, Approval, Approvals
from hyperhive.workflow.deploy import recover
from hyperhive.workflow.lock import build_lock, locked

DESTROY_REASON = "agent destroyed"


# -- spawning ----------------------------------------------------------------------------


def spawn(home: Home, name: str, runtime: Runtime, actor: str) -> Approval:
    """One shot: create the agent's repos from the template and propose its first config
    (`proposal/<id>`, normally `NAME#1`). Refused (AgentExists) if the name is taken by
    an agent, a draft or kept state."""
    return create_agent(home, name, runtime, actor)


def spawn_draft(home: Home, name: str, actor: str) -> Path:
    """Create a draft: `agents/<name>/config` (first commit from the template) and
    `agents/<name>/state`; no applied repo, no runtime part, no proposal. Returns the
    config repo's path, where the manager edits and commits before `spawn_commit`."""
    check_new(home, name)
    with Creation() as creation:
        config = create_config(home, name, actor, creation)
    notify.changed(home, name, "draft")
    return config


def require_draft(home: Home, name: str) -> Path:
    check_not_agent(home, name, ": propose a change with request_apply_commit")
    if not is_repo(home.config_dir(name)):
        raise UnknownAgent(f"no draft {name!r}: create one with spawn_draft")
    return home.config_dir(name)


# -- a draft's initial state (`draft_write_state`) ----------------------------------------

# one file the manager writes: its text travels JSON-escaped in one request line of the
# agent socket (wire.protocol.MAX_LINE, 1 MiB), so a quarter of that
MAX_STATE_FILE_BYTES = 256 * 1024
MAX_DRAFT_STATE_BYTES = 16 * 1024 * 1024  # everything in a draft's state directory
MAX_STATE_PATH = 255  # characters of a relative path
MAX_STATE_DEPTH = 8  # directories deep
# Files of the state that hyperhive or the runtime own: the agent's git token, the
# credentials its harness unit reads as an EnvironmentFile, the harness's own records.
RESERVED_STATE = ("hyperhive-token", "hyperhive.env", ".hyperhive")


def _state_parts(path: str) -> list[str]:
    """The components of a path relative to a state directory, refused unless plain."""
    if not isinstance(path, str) or not path:
        raise BadInput("`path` must be a non-empty path relative to the draft's state")
    if len(path) > MAX_STATE_PATH or "\0" in path or "\\" in path:
        raise BadInput(f"bad state path {path[:80]!r}: at most {MAX_STATE_PATH} characters")
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise BadInput(f"bad state path {path!r}: relative, no '.', '..' or empty parts")
    if len(parts) > MAX_STATE_DEPTH:
        raise BadInput(f"bad state path {path!r}: at most {MAX_STATE_DEPTH} levels deep")
    if parts[0] in RESERVED_STATE:
        raise BadInput(f"{parts[0]} in the state belongs to hyperhive: not written")
    return parts


def _state_size(state: Path, skip: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(state):  # never follows symlinks
        for f in files:
            p = Path(dirpath) / f
            if p != skip:
                with contextlib.suppress(OSError):
                    total += p.lstat().st_size
    return total


def write_draft_state(home: Home, name: str, path: str, content: str) -> dict:
    """Write one file of draft `name`'s initial state (agents/<name>/state/<path>), which
    the agent finds at /state/<path> once it runs: its notes.md, a brief, data. Only a
    draft's: a running agent's state is its own. `path` is relative, without '.', '..' or
    a symlink anywhere (a symlink in the state is refused, not followed); at most
    MAX_STATE_FILE_BYTES of UTF-8 per file, MAX_DRAFT_STATE_BYTES in all. The file is
    replaced whole (atomically). Returns `{"name", "path", "bytes"}`."""
    require_draft(home, name)
    parts = _state_parts(path)
    if not isinstance(content, str):
        raise BadInput("`content` must be a string (the file's text)")
    data = content.encode()
    if len(data) > MAX_STATE_FILE_BYTES:
        raise BadInput(
            f"{path}: {len(data)} bytes; one state file holds at most {MAX_STATE_FILE_BYTES}"
        )
    state = home.state_dir(name)
    state.mkdir(exist_ok=True)
    if state.is_symlink():
        raise BadInput(f"{name}'s state directory is a symlink: not written")
    here = state
    for part in parts[:-1]:
        here = here / part
        with contextlib.suppress(FileExistsError):
            here.mkdir()
        if here.is_symlink() or not here.is_dir():
            raise BadInput(f"{'/'.join(parts)}: {here.relative_to(state)} is not a directory")
    target = here / parts[-1]
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise BadInput(f"{path} exists and is not a plain file: not written")
    if _state_size(state, target) + len(data) > MAX_DRAFT_STATE_BYTES:
        raise BadInput(f"{name}'s state would pass {MAX_DRAFT_STATE_BYTES} bytes: not written")
    fd, tmp = tempfile.mkstemp(dir=here, prefix=f".{parts[-1]}.")  # never follows a link
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return {"name": name, "path": "/".join(parts), "bytes": len(data)}


def spawn_commit(home: Home, name: str, commit_ref: str, runtime: Runtime, actor: str) -> Approval:
    """Turn the draft `name` into an agent: create its applied repo (with the hooks, and
    the runtime's preparation) and propose `commit_ref` (a sha, branch, tag or HEAD of
    the draft's config repo). Approving and deploying that approval brings the agent up.
    Refused before anything is written: no such draft (UnknownAgent), an existing agent
    or kept state (AgentExists), an unknown commit (UnknownCommit)."""
    require_draft(home, name)
    commit = resolve_config_commit(home, name, commit_ref)
    with Creation() as creation:
        return propose_first(home, name, commit, runtime, actor, creation)


def init_config(home: Home, name: str, actor: str) -> Path:
    """`request_init_config`: make sure `name` has a config repo and return its path.

    - a new name: the same as `spawn_draft` (a draft from the template);
    - a draft, or an active agent with a config repo: its path, nothing written;
    - an active agent whose config repo is missing: a new config repo whose main is the
      agent's deployed commit (or the template's first commit if nothing was deployed
      yet), checked out;
    - a kept (destroyed) agent: refused (AgentExists) — purge it to reuse the name.
    """
    check_not_kept(home, name)
    config = home.config_dir(name)
    if is_repo(config):
        return config
    if not home.applied_dir(name).exists():
        return spawn_draft(home, name, actor)
    home.require_agent(name)
    deployed = Approvals(home, name).deployed_commit()
    with Creation() as creation:
        creation.claim(config, f"{config} already exists")
        with init_worktree(config) as repo:
            if deployed is None:
                initial_commit(repo, name, actor)
            else:
                with open_repo(home.applied_dir(name)) as applied:
                    max_bytes = load_settings(home).git.max_push_bytes
                    copy_commit(applied, repo, deployed.encode(), max_bytes=max_bytes)
                refs.cas(repo, MAIN, None, deployed.encode())
                worktree.switch(repo, None, deployed.encode())  # never through a symlink
        home.state_dir(name).mkdir(exist_ok=True)
    return config


# -- listing -----------------------------------------------------------------------------


def _dirs(home: Home) -> list[str]:
    """Names of the directories under agents/ that are valid agent names."""
    agents = home.root / "agents"
    if not agents.is_dir():
        return []
    names = []
    for p in sorted(agents.iterdir()):
        try:
            names.append(check_agent_name(p.name))
        except Exception:
            continue
    return names


def _latest(config: Path) -> dict:
    with open_repo(config) as repo:
        head = refs.read(repo, MAIN)
        if head is None:
            return {"commit": None, "subject": None, "author": None, "time": None}
        info = history.commit_info(repo, head)
    return {"commit": info.sha, "subject": info.subject, "author": info.author, "time": info.time}


def drafts(home: Home) -> list[dict]:
    """Every draft (a config repo without an applied repo), with its latest commit on
    main: `{"name", "config", "commit", "subject", "author", "time"}`, by name."""
    home.require()
    return [
        {"name": n, "config": str(home.config_dir(n)), **_latest(home.config_dir(n))}
        for n in _dirs(home)
        if is_repo(home.config_dir(n))
        and not home.applied_dir(n).exists()
        and not home.is_destroyed(n)
    ]


def _marker(home: Home, name: str) -> dict:
    try:
        data = json.loads(home.destroyed_file(name).read_text())
    except (OSError, ValueError):
        data = {}
    return data if isinstance(data, dict) else {}


def kept(home: Home) -> list[dict]:
    """Every destroyed agent whose state and repos were kept: `{"name", "destroyed_at",
    "actor", "commit" (last deployed, or None), "state", "config", "applied"}` (paths, or
    None for what is gone), by name."""
    home.require()
    result = []
    for n in _dirs(home):
        if not home.is_destroyed(n):
            continue
        marker = _marker(home, n)
        result.append(
            {
                "name": n,
                "destroyed_at": marker.get("time"),
                "actor": marker.get("actor"),
                "commit": marker.get("commit"),
                "state": str(home.state_dir(n)) if home.state_dir(n).is_dir() else None,
                "config": str(home.config_dir(n)) if is_repo(home.config_dir(n)) else None,
                "applied": str(home.applied_dir(n)) if home.applied_dir(n).is_dir() else None,
            }
        )
    return result


# -- destroying --------------------------------------------------------------------------


def _purge(home: Home, name: str) -> None:
    for path in (home.applied_dir(name), home.log_dir(name), home.agent_dir(name)):
        shutil.rmtree(path, ignore_errors=True)


def _write_marker(home: Home, name: str, actor: str, commit: str | None) -> None:
    path = home.destroyed_file(name)
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(json.dumps({"time": int(time.time()), "actor": actor, "commit": commit}) + "\n")
    os.replace(tmp, path)


def destroy(home: Home, name: str, runtime: Runtime, purge: bool, actor: str = "operator") -> dict:
    """Stop and remove an agent from the runtime; keep its state and repos unless `purge`.

    An active agent: under its build lock (a running build finishes first; one a crash
    interrupted is ended as failed), its pending proposals are denied (Reason: agent
    destroyed), `runtime.destroy` removes it, meta gets one commit "destroy NAME"
    dropping its pin, and `agents/<name>/destroyed` marks it kept (no longer an active
    agent). With `purge`, then `agents/<name>`, `applied/<name>.git` and `logs/<name>`
    are deleted. A kept agent or a draft can only be purged. The manager cannot be
    destroyed.

    Returns `{"name", "purged", "meta" (the meta commit or None), "denied" [ids]}`.
    """
    check_agent_name(name)
    home.require()
    if name == MANAGER:
        raise BadInput("the manager cannot be destroyed: the hive needs it")
    applied = home.applied_dir(name)
    if not (applied / "HEAD").is_file():
        if not home.agent_dir(name).exists():
            raise UnknownAgent(f"unknown agent {name!r}: `hyperhive agent list` shows the agents")
        if not purge:
            what = "a kept agent" if home.is_destroyed(name) else "a draft"
            raise BadInput(f"{name!r} is {what}, nothing runs: `--purge` deletes it")
        _purge(home, name)
        tokens.revoke_agent(home, name, actor)  # one destroyed before tokens were revoked
        notify.changed(home, name, "destroy")
        return {"name": name, "purged": True, "meta": None, "denied": []}
    result: dict = {"name": name, "purged": purge, "meta": None, "denied": []}
    with locked(build_lock(applied)):
        if home.is_destroyed(name):
            if not purge:
                marker = _marker(home, name)
                raise AlreadyDestroyed(
                    f"agent {name!r} was already destroyed by {marker.get('actor', '?')} "
                    "(state kept): `--purge` deletes it"
                )
        elif (applied / "HEAD").is_file():
            recover(home, name)  # a build a crash interrupted ends as failed first
            approvals = Approvals(home, name)
            for a in approvals.all(pending_only=True):
                approvals.deny(a.id, actor, DESTROY_REASON)
                result["denied"].append(a.id)
            commit = approvals.deployed_commit()
            runtime.destroy(name)
            result["meta"] = meta.record_destroy(home, name).decode()
            _write_marker(home, name, actor, commit)
        else:  # purged by a concurrent call while this one waited for the lock
            raise UnknownAgent(f"unknown agent {name!r}: it was just purged")
        if purge:
            _purge(home, name)
        tokens.revoke_agent(home, name, actor)  # the name may be taken again once purged
    notify.changed(home, name, "destroy")
    return result
