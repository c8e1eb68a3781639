"""The receive path of a push, in process through the forge's git remote (Flask's test
client): the pack indexed and checked by `git index-pack --strict` in the quarantine —
objects it lacks, malformed objects, a tip that never came — and fast-forward checks of
histories longer than the Python walk, each refusal leaving nothing behind."""

import subprocess
from pathlib import Path

import pytest
from support.gitcli import ZERO, fast_import, objects_of, ok_git, pack_between, refs_of
from support.hive import git

from forge_ui import create_app
from hyperhive import operator
from hyperhive.gitstore.gitcli import ANCESTRY_WALK
from hyperhive.hive import Hive
from hyperhive.workflow.approvals import Approvals


def pkt(line: bytes) -> bytes:
    return b"%04x" % (len(line) + 4) + line


def push(home, runtime, commands: list[tuple[str, str, str]], pack: bytes) -> bytes:
    """POST one receive-pack request for the manager's config repo; git's report."""
    client = create_app(Hive(home, runtime)).test_client()
    lines = [f"{old} {new} {ref}".encode() for old, new, ref in commands]
    lines[0] += b"\0report-status side-band-64k"
    body = b"".join(pkt(line + b"\n") for line in lines) + b"0000" + pack
    r = client.post(
        "/git/manager/config.git/git-receive-pack",
        data=body,
        headers={
            "Authorization": f"Bearer {operator.token(home)}",
            "Content-Type": "application/x-git-receive-pack-request",
        },
    )
    assert r.status_code == 200, r.get_data()
    return r.get_data()


@pytest.fixture
def work(home, tmp_path: Path) -> Path:
    """A clone of the manager's config repo."""
    path = tmp_path / "work"
    ok_git(tmp_path, "clone", "-q", str(home.config_dir("manager")), str(path))
    return path


def unchanged(home, before: tuple) -> bool:
    config = home.config_dir("manager")
    return (refs_of(config), objects_of(config)) == before and Approvals(
        home, "manager"
    ).states().keys() == {1}


def state(home) -> tuple:
    config = home.config_dir("manager")
    return refs_of(config), objects_of(config)


def objects_pack(work: Path, *shas: str) -> bytes:
    """A pack of exactly these objects, made by git."""
    return subprocess.run(
        ["git", "pack-objects", "--stdout"],
        cwd=work,
        input="".join(f"{s}\n" for s in shas).encode(),
        capture_output=True,
        check=True,
    ).stdout


def test_a_pack_without_an_object_its_commit_names_is_refused(home, runtime, work):
    old = ok_git(work, "rev-parse", "HEAD").strip()
    (work / "new.md").write_text("a blob the pack leaves out\n")
    ok_git(work, "add", "new.md")
    ok_git(work, "-c", "user.name=m", "-c", "user.email=m@x", "commit", "-qm", "new")
    new = ok_git(work, "rev-parse", "HEAD").strip()
    tree, blob = ok_git(work, "rev-parse", "HEAD^{tree}", "HEAD:new.md").split()
    before = state(home)

    reply = push(home, runtime, [(old, new, "refs/for/main")], objects_pack(work, new, tree))

    assert b"unpack missing objects" in reply and b"ng refs/for/main missing objects" in reply
    assert f"the push lacks object {blob}".encode() in reply
    assert unchanged(home, before)


def test_a_malformed_commit_is_refused_by_gits_fsck(home, runtime, work):
    tree = ok_git(work, "rev-parse", "HEAD^{tree}").strip()
    raw = f"tree {tree}\nauthor m <m@x> 1700000000 +0000\ncommitter nobody\n\nbad\n"
    bad = (
        subprocess.run(
            ["git", "hash-object", "-t", "commit", "-w", "--literally", "--stdin"],
            cwd=work,
            input=raw.encode(),
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    before = state(home)

    reply = push(home, runtime, [(ZERO, bad, "refs/for/main")], objects_pack(work, bad))

    assert b"ng refs/for/main malformed object" in reply
    assert f"object {bad} is malformed".encode() in reply
    assert unchanged(home, before)


def test_a_tip_the_push_never_sent_is_refused(home, runtime, work):
    old = ok_git(work, "rev-parse", "HEAD").strip()
    (work / "a.md").write_text("a\n")
    ok_git(work, "add", "a.md")
    ok_git(work, "-c", "user.name=m", "-c", "user.email=m@x", "commit", "-qm", "a")
    new = ok_git(work, "rev-parse", "HEAD").strip()
    pack = pack_between(work, old, new)
    absent = "1" * 40
    before = state(home)

    reply = push(home, runtime, [(ZERO, absent, "refs/for/main")], pack)

    assert b"ng refs/for/main missing objects" in reply
    assert f"the push lacks object {absent}, its tip".encode() in reply
    assert unchanged(home, before)


def test_main_fast_forwards_over_a_history_longer_than_the_python_walk(home, runtime, work):
    """Past ANCESTRY_WALK commits `git merge-base` answers, in the quarantine (the pushed
    commits are in no ref yet): a fast-forward moves main and its checkout, a push that
    drops main's tip is refused and writes nothing."""
    config = home.config_dir("manager")
    old = ok_git(work, "rev-parse", "HEAD").strip()
    shas = fast_import(work, ANCESTRY_WALK + 50)
    new = shas[-1]
    ok_git(work, "checkout", "-q", "-B", "main", new)
    reply = push(home, runtime, [(old, new, "refs/heads/main")], pack_between(work, old, new))
    assert b"ok refs/heads/main" in reply, reply
    assert git(config, "rev-parse", "main").strip() == new
    assert (config / "f.txt").read_text() == f"{ANCESTRY_WALK + 49}\n"
    assert git(config, "status", "--porcelain") == ""

    # a long history on top of an older commit: main's tip is not in it
    ok_git(work, "checkout", "-q", "-B", "main", old)
    other = fast_import(work, ANCESTRY_WALK + 10, path="g.txt")[-1]
    before = state(home)
    reply = push(home, runtime, [(new, other, "refs/heads/main")], pack_between(work, new, other))
    assert b"ng refs/heads/main non-fast-forward" in reply
    assert state(home) == before


def test_a_push_of_known_commits_leaves_no_empty_pack(home, runtime, work):
    """git sends an empty pack when the remote has every object: nothing is kept."""
    old = ok_git(work, "rev-parse", "HEAD").strip()
    (work / "b.md").write_text("b\n")
    ok_git(work, "add", "b.md")
    ok_git(work, "-c", "user.name=m", "-c", "user.email=m@x", "commit", "-qm", "b")
    new = ok_git(work, "rev-parse", "HEAD").strip()
    reply = push(home, runtime, [(old, new, "refs/heads/main")], pack_between(work, old, new))
    assert b"ok refs/heads/main" in reply, reply
    files = objects_of(home.config_dir("manager"))
    empty = pack_between(work, new, new)
    assert empty[8:12] == bytes(4)

    reply = push(home, runtime, [(ZERO, new, "refs/for/main")], empty)

    assert b"ok refs/for/main" in reply, reply
    assert Approvals(home, "manager").get(2).commit == new
    assert objects_of(home.config_dir("manager")) == files
