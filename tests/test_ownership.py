"""The ownership plan for an agent's state directory under a user-namespace mapping, and
its application (as root), never following a symlink out of the tree."""

import os
from pathlib import Path

import pytest

from hyperhive.runtime.ownership import (
    Chown,
    OwnershipError,
    apply,
    base_from_id_map,
    host_ids,
    plan,
)

BASE = 0x50000  # 327680: a 65536-aligned base as --private-users=pick chooses
UID, GID = BASE + 1000, BASE + 100

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """state/ with files, a subdirectory, and symlinks in and out of the tree; outside/
    holds what the links point at."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host file\n")
    state = tmp_path / "state"
    (state / "sub" / "deeper").mkdir(parents=True)
    (state / "notes.md").write_text("notes\n")
    (state / "sub" / "b.txt").write_text("b\n")
    (state / "sub" / "deeper" / "c.txt").write_text("c\n")
    (state / "link-out").symlink_to(outside / "secret")
    (state / "sub" / "dir-out").symlink_to(outside)
    (state / "link-in").symlink_to("notes.md")
    (state / "dangling").symlink_to(tmp_path / "nowhere")
    return state, outside


def test_host_ids_shift_by_the_base():
    assert host_ids(BASE, 1000, 100) == (UID, GID)
    assert host_ids(0, 1000, 100) == (1000, 100)  # a container without a user namespace
    with pytest.raises(OwnershipError):
        host_ids(BASE, 65536, 100)
    with pytest.raises(OwnershipError):
        host_ids(-1, 0, 0)


def test_the_plan_covers_the_tree_and_nothing_outside(tree):
    state, outside = tree
    chowns = plan(state, BASE, 1000, 100)
    assert chowns[0] == Chown(state, UID, GID)  # the state directory first
    assert {c.path.relative_to(state).as_posix() for c in chowns} == {
        ".",
        "notes.md",
        "sub",
        "sub/b.txt",
        "sub/deeper",
        "sub/deeper/c.txt",
        "link-out",
        "sub/dir-out",
        "link-in",
        "dangling",
    }
    assert {(c.uid, c.gid) for c in chowns} == {(UID, GID)}
    assert not any(c.path.is_relative_to(outside) for c in chowns)


def test_a_state_directory_that_is_a_symlink_is_refused(tree, tmp_path: Path):
    state, outside = tree
    (tmp_path / "state-link").symlink_to(outside)
    with pytest.raises(OwnershipError, match="not a directory"):
        plan(tmp_path / "state-link", BASE, 1000, 100)


def test_a_hard_link_to_a_foreign_file_is_left_out(tree):
    state, outside = tree
    os.link(outside / "secret", state / "hardlink")
    paths = {c.path for c in plan(state, BASE, 1000, 100)}
    assert state / "hardlink" not in paths
    assert state / "notes.md" in paths


def test_uid_map_parsing():
    assert base_from_id_map("         0     655360      65536\n") == 655360
    assert base_from_id_map("         0          0 4294967295\n") == 0
    with pytest.raises(OwnershipError):
        base_from_id_map("      1000       1000          1\n")
    with pytest.raises(OwnershipError):
        base_from_id_map("")


def owner(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


@needs_root
def test_apply_chowns_the_tree_and_never_a_link_target(tree):
    state, outside = tree
    before = {p: owner(p) for p in (outside, outside / "secret")}
    chowns = plan(state, BASE, 1000, 100)
    assert apply(chowns) == len(chowns)
    for c in chowns:
        assert owner(c.path) == (UID, GID), c.path
    assert {p: owner(p) for p in before} == before  # link targets untouched
    assert apply(chowns) == 0  # idempotent: nothing left to change


@needs_root
def test_apply_does_not_follow_a_directory_swapped_for_a_symlink(tree, tmp_path: Path):
    """The container can rewrite its state between plan and apply: a directory replaced
    by a symlink to a host directory must not lead apply there."""
    state, outside = tree
    (outside / "b.txt").write_text("host b\n")
    (outside / "deeper").mkdir()
    (outside / "deeper" / "c.txt").write_text("host c\n")
    chowns = plan(state, BASE, 1000, 100)
    (state / "sub").rename(tmp_path / "moved-sub")
    (state / "sub").symlink_to(outside)
    before = {p: owner(p) for p in outside.rglob("*")}

    apply(chowns)
    assert {p: owner(p) for p in outside.rglob("*")} == before
    assert owner(outside) == (0, 0)
    assert owner(state / "notes.md") == (UID, GID)


@needs_root
def test_apply_skips_a_hard_link_made_after_the_plan(tree):
    state, outside = tree
    chowns = plan(state, BASE, 1000, 100)
    (state / "notes.md").unlink()
    os.link(outside / "secret", state / "notes.md")
    apply(chowns)
    assert owner(outside / "secret") == (0, 0)
