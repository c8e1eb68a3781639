"""The meta flake is locked only when its inputs change (workflow/meta.py): a meta commit
whose inputs are those the previous lock locked keeps that lock byte for byte, without
starting nix, and real `nix flake lock` agrees it is current."""

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.gitcli import fast_import
from support.hive import fake_program, fresh_commit, git

from hyperhive.gitstore import refs
from hyperhive.gitstore.repos import open_repo
from hyperhive.home import Home
from hyperhive.workflow import meta
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import deploy

NIX = shutil.which("nix")


def meta_lock(home: Home) -> bytes:
    return subprocess.run(
        ["git", "--git-dir", str(home.meta_dir), "show", "main:flake.lock"],
        check=True,
        capture_output=True,
    ).stdout


@pytest.mark.skipif(NIX is None, reason="nix is not installed")
def test_unchanged_inputs_keep_the_lock_without_nix_and_a_new_rev_relocks(
    home: Home, runtime, tmp_path: Path, monkeypatch
):
    calls = tmp_path / "nix-calls"
    fake_program(tmp_path / "bin", "nix", f'echo "$*" >> "{calls}"\nexec "{NIX}" "$@"\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nix's git clones here
    home = dataclasses.replace(home, deploys=lambda name, approval_id: 0)  # no hook process
    approvals = Approvals(home, "manager")

    approvals.approve(1, "operator")
    deploy(home, "manager", 1, runtime)
    assert calls.read_text().count("flake lock") == 1
    first = meta_lock(home)
    rev = meta.pins(home)["manager"]["rev"]
    assert json.loads(first)["nodes"]["agent-manager"]["locked"]["rev"] == rev
    # nix fetched the pin into its clone of the applied repo, and none of the workflow
    # tags that point at the same commit (each would be a ref there, forever)
    assert git(home.applied_dir("manager"), "tag", "--points-at", rev).split()
    # the clone's directory, not its .lock file (a glob of "*[!k]" missed a name ending in k)
    (clone,) = (p for p in (tmp_path / "cache" / "nix" / "gitv3").iterdir() if p.is_dir())
    assert git(clone, "for-each-ref", "--format=%(refname)").split() == [meta.pin_ref(rev)]

    # The same revision pinned again (what recovery does after a crash): same inputs.
    meta.record_deploy(home, "manager", 1, rev)
    assert calls.read_text().count("flake lock") == 1  # no nix started
    assert meta_lock(home) == first
    # and nix itself finds nothing to change in that lock
    checkout = tmp_path / "meta"
    git(tmp_path, "clone", "-q", str(home.meta_dir), str(checkout))
    subprocess.run(
        [NIX, "--extra-experimental-features", "nix-command flakes", "flake", "lock"],
        cwd=checkout,
        check=True,
        capture_output=True,
    )
    assert (checkout / "flake.lock").read_bytes() == first

    # A new revision is a changed input: locked again, by nix.
    a = approvals.propose(fresh_commit(home, "manager"), "manager")
    approvals.approve(a.id, "operator")
    deploy(home, "manager", a.id, runtime)
    assert calls.read_text().count("flake lock") == 2
    relocked = json.loads(meta_lock(home))
    assert relocked["nodes"]["agent-manager"]["locked"]["rev"] == meta.pins(home)["manager"]["rev"]
    assert relocked["nodes"]["agent-manager"]["locked"]["rev"] != rev


def lock_of(inputs: dict[str, dict]) -> bytes:
    """A lock as nix writes it, locking `inputs`."""
    nodes: dict = {"root": {"inputs": {n: n for n in inputs}}}
    for name, original in inputs.items():
        nodes[name] = {"flake": False, "locked": {**original, "narHash": "x"}, "original": original}
    return json.dumps({"nodes": nodes, "root": "root", "version": 7}, indent=2).encode()


def test_a_lock_is_current_only_for_exactly_its_inputs(home: Home):
    rev, other = "a" * 40, "b" * 40
    inputs = meta.flake_inputs(home, {"manager": {"rev": rev}}, None)
    assert inputs == {
        "agent-manager": {
            "ref": f"refs/hyperhive/pins/{rev}",
            "rev": rev,
            "type": "git",
            "url": f"file://{home.applied_dir('manager')}",
        }
    }
    assert meta.lock_is_current(lock_of(inputs), inputs)
    moved = meta.flake_inputs(home, {"manager": {"rev": other}}, None)
    assert not meta.lock_is_current(lock_of(inputs), moved)  # a new revision
    more = meta.flake_inputs(home, {"manager": {"rev": rev}, "coder": {"rev": rev}}, None)
    assert not meta.lock_is_current(lock_of(inputs), more)  # an agent added
    assert not meta.lock_is_current(lock_of(more), inputs)  # an agent removed
    nixos = meta.NixosInputs("/nix/store/src", "/nix/store/nixpkgs")
    with_host = meta.flake_inputs(home, {"manager": {"rev": rev}}, nixos)
    assert with_host["nixpkgs"] == {"path": "/nix/store/nixpkgs", "type": "path"}
    assert not meta.lock_is_current(lock_of(inputs), with_host)
    assert meta.lock_is_current(lock_of(with_host), with_host)
    follows = json.loads(lock_of(inputs))
    follows["nodes"]["root"]["inputs"]["agent-manager"] = ["nixpkgs"]
    for bad in (None, b"", b"not json", b"[]", b'{"nodes": {}}', json.dumps(follows).encode()):
        assert not meta.lock_is_current(bad, inputs)


def test_a_lock_that_nix_could_not_update_is_not_taken_for_current(home: Home, monkeypatch):
    """A failed `nix flake lock` keeps the previous (stale) lock beside the new flake: the
    next meta commit with the same inputs must lock again, not keep the stale one."""
    rev, other = "a" * 40, "b" * 40
    stale = lock_of(meta.flake_inputs(home, {"manager": {"rev": rev}}, None))
    tried = []

    def failing(flake: bytes, previous: bytes | None, *_) -> bytes | None:
        tried.append(previous)
        raise meta.LockError("nix flake lock: no network")

    monkeypatch.setattr(meta, "lock_flake", failing)
    monkeypatch.setattr(meta, "write_pin_refs", lambda home, pins: None)
    files = meta.tree_files(home, {"manager": {"rev": other}}, stale)
    assert files["flake.lock"] == stale and tried == [stale]
    meta.tree_files(home, {"manager": {"rev": other}}, files["flake.lock"])
    assert tried == [stale, stale]  # tried again
    files = meta.tree_files(home, {"manager": {"rev": rev}}, stale)
    assert files["flake.lock"] == stale and len(tried) == 2  # current: nix not asked


def test_the_no_tags_environment_keeps_git_config_already_set_and_git_honours_it(
    tmp_path: Path,
):
    env = meta.no_tags_env(["file:///a.git", "file:///b.git"], {"GIT_CONFIG_COUNT": "1"})
    assert env["GIT_CONFIG_COUNT"] == "3"
    assert (env["GIT_CONFIG_KEY_1"], env["GIT_CONFIG_VALUE_1"]) == (
        "remote.file:///a.git.tagOpt",
        "--no-tags",
    )
    assert env["GIT_CONFIG_KEY_2"] == "remote.file:///b.git.tagOpt"
    assert meta.no_tags_env([], {}) == {}
    assert meta.no_tags_env(["file:///a.git"], {"GIT_CONFIG_COUNT": "x"})["GIT_CONFIG_COUNT"] == "1"
    # what nix runs: `git fetch -- <url> <ref>:<ref>`, by URL, with no remote configured
    source, clones = tmp_path / "source.git", tmp_path / "clones"
    git(tmp_path, "init", "-q", "--bare", str(source))
    (rev,) = fast_import(source, 1)
    git(source, "tag", "-a", "-m", "proposal", "proposal/1", rev)
    git(source, "update-ref", "refs/hyperhive/pins/x", rev)
    url, spec = f"file://{source}", "refs/hyperhive/pins/x:refs/hyperhive/pins/x"
    for name, env in (("plain", os.environ), ("no-tags", meta.no_tags_env([url]))):
        git(tmp_path, "init", "-q", "--bare", str(clones / name))
        subprocess.run(
            ["git", "-C", str(clones / name), "fetch", "-q", "--", url, spec], env=env, check=True
        )
    listed = {
        name: git(clones / name, "for-each-ref", "--format=%(refname)").split()
        for name in ("plain", "no-tags")
    }
    assert listed == {
        "plain": ["refs/hyperhive/pins/x", "refs/tags/proposal/1"],  # git's default
        "no-tags": ["refs/hyperhive/pins/x"],
    }


def test_pins_are_packed_past_the_threshold_and_git_reads_them_all(home: Home, monkeypatch):
    """One pin per deploy: past PACK_LOOSE_TAGS loose ones they are packed (under the
    applied repo's transition lock), every one still where git finds it, the tags kept."""
    monkeypatch.setattr(refs, "PACK_LOOSE_TAGS", 3)
    applied = home.applied_dir("manager")
    approvals = Approvals(home, "manager")
    revs = [approvals.propose(fresh_commit(home, "manager"), "manager").commit for _ in range(6)]
    tags = git(applied, "for-each-ref", "refs/tags/")
    for n, rev in enumerate(revs, start=1):
        meta.write_pin_refs(home, {"manager": {"rev": rev}})
        assert refs.count_loose(applied, meta.PIN_PREFIX) <= 4
        listed = git(
            applied, "for-each-ref", "--format=%(refname) %(objectname)", "refs/hyperhive/pins/"
        )
        assert sorted(listed.splitlines()) == sorted(f"{meta.pin_ref(r)} {r}" for r in revs[:n])
    assert refs.count_loose(applied, meta.PIN_PREFIX) < 6  # some were packed
    assert (applied / "packed-refs").read_bytes().startswith(refs.PACKED_HEADER)
    assert git(applied, "for-each-ref", "refs/tags/") == tags
    git(applied, "fsck", "--strict", "--no-dangling")
    meta.write_pin_refs(home, {"manager": {"rev": revs[0]}})  # packed already: kept as it is
    assert git(applied, "rev-parse", meta.pin_ref(revs[0])).strip() == revs[0]
    # tag packing and retention's deletions rewrite packed-refs too: the pins stay
    with open_repo(applied) as repo:
        refs.pack(repo)
    assert len(git(applied, "for-each-ref", "refs/hyperhive/pins/").splitlines()) == 6


@pytest.mark.skipif(NIX is None, reason="nix is not installed")
def test_the_lock_works_in_the_meta_repo_and_sweeps_what_a_killed_lock_left(tmp_path: Path):
    """A deploy killed during `nix flake lock` leaves its temporary flake behind: in the
    hive's meta repo (not the system's temp dir), removed by a later lock once it is older
    than any lock can run; a younger one may be a lock running now and is kept."""
    work = tmp_path / "meta.git"
    work.mkdir()
    left, running = work / f"{meta.LOCK_TEMP_PREFIX}left", work / f"{meta.LOCK_TEMP_PREFIX}now"
    for d in (left, running):
        d.mkdir()
        (d / "flake.nix").write_text("{}")
    old = os.stat(left).st_mtime - 2 * meta.LOCK_TIMEOUT - 1
    os.utime(left, (old, old))
    flake = b'{ inputs.x.url = "path:/nonexistent-input"; outputs = { self, x }: { }; }\n'
    with pytest.raises(meta.LockError):  # nix ran on the flake written in `work`
        meta.lock_flake(flake, None, (), work)
    assert sorted(p.name for p in work.iterdir()) == [running.name]
