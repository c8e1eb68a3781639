"""The git remote of a real daemon: one daemon for a module (the `hive` fixture, imported
by the modules that use it), agents made for a test, clones over HTTP with a token."""

from pathlib import Path

import pytest

from hyperhive import operator, tokens
from hyperhive.agents import create_agent
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime

from .daemon import Daemon
from .gitcli import ok_git


@pytest.fixture(scope="module")
def hive(tmp_path_factory):
    """One daemon for the module; each test works on its own agents or clones."""
    d = Daemon(tmp_path_factory.mktemp("git") / "hive").start()
    try:
        d.home = Home(d.root)
        d.operator = operator.token(d.home)
        d.manager = tokens.state_file(d.home, "manager").read_text().strip()
        yield d
    finally:
        d.kill()


def url(hive, repo: str, token: str | None = None) -> str:
    auth = f"x:{token}@" if token else ""
    return f"http://{auth}127.0.0.1:{hive.port}/git/{repo}"


def agent(hive, name: str) -> str:
    create_agent(hive.home, name, LocalRuntime(hive.home), "operator")
    (hive.home.applied_dir(name) / "hooks" / "post-receive").unlink()  # no deploys here
    return name


def clone(hive, tmp_path: Path, repo: str, token: str) -> Path:
    work = tmp_path / repo.replace("/", "-")
    ok_git(tmp_path, "clone", "-q", url(hive, repo, token), str(work))
    return work
