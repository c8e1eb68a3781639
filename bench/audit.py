"""Benchmark of the audit that survives retention: pruning T ended approvals (each with
four tags, proposal -> approved -> building -> failed) at 1x/10x/50x, and reading the
history back before and after.

Ours: `retention.prune` (one meta record that keeps every removed tag object whole) and
`history_json` (which reads the removed tags back from the record) before and after.
Reference, on the same repo in the same run: `git for-each-ref` printing every tag's
whole message before the prune (what reading the history costs git when the tags are
there), and `git log -1 --format=%B` of the record after it (git reading the record).
Checks: the history before and after differs only in `pruned_on`. Nothing is asserted
about speed. Run: .venv/bin/python bench/audit.py [--quick]
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hyperhive.agents import init_hive
from hyperhive.gitstore.tags import write_tag
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime
from hyperhive.workflow.approvals import Approvals, history_json
from hyperhive.workflow.lock import locked, transition_lock
from hyperhive.workflow.retention import DAY, prune
from hyperhive.workflow.states import State, tag_ref

PATH = (State.PROPOSAL, State.APPROVED, State.BUILDING, State.FAILED)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return proc.stdout


def strip(data):
    if isinstance(data, dict):
        return {k: strip(v) for k, v in data.items() if k != "pruned_on"}
    if isinstance(data, list):
        return [strip(v) for v in data]
    return data


def fill(home: Home, approvals: int) -> None:
    """`approvals` failed approvals of the manager, 40 days old, with reasons."""
    a = Approvals(home, "manager")
    commit = a.get(1).commit.encode()
    at = int(time.time() - 40 * DAY)
    with a.repo() as repo, locked(transition_lock(a.dir)):
        for _ in range(approvals):
            i = a._next_id(repo)
            for s in PATH:
                trailers = {"Reason": f"reason {i}: build failed at step {s}"}
                if s is State.FAILED:
                    body = "\n".join(f"| log line {n} of build {i}" for n in range(50))
                else:
                    body = ""
                write_tag(
                    repo,
                    tag_ref(s, i),
                    commit,
                    "bench",
                    f"{s} manager#{i}",
                    trailers,
                    body,
                    when=at,
                )


def one(root: Path, approvals: int) -> str:
    home = Home(root / f"hive-{approvals}")
    init_hive(home, LocalRuntime(home), "operator")
    (home.applied_dir("manager") / "hooks" / "post-receive").unlink()
    fill(home, approvals)
    applied = home.applied_dir("manager")
    fmt = "--format=%(refname) %(taggername) %(taggerdate:unix)%0a%(contents)"
    t_git_before, _ = timed(lambda: git(applied, "for-each-ref", fmt, "refs/tags/"))
    t_before, before = timed(lambda: history_json(home, "manager"))
    t_prune, report = timed(lambda: prune(home, 30))
    t_after, after = timed(lambda: history_json(home, "manager"))
    t_git_after, message = timed(lambda: git(home.meta_dir, "log", "-1", "--format=%B", "main"))
    if strip(json.loads(json.dumps(after))) != strip(json.loads(json.dumps(before))):
        raise SystemExit("the history after the prune differs in more than pruned_on")
    tags = len(report.removed)
    return (
        f"{approvals:>5} approvals, {tags:>6} tags | prune {t_prune:6.2f} s, record "
        f"{len(message.encode()) / 2**10:7.0f} KiB | history before {t_before:6.3f} s, "
        f"after {t_after:6.3f} s | ref: git for-each-ref messages {t_git_before:6.3f} s, "
        f"git log of the record {t_git_after:6.3f} s"
    )


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10 and 100 approvals only")
    p.add_argument("--base", type=int, default=20, help="approvals at 1x (default 20)")
    args = p.parse_args(argv)
    sizes = [10, 100] if args.quick else [args.base, args.base * 10, args.base * 50]
    root = Path(tempfile.mkdtemp(prefix="hyperhive-bench-audit-"))
    try:
        print("(audit) prune T failed approvals (4 tags each), history_json before/after")
        for n in sizes:
            print(one(root, n), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
