"""Diffs for pages: the O(n log n) line diff checked against git (its patches apply, its
counts are git's), and the budgets per file, page and line, through the review page."""

import random
import subprocess

import pytest
from support.gitcli import GitRepo
from support.hive import commit_config, git, log_in

from forge_ui import create_app
from forge_ui.diffcache import diff_page
from hyperhive.gitstore import linediff
from hyperhive.gitstore.diffs import DiffLimits, file_patches
from hyperhive.gitstore.packscan import stored_size
from hyperhive.gitstore.repos import open_repo
from hyperhive.hive import Hive
from hyperhive.workflow.approvals import Approvals


def replay(a: list, b: list) -> list:
    out = []
    for tag, i1, i2, j1, j2 in linediff.opcodes(a, b):
        if tag == "equal":
            assert a[i1:i2] == b[j1:j2]
            out += a[i1:i2]
        else:
            out += b[j1:j2]
    return out


def test_the_line_diff_rebuilds_the_new_side_for_random_edits():
    rng = random.Random(7)
    for _ in range(300):
        a = [rng.choice("abcdefg") for _ in range(rng.randint(0, 80))]
        b = list(a)
        for _ in range(rng.randint(0, 12)):
            at = rng.randint(0, len(b))
            if rng.random() < 0.4 and b:
                del b[min(at, len(b) - 1)]
            else:
                b.insert(at, rng.choice("abcxyz"))
        assert replay(a, b) == b


def test_the_patches_apply_with_git_and_count_as_git_does(tmp_path):
    g = GitRepo(tmp_path / "r")
    lines = [f"line {i}\n" for i in range(3000)]
    old = g.commit(
        {
            "a.txt": "".join(lines),
            "gone.md": "bye\n",
            "same.sh": "#!/bin/sh\n",
            "noeol.txt": "x\ny",
            "bin.dat": b"\0\1\2",
        }
    )
    changed = list(lines)
    for i in range(0, 3000, 7):
        changed[i] = f"edited {i}\n"
    changed[1500:1500] = ["inserted\n"] * 5
    del changed[10:20]
    (g.path / "same.sh").chmod(0o755)
    new = g.commit(
        {
            "a.txt": "".join(changed),
            "gone.md": None,
            "new/file.py": "print(1)\n",
            "noeol.txt": "x\nz",
            "bin.dat": b"\0\1\3",
        }
    )
    with open_repo(g.path) as repo:
        patches = file_patches(repo, old.encode(), new.encode(), DiffLimits(10**6, 10**6))
    assert {p.path: (p.added, p.removed) for p in patches if not p.binary} == {
        k: v for k, v in g.numstat(old, new).items() if k != "bin.dat"
    }
    assert [p.path for p in patches if p.binary] == ["bin.dat"]
    text = b"".join(p.text for p in patches if not p.binary)
    g.git("checkout", "-q", old)
    subprocess.run(["git", "apply", "--index", "-"], cwd=g.path, input=text, check=True)
    assert g.git("diff", "--cached", "--stat", new, "--", ".", ":!bin.dat") == ""


def test_budgets_per_file_page_and_line(tmp_path):
    g = GitRepo(tmp_path / "r")
    old = g.commit({f"f{i}.txt": "".join(f"{i} {n}\n" for n in range(3000)) for i in range(4)})
    files = {f"f{i}.txt": "".join(f"{i} {n} changed\n" for n in range(3000)) for i in range(4)}
    files["long.txt"] = "y" * 20_000 + "\n"
    files["zbig.txt"] = "".join(f"big {n}\n" for n in range(200_000))  # 2 MiB
    files["zhuge.txt"] = "".join(f"huge {n}\n" for n in range(500_000))  # 5.7 MiB
    new = g.commit(files)
    with open_repo(g.path) as repo:
        patches = {p.path: p for p in file_patches(repo, old.encode(), new.encode())}
        alone = file_patches(repo, old.encode(), new.encode(), only="f0.txt")
        big = file_patches(repo, old.encode(), new.encode(), only="zbig.txt")
        (huge,) = file_patches(repo, old.encode(), new.encode(), only="zhuge.txt")
        sha = repo[repo[new.encode()].tree][b"zbig.txt"][1]
        assert stored_size(repo.object_store, sha) == len(files["zbig.txt"])
    # each file shows 2,000 diff lines (of 6,000); the page 5,000 in all
    assert patches["f0.txt"].hidden == 4000 and patches["f0.txt"].added == 3000
    assert patches["f1.txt"].hidden == 4000
    assert patches["f2.txt"].hidden == 5000  # 1,000 left on the page
    assert patches["f3.txt"].skipped and patches["f3.txt"].added is None
    assert patches["long.txt"].skipped  # the page's budget is spent
    assert "large" in patches["zbig.txt"].skipped
    assert sum(p.text.count(b"\n+") + p.text.count(b"\n-") for p in patches.values()) < 5100
    # alone, a file gets the page's budget
    assert len(alone) == 1 and alone[0].hidden == 1000 and alone[0].added == 3000
    assert big[0].added == 200_000 and big[0].hidden == 200_000 - 5000
    assert "large" in huge.skipped and huge.added is None  # over 4 MiB: not even alone
    with open_repo(g.path) as repo:
        (long_line,) = file_patches(repo, old.encode(), new.encode(), only="long.txt")
    assert long_line.long_lines == 1
    assert b"+" + b"y" * 5000 + "\u2026".encode() + b"\n" in long_line.text


def test_the_review_page_of_a_huge_change_is_bounded_and_shows_a_file_alone(home, runtime):
    no_hook = home.applied_dir("manager") / "hooks" / "post-receive"
    no_hook.unlink()
    body = "".join(f"  option{n} = {n};\n" for n in range(30_000))
    commit_config(home, "manager", {"agent.nix": "{\n" + body + "}\n", "x.md": "x\n"}, "huge")
    approval = Approvals(home, "manager").propose("HEAD", "manager")
    client = log_in(create_app(Hive(home, runtime)).test_client(), home)

    page = client.get(f"/review/manager/{approval.id}").get_data(as_text=True)

    assert page.count('<tr class="add">') == 2000 + 1  # agent.nix's budget, then x.md
    assert "28" in page and "more diff lines not shown" in page
    link = f"/review/manager/{approval.id}?file=agent.nix"
    assert f'href="{link}"' in page
    alone = client.get(link).get_data(as_text=True)
    assert alone.count('<tr class="add">') == 5000
    assert "Showing agent.nix alone" in alone and "x.md" not in alone.split("Showing")[1]
    assert "git diff" in alone  # what is beyond a page


@pytest.mark.parametrize("view", ["unified", "split"])
def test_the_commit_page_uses_the_same_budgets(home, view):
    commit_config(home, "manager", {"agent.nix": "".join(f"# {n}\n" for n in range(9000))}, "c")
    with open_repo(home.config_dir("manager")) as repo:
        head = repo.head()
        files = diff_page(repo, repo[head].parents[0], head)
    assert files[0].hidden > 0 and sum(len(h.lines) for h in files[0].hunks) <= 2000
    assert git(home.config_dir("manager"), "rev-parse", "HEAD").strip() == head.decode()
