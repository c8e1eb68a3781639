"""Benchmark of review comments (hyperhive/workflow/comments.py): each of our figures
printed beside a reference measured in the same run, on the same machine, at N comments
on one approval (1x, 10x, 50x: 20, 200, 1000; past 200 the per-approval limit is raised
for the run).

(a) Append: one line comment (`comments.add`: the lock, the anchor checked against git,
    the quoted line read, one commit, the ref moved by compare-and-swap, the conversation
    rebuilt), beside the git CLI writing the same record: `git commit-tree` + `git
    update-ref REF NEW OLD` (two processes, no checks).
(b) Read the whole conversation, cold (every cache emptied first) and warm, beside `git
    log --format=%B REF` (one process).
(c) The review page (GET through the forge app) with N comments beside the same page of
    an approval without any.

Nothing here asserts a speed; the script checks that both sides hold the same number of
records. Run: .venv/bin/python bench/comments.py [--quick] (see bench/README.md).
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from transitions import ROWS, note, print_rows, record

from forge_ui import create_app
from hyperhive import operator, sessions
from hyperhive.agents import init_hive
from hyperhive.gitstore import chain
from hyperhive.hive import Hive
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime
from hyperhive.settings import Forge
from hyperhive.workflow import comments
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.comments import Anchor

REF_SAMPLES = 30  # git CLI appends measured per size (each is two processes)


def git(cwd: Path, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, input=stdin, check=True, capture_output=True, text=True
    ).stdout


def setup(root: Path) -> tuple[Home, str]:
    home = Home(root / "hive")
    init_hive(home, LocalRuntime(home), "operator")
    (home.applied_dir("manager") / "hooks" / "post-receive").unlink()
    config = home.config_dir("manager")
    (config / "agent.nix").write_text(
        "{ ... }:\n{\n" + "".join(f"  option{i} = {i};\n" for i in range(200)) + "}\n"
    )
    git(config, "add", "-A")
    git(config, "-c", "user.name=b", "-c", "user.email=b@h", "commit", "-qm", "200 options")
    a = Approvals(home, "manager").propose("HEAD", "bench")  # manager#2
    return home, a.commit


def cold() -> None:
    chain._records._items.clear()
    comments._reviews._items.clear()


def bench_size(home: Home, commit: str, n: int, approval_id: int, client) -> None:
    label = f"N={n}"
    applied = home.applied_dir("manager")
    start = len(comments.read(home, "manager", approval_id).comments)
    times = []
    for i in range(start, n):
        anchor = Anchor("agent.nix", "new", 3 + i % 200, commit)
        t = time.perf_counter()
        comments.add(home, "manager", approval_id, "bench", f"comment {i} " * 8, anchor)
        times.append(time.perf_counter() - t)
    record("a", "ours", f"comments.add, to {label}", times[-REF_SAMPLES:])

    ref = f"refs/bench/review-{n}"
    empty = git(applied, "hash-object", "-t", "tree", "-w", "--stdin", stdin="").strip()
    tip = None
    ref_times = []
    for i in range(REF_SAMPLES):
        message = f"comment {i}\n\nKind: comment\nComment: {i + 1}\n"
        t = time.perf_counter()
        parents = ["-p", tip] if tip else []
        new = git(applied, "commit-tree", empty, *parents, stdin=message).strip()
        git(applied, "update-ref", ref, new, *([tip] if tip else []))
        ref_times.append(time.perf_counter() - t)
        tip = new
    record("a", "ref", f"git commit-tree + update-ref ({REF_SAMPLES})", ref_times)

    reads, warm = [], []
    for _ in range(5):
        cold()
        t = time.perf_counter()
        review = comments.read(home, "manager", approval_id)
        reads.append(time.perf_counter() - t)
        t = time.perf_counter()
        comments.read(home, "manager", approval_id)
        warm.append(time.perf_counter() - t)
    assert len(review.comments) == n
    record("b", "ours", f"read {label}, cold", reads)
    record("b", "ours", f"read {label}, warm", warm)
    logs = []
    for _ in range(5):
        t = time.perf_counter()
        out = git(applied, "log", "--format=%B%x00", f"refs/hyperhive/review/{approval_id}")
        logs.append(time.perf_counter() - t)
    assert out.count("\0") == n
    record("b", "ref", f"git log --format=%B, {label}", logs)

    pages = []
    for _ in range(5):
        t = time.perf_counter()
        r = client.get(f"/review/manager/{approval_id}")
        pages.append(time.perf_counter() - t)
        assert r.status_code == 200 and r.get_data(as_text=True).count('class="comment') >= n
    record("c", "ours", f"review page, {label}", pages)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="N = 5 and 20 only")
    args = p.parse_args()
    sizes = [5, 20] if args.quick else [20, 200, 1000]
    with tempfile.TemporaryDirectory() as tmp:
        home, commit = setup(Path(tmp))
        comments.MAX_ENTRIES = max(sizes)
        hive = Hive(home, LocalRuntime(home))
        operator.set_password(home, "bench password")
        client = create_app(hive).test_client()
        sid = sessions.start(home, "operator", sessions.Lifetime.of(Forge()))
        with client.session_transaction() as s:
            s["sid"], s["account"] = sid, "operator"
        plain = []
        for _ in range(5):
            t = time.perf_counter()
            assert client.get("/review/manager/2").status_code == 200
            plain.append(time.perf_counter() - t)
        record("c", "ref", "review page, no comments", plain)
        for n in sizes:
            bench_size(home, commit, n, 2, client)
    print_rows(
        {
            "a": "(a) append one line comment (the last appends of each size)",
            "b": "(b) read the whole conversation",
            "c": "(c) GET /review/manager/2 through the forge app",
        }
    )
    note(
        "ours: comments.add checks the anchor against git and reads the quoted line; the "
        "git CLI rows write the same kind of record with no check. Past 200 comments the "
        "per-approval limit was raised for this run."
    )
    del ROWS[:]
    return 0


if __name__ == "__main__":
    sys.exit(main())
