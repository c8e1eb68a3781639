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
from support.hive import fake_program, fresh_commit, git

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
    home = dataclasses.replace(home, deploys=lambda name, approval_id: 0)  # no hook process
    approvals = Approvals(home, "manager")

    approvals.approve(1, "operator")
    deploy(home, "manager", 1, runtime)
    assert calls.read_text().count("flake lock") == 1
    first = meta_lock(home)
    rev = meta.pins(home)["manager"]["rev"]
    assert json.loads(first)["nodes"]["agent-manager"]["locked"]["rev"] == rev

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

    def failing(flake: bytes, previous: bytes | None, urls=()) -> bytes | None:
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
