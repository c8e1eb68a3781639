"""Benchmark of a push of a long history over the forge's git remote, beside `git push`.

For each size N (1,000, 10,000 and 50,000 commits: 1x, 10x, 50x) and each repeat, new
agents get N commits on top of their config's main in a clone (`git fast-import`, one
small file changed in each: a commit, two trees and a blob per commit), which the stock
`git push` then sends, timed from the client's side:

- ours, `git push <forge> HEAD:refs/for/main`: smart HTTP to a real `hyperhive up` (the
  receive path: packscan, `git index-pack --strict` in the quarantine, the rules, the
  proposal, which copies the history into the applied repo);
- ours, `git push <forge> HEAD:main`: the same history to another agent's main, a
  fast-forward (the config checkout follows it);
- ref, `git push file://<bare> HEAD:main`: git's own receive-pack into a bare clone of the
  same config repo (the same objects and refs: the same pack sent), no HTTP, no rules;
- ref, the same with `receive.fsckObjects=true`: git checks every object as ours does;
- ref, that push + `git fetch` of it into a copy of the agent's applied repo: the work a
  proposal adds (the history copied into the applied repo), for the refs/for/main row.

The daemon settles (under 5% of a core for two seconds) before each timed push in a full
run, so a proposal's check is not timed with the next push. The script checks that both
sides hold the same objects reachable from the pushed commit, that the proposal names it,
that main and its checkout moved, and `git fsck --connectivity-only` of the pushed repos.
Run: .venv/bin/python bench/push.py [--quick] (see bench/README.md).
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from broker import Daemon
from transitions import du, fast_import, note, print_rows, record, say

from hyperhive import operator
from hyperhive.agents import create_agent
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime
from hyperhive.workflow.approvals import Approvals

PUSH_SECONDS = 1800  # one push, at most
ENV = {
    **os.environ,
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env=ENV, timeout=PUSH_SECONDS
    )
    if proc.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc.stdout + proc.stderr


def timed_push(work: Path, remote: str, ref: str) -> tuple[float, str]:
    start = time.perf_counter()
    out = git(work, "push", remote, f"HEAD:{ref}")
    return time.perf_counter() - start, out


def reachable(repo: Path, tip: str) -> list[str]:
    return sorted(git(repo, "rev-list", "--objects", "--no-object-names", tip).split())


class Forge:
    """The daemon, its home and the operator's token."""

    def __init__(self, root: Path):
        self.daemon = Daemon(root / "hive").start()
        self.home = Home(self.daemon.root)
        text = self.daemon.log.read_text()
        self.port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", text).group(1))
        self.token = operator.token(self.home)

    def url(self, name: str) -> str:
        return f"http://x:{self.token}@127.0.0.1:{self.port}/git/{name}/config.git"

    def agent(self, name: str, root: Path, commits: int) -> tuple[Path, str]:
        """A new agent, and a clone of its config with `commits` more on main; its tip."""
        create_agent(self.home, name, LocalRuntime(self.home), "operator")
        work = root / f"{name}-work"
        git(root, "clone", "-q", self.url(name), str(work))
        fast_import(work, commits)
        git(work, "reset", "-q", "--hard", "main")
        return work, git(work, "rev-parse", "HEAD").strip()


def one_size(forge: Forge, root: Path, n: int, repeats: int, settle: bool) -> str:
    """Every push of one size, `repeats` times, interleaved; the size's summary line."""
    rows: dict[str, list[float]] = {"for": [], "main": [], "ref": [], "fsck": [], "fetch": []}
    grown: dict[str, int] = {}
    for r in range(repeats):
        proposer, tip = forge.agent(f"push-{n}-{r}", root, n)
        mover, tip_main = forge.agent(f"main-{n}-{r}", root, n)
        config = forge.home.config_dir(f"push-{n}-{r}")
        bares = {}
        for kind in ("ref", "fsck"):  # bare clones of the same config: the same haves
            bares[kind] = root / f"{kind}-{n}-{r}.git"
            git(root, "clone", "-q", "--bare", str(config), str(bares[kind]))
        git(bares["fsck"], "config", "receive.fsckObjects", "true")
        applied = forge.home.applied_dir(f"push-{n}-{r}")
        bares["applied"] = root / f"applied-{n}-{r}.git"  # the applied repo as it is now
        git(root, "clone", "-q", "--bare", "--mirror", str(applied), str(bares["applied"]))
        before = {"ours": du(config / ".git" / "objects"), "ref": du(bares["ref"] / "objects")}

        if settle:
            forge.daemon.settle()
        took, out = timed_push(proposer, forge.url(f"push-{n}-{r}"), "refs/for/main")
        rows["for"].append(took)
        approval = Approvals(forge.home, f"push-{n}-{r}").get(2)
        if approval.commit != tip or f"proposal push-{n}-{r}#2" not in out:
            raise SystemExit(f"the push to refs/for/main made no proposal of {tip}:\n{out}")
        grown["ours"] = du(config / ".git" / "objects") - before["ours"]

        if settle:
            forge.daemon.settle()
        took, _ = timed_push(mover, forge.url(f"main-{n}-{r}"), "main")
        rows["main"].append(took)
        moved = forge.home.config_dir(f"main-{n}-{r}")
        if git(moved, "rev-parse", "main").strip() != tip_main:
            raise SystemExit(f"main of main-{n}-{r} did not move to {tip_main}")
        if f"revision {n}\n" not in (moved / "notes" / "history.md").read_text():
            raise SystemExit(f"the config checkout of main-{n}-{r} did not follow main")

        for kind in ("ref", "fsck"):
            took, _ = timed_push(proposer, f"file://{bares[kind]}", "main")
            rows[kind].append(took)
        start = time.perf_counter()  # what a proposal adds: the history into the applied repo
        git(bares["applied"], "fetch", "-q", "--no-tags", str(bares["fsck"]), "main")
        rows["fetch"].append(rows["fsck"][-1] + time.perf_counter() - start)
        grown["ref"] = du(bares["ref"] / "objects") - before["ref"]
        if reachable(config, tip) != reachable(bares["ref"], tip):
            raise SystemExit(f"{n}: the forge and git hold different objects under {tip}")
        for repo in (config, moved, applied):
            git(repo, "fsck", "--connectivity-only", "--no-dangling", "--no-progress")
        for path in bares.values():
            shutil.rmtree(path)
        shutil.rmtree(proposer)
        shutil.rmtree(mover)
    labels = {
        "for": ("ours", f"git push HEAD:refs/for/main, {n} commits (a proposal)"),
        "main": ("ours", f"git push HEAD:main, {n} commits (fast-forward, checkout)"),
        "ref": ("ref", f"git push file:// to a bare repo, {n} commits"),
        "fsck": ("ref", f"  the same, receive.fsckObjects=true, {n} commits"),
        "fetch": ("ref", f"  + git fetch of it into a copy of the applied repo, {n} commits"),
    }
    for key, (who, label) in labels.items():
        record("a", who, label, rows[key])
    med = {k: statistics.median(v) for k, v in rows.items()}
    return (
        f"  {n} commits: refs/for/main {med['for']:.2f} s ({med['for'] / med['fsck']:.2f}x "
        f"git with fsck, {med['for'] / med['ref']:.2f}x without, {med['for'] / med['fetch']:.2f}x"
        f" push + fetch), main {med['main']:.2f} s "
        f"({med['main'] / med['fsck']:.2f}x, {med['main'] / med['ref']:.2f}x); the config "
        f"repo +{grown['ours'] / 2**20:.1f} MiB, git's +{grown['ref'] / 2**20:.1f} MiB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000", help="commits, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="pushes of each kind per size")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="--quick made smaller still (still past the 100-commit walk), for test_bench.py",
    )
    args = parser.parse_args(argv)
    args.quick = args.quick or args.smoke
    if args.quick:
        args.sizes, args.repeats = "20,200,1000", 1
    if args.smoke:
        args.sizes = "20,120,300"
    sizes = [int(n) for n in args.sizes.split(",")]
    say(f"hyperhive bench/push.py: sizes={args.sizes} repeats={args.repeats}")
    started = time.perf_counter()
    lines = []
    with tempfile.TemporaryDirectory(prefix="hyperhive-bench-") as tmp:
        root = Path(tmp)
        forge = Forge(root)
        try:
            say(f"  up in {time.perf_counter() - started:.1f} s")
            for n in sizes:
                say(f"(a) pushing {n} commits …")
                lines.append(one_size(forge, root, n, args.repeats, settle=not args.quick))
        finally:
            forge.daemon.stop()
    print_rows({"a": "(a) a push of a history new to the remote, timed by the client"})
    say("ratio of medians, ours / reference:")
    for line in lines:
        say(line)
    note(
        "Before (dulwich indexed the pack in Python and walked every pushed object to check "
        "it was complete), on the same machine: see bench/README.md."
    )
    say(f"total wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
