"""The `home` fixture's copy of a template hive is the hive `init_hive` would have made
there (support/template.py)."""

import os
import re
import subprocess
import time
from collections import Counter

import pytest
from support.hive import git
from support.template import (
    TemplateNamesItsPath,
    copy_hive,
    current_umask,
    make_template,
    own_path_in,
)

from hyperhive.agents import init_hive
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime
from hyperhive.workflow.approvals import Approvals


def listing(root) -> Counter:
    """Every path under `root` with its kind (a link: its target) and permission bits;
    loose objects and their fan-out directories by kind and mode, not name or count (a
    commit's name has its time in it, and so the names two objects share a directory by)."""
    found = Counter()
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            kind = f"-> {os.readlink(path)}" if os.path.islink(path) else name in dirs
            rel = re.sub(r"/objects/[0-9a-f]{2}(/[0-9a-f]{38})?$", "/objects/<loose>", path)
            found[os.path.relpath(rel, root), kind, os.lstat(path).st_mode & 0o7777] = 1
    return found


def modified_before(root, ns: int) -> list[str]:
    """The paths under `root` (itself included) last modified before `ns`."""
    paths = [root, *root.rglob("*")]
    return [str(p) for p in paths if os.lstat(p).st_mtime_ns < ns]


def test_a_copied_hive_is_the_one_init_hive_makes(tmp_path, hive_template):
    fresh = Home(tmp_path / "fresh")
    init_hive(fresh, LocalRuntime(fresh), "operator")
    started = time.time_ns() - 10_000_000  # a coarse file system clock's step
    copied = copy_hive(hive_template, tmp_path / "copied")
    assert listing(copied.root) == listing(fresh.root)
    assert modified_before(copied.root, started) == []  # new, as init_hive's files are
    assert own_path_in(copied.root) == [] and own_path_in(fresh.root) == []
    # the same trees, and the git CLI finds the copy whole
    for repo in ("meta.git", "applied/manager.git", "agents/manager/config"):
        trees = [git(h.root / repo, "log", "--all", "--format=%T %s") for h in (fresh, copied)]
        assert trees[0] == trees[1] and trees[0]
        git(copied.root / repo, "fsck", "--strict")
    assert git(copied.config_dir("manager"), "status", "--porcelain") == ""
    (one,) = Approvals(copied, "manager").all()
    assert one.id == 1 and one.state == Approvals(fresh, "manager").all()[0].state
    # a copy is a hive of its own: what a test does to it leaves the template alone
    subprocess.run(["git", "-C", str(copied.config_dir("manager")), "rm", "-q", "-r", "."])
    assert (hive_template.config_dir("manager") / "agent.nix").is_file()


def test_a_template_is_made_per_umask(tmp_path, hive_templates):
    """The CLI's main() restricts the process's umask (a worker's, after a test called it
    in-process): a hive made under another umask has other permissions, and so does the
    copy of its template."""
    before = hive_templates.current()
    other = 0o022 if current_umask() == 0o027 else 0o027
    old = os.umask(other)
    try:
        fresh = Home(tmp_path / "fresh")
        init_hive(fresh, LocalRuntime(fresh), "operator")
        template = hive_templates.current()
        copied = copy_hive(template, tmp_path / "copied")
    finally:
        os.umask(old)
    assert template is not before and hive_templates.current() is before
    assert listing(copied.root) == listing(fresh.root) != listing(before.root)


def test_a_template_that_names_its_own_path_is_refused(tmp_path, monkeypatch):
    real = init_hive

    def init_naming_itself(home, runtime, actor):
        real(home, runtime, actor)
        (home.root / "run" / "where").write_text(f"{home.root}/run\n")

    monkeypatch.setattr("support.template.init_hive", init_naming_itself)
    with pytest.raises(TemplateNamesItsPath, match=r"\['run/where'\]"):
        make_template(tmp_path / "hive")
