"""The `home` fixture's copy of a template hive is the hive `init_hive` would have made
there (support/template.py)."""

import os
import subprocess

import pytest
from support.hive import git
from support.template import TemplateNamesItsPath, copy_hive, make_template, own_path_in

from hyperhive.agents import init_hive
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime
from hyperhive.workflow.approvals import Approvals


def listing(root) -> dict[str, tuple[str, int]]:
    """Every path under `root`: its kind and permission bits."""
    found = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            kind = "link" if os.path.islink(path) else "dir" if name in dirs else "file"
            found[os.path.relpath(path, root)] = (kind, st.st_mode & 0o7777)
    return found


def test_a_copied_hive_is_the_one_init_hive_makes(tmp_path, hive_template):
    fresh = Home(tmp_path / "fresh")
    init_hive(fresh, LocalRuntime(fresh), "operator")
    copied = copy_hive(hive_template, tmp_path / "copied")
    assert listing(copied.root) == listing(fresh.root)
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


def test_a_template_that_names_its_own_path_is_refused(tmp_path, monkeypatch):
    real = init_hive

    def init_naming_itself(home, runtime, actor):
        real(home, runtime, actor)
        (home.root / "run" / "where").write_text(f"{home.root}/run\n")

    monkeypatch.setattr("support.template.init_hive", init_naming_itself)
    with pytest.raises(TemplateNamesItsPath, match=r"\['run/where'\]"):
        make_template(tmp_path / "hive")
