"""The hive from outside: the installed CLI as a subprocess, the git CLI on its repos, a
forge session for Flask's test client, small programs on a PATH."""

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from dulwich.object_store import iter_tree_contents

from hyperhive.gitstore.history import write_commit
from hyperhive.gitstore.repos import open_repo
from hyperhive.home import Home
from hyperhive.workflow.states import State

# The states by their initials, for tests that spell out histories.
SHORT_STATES = (
    State.PROPOSAL,
    State.APPROVED,
    State.DENIED,
    State.BUILDING,
    State.DEPLOYED,
    State.FAILED,
)

# The password tests give the operator (and other accounts) when they log in.
PASSWORD = "correct horse battery"

HYPERHIVE = str(Path(sys.executable).parent / "hyperhive")


def git(cwd: Path, *args: str) -> str:
    """Run the stock git CLI to check what the engine wrote."""
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def run_cli(home: Path, *args: str, env: dict | None = None, check: bool = False, **kw):
    """Run the installed `hyperhive` console script in its own process."""
    full_env = {**os.environ, "HYPERHIVE_HOME": str(home), **(env or {})}
    proc = subprocess.run(
        [HYPERHIVE, *args], env=full_env, capture_output=True, text=True, timeout=120, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"hyperhive {args} exited {proc.returncode}: {proc.stderr}")
    return proc


def commit_config(home: Home, name: str, files: dict[str, str], message: str) -> str:
    """Commit files to an agent's proposed config repo with the git CLI, as the manager
    would; returns the new commit id."""
    config = home.config_dir(name)
    for rel, content in files.items():
        path = config / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    git(config, "add", "-A")
    git(
        config,
        "-c",
        "user.name=manager",
        "-c",
        "user.email=manager@hyperhive",
        "commit",
        "-q",
        "-m",
        message,
    )
    return git(config, "rev-parse", "HEAD").strip()


_fresh = iter(range(1, 1 << 30))


def fresh_commit(home: Home, name: str) -> str:
    """A new commit on top of the config repo's HEAD (HEAD stays), with a tree no other
    commit has: something new to propose (the same tree again is "no new changes")."""
    with open_repo(home.config_dir(name)) as repo:
        head = repo.head()
        files = {
            e.path.decode(): repo[e.sha].data
            for e in iter_tree_contents(repo.object_store, repo[head].tree)
        }
        files["fresh.txt"] = f"{next(_fresh)} {time.time_ns()}\n".encode()
        return write_commit(repo, files, "something new\n", "manager", [head]).decode()


def log_in(client, home: Home, account: str = "alice"):
    """Give a Flask test client a real forge session of operator account `account` (made
    if missing), as the login form would; returns the client."""
    from hyperhive import operator, sessions
    from hyperhive.settings import Forge

    if account not in {a["name"] for a in operator.accounts(home)}:
        operator.add(home, account)
    sid = sessions.start(home, account, sessions.Lifetime.of(Forge()))
    with client.session_transaction() as s:
        s.permanent = True
        s["sid"], s["account"] = sid, account
    return client


def csrf_in(page: str) -> str:
    """The CSRF token a forge page's HTML carries."""
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


def csrf(client, path: str = "/") -> str:
    """The CSRF token of a forge page read with a (logged-in) test client."""
    return csrf_in(client.get(path).get_data(as_text=True))


def fake_program(bindir: Path, name: str, script: str) -> Path:
    """Put a small executable named `name` on a PATH directory."""
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(script))
    path.chmod(0o755)
    return path
