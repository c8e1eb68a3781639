"""Rename and copy detection (gitstore.renames) against the git CLI's own `git diff -M -C
--name-status` on real repositories, and its bounds."""

import random
import re
import subprocess
from pathlib import Path

import pytest
from dulwich.diff_tree import tree_changes
from dulwich.repo import Repo

from hyperhive.gitstore import renames
from hyperhive.gitstore.diffs import DiffLimits, file_patches


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    ).stdout.decode()


def commit(root: Path, files: dict[str, str | bytes | None]) -> str:
    for rel, content in files.items():
        p = root / rel
        if content is None:
            p.unlink()
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
    git(root, "add", "-A")
    git(root, "commit", "-q", "--allow-empty", "-m", "c")
    return git(root, "rev-parse", "HEAD").strip()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    return tmp_path


def ours(root: Path, a: str, b: str, limits: renames.RenameLimits | None = None) -> list[str]:
    """Our pairs in `git diff --name-status` form."""
    with Repo(str(root)) as repo:
        changes = list(
            tree_changes(repo.object_store, repo[a.encode()].tree, repo[b.encode()].tree)
        )
        out = []
        for p in renames.detect(repo.object_store, changes, limits or renames.RenameLimits()):
            code = {"added": "A", "deleted": "D", "modified": "M"}.get(p.status)
            if code:
                out.append(f"{code}\t{(p.new or p.old).path.decode()}")
            else:
                letter = "R" if p.status == "renamed" else "C"
                out.append(
                    f"{letter}{p.similarity:03d}\t{p.old.path.decode()}\t{p.new.path.decode()}"
                )
        return out


def theirs(root: Path, a: str, b: str, *extra: str) -> list[str]:
    return git(root, "diff", "-M", "-C", "--name-status", *extra, a, b).splitlines()


def lines(n: int, seed: int, width: int = 30) -> list[str]:
    rnd = random.Random(seed)
    return [
        "".join(rnd.choice("abcdefgh ") for _ in range(rnd.randint(0, width))) + "\n"
        for _ in range(n)
    ]


def test_renames_and_copies_as_git_names_them(root):
    body = lines(40, 1)
    other = lines(30, 2)
    kept = lines(50, 3)
    a = commit(
        root,
        {
            "src/moved.txt": "".join(body),
            "src/exact.txt": "".join(other),
            "lib/kept.py": "".join(kept),
            "gone.txt": "".join(lines(20, 4)),
            "crlf.txt": "".join(body[:20]).replace("\n", "\r\n"),
        },
    )
    edited = body[:10] + ["changed line\n"] * 5 + body[15:]
    b = commit(
        root,
        {
            "src/moved.txt": None,
            "dst/moved.txt": "".join(edited),  # a rename with an edit
            "src/exact.txt": None,
            "dst/exact-name.txt": "".join(other),  # an exact rename
            "lib/kept.py": "".join(kept[:45]) + "# edited\n",  # modified, and copied from
            "lib/copy.py": "".join(kept[:40]) + "# a copy\n",
            "gone.txt": None,  # deleted, nothing like it
            "fresh.txt": "".join(lines(25, 5)),  # added, nothing like it
            "crlf.txt": None,
            "lf.txt": "".join(body[:20]),  # CRLF -> LF: the same to git
        },
    )
    got, want = ours(root, a, b), theirs(root, a, b)
    assert sorted(got) == sorted(want)
    assert any(
        x.startswith("R") and x.endswith("dst/moved.txt") and not x.startswith("R100") for x in got
    )
    assert "R100\tsrc/exact.txt\tdst/exact-name.txt" in got
    assert any(x.startswith("C") and x.endswith("\tlib/kept.py\tlib/copy.py") for x in got)


def test_one_deleted_file_renamed_to_one_and_copied_to_another(root):
    body = "".join(lines(30, 7))
    a = commit(root, {"a.txt": body})
    b = commit(root, {"a.txt": None, "b.txt": body, "c.txt": body + "x\n"})
    assert sorted(ours(root, a, b)) == sorted(theirs(root, a, b))


@pytest.mark.parametrize("seed", range(6))
def test_random_edits_score_as_git_scores(root, seed):
    rnd = random.Random(seed)
    files = {
        f"d{k}/f{k}.txt": lines(rnd.randint(5, 60), seed * 100 + k, rnd.choice([10, 80, 200]))
        for k in range(6)
    }
    a = commit(root, {p: "".join(v) for p, v in files.items()})
    change: dict[str, str | None] = {}
    for p, v in files.items():
        v = list(v)
        for _ in range(rnd.randint(0, len(v))):
            v[rnd.randrange(len(v))] = rnd.choice(
                ["new\n", "other line here\n", v[rnd.randrange(len(v))]]
            )
        what = rnd.choice(["rename", "copy", "modify", "delete"])
        if what == "rename":
            change[p] = None
            change[p.replace("/f", "/moved-f")] = "".join(v)
        elif what == "copy":
            change[p.replace("/f", "/copy-f")] = "".join(v)
            change[p] = "".join(files[p]) + "tail\n"  # -C copies from a changed file only
        elif what == "modify":
            change[p] = "".join(v) + "more\n"
        else:
            change[p] = None
    b = commit(root, change)
    assert sorted(ours(root, a, b)) == sorted(theirs(root, a, b))


def test_past_the_file_limit_renames_are_not_scored_as_git_with_l(root):
    a = commit(root, {f"f{k}.txt": "".join(lines(20, k)) for k in range(3)})
    b = commit(
        root,
        {
            **{f"f{k}.txt": None for k in range(3)},
            **{f"g{k}.txt": "".join(lines(20, k)[:-1]) for k in range(3)},
        },
    )
    small = renames.RenameLimits(files=2)
    got = ours(root, a, b, small)
    assert sorted(got) == sorted(theirs(root, a, b, "-l2"))
    assert all(x[0] in "AD" for x in got)
    assert all(x[0] == "R" for x in ours(root, a, b))


def test_blob_and_total_byte_bounds_leave_a_deletion_and_an_addition(root):
    big = "".join(lines(2000, 9))
    a = commit(root, {"big.txt": big, "small.txt": "".join(lines(20, 10))})
    b = commit(
        root,
        {
            "big.txt": None,
            "big2.txt": big + "x\n",
            "small.txt": None,
            "small2.txt": "".join(lines(20, 10)) + "y\n",
        },
    )
    assert sorted(ours(root, a, b)) == sorted(theirs(root, a, b))
    capped = ours(root, a, b, renames.RenameLimits(blob_bytes=len(big) // 2))
    assert "A\tbig2.txt" in capped and "D\tbig.txt" in capped
    assert any(x.startswith("R") and x.endswith("small2.txt") for x in capped)
    none = ours(root, a, b, renames.RenameLimits(total_bytes=1000))
    assert all(x[0] in "AD" for x in none)


def test_file_patches_show_a_rename_as_one_file_with_its_diff(root):
    body = lines(40, 11)
    a = commit(root, {"old/name.txt": "".join(body)})
    b = commit(
        root, {"old/name.txt": None, "new/name.txt": "".join(body[:20] + ["mid\n"] + body[21:])}
    )
    with Repo(str(root)) as repo:
        (p,) = file_patches(repo, a.encode(), b.encode())
    assert (p.status, p.old_path, p.path) == ("renamed", "old/name.txt", "new/name.txt")
    assert (p.added, p.removed) == (1, 1)
    numstat = git(root, "diff", "-M", "-C", "--numstat", a, b).split("\t")
    assert (int(numstat[0]), int(numstat[1])) == (1, 1)
    assert p.similarity == int(theirs(root, a, b)[0][1:4])
    # the text is what git writes for the same rename, hunks and all
    want = git(root, "diff", "-M", "-C", "--full-index", a, b).split("\n", 1)[1]
    assert (
        b"similarity index %d%%\nrename from old/name.txt\nrename to new/name.txt\n" % p.similarity
        in p.text
    )
    hunks = re.sub(r"^(@@ [^@]+ @@).*$", r"\1", want.split("--- ", 1)[1], flags=re.M)  # no funcname
    assert p.text.split(b"--- ", 1)[1] == hunks.encode()
    with Repo(str(root)) as repo:
        off = file_patches(
            repo, a.encode(), b.encode(), DiffLimits(renames=renames.RenameLimits(files=0))
        )
    assert sorted(x.status for x in off) == ["added", "deleted"]
