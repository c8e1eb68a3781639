"""Benchmark of the approval workflow: each of our figures printed beside a reference
measured in the same run, on the same machine.

(a) Full proposal -> approved -> building -> deployed cycles of one agent on the local
    runtime, in-process through the engine's Python API, timed per step (propose,
    approve, deploy) in a window of cycles at each of several sizes of history (20, 200
    and 1,000 approvals), so the curve shows; a few cycles through the real CLI
    (`hyperhive propose`, then `hyperhive approve` whose post-receive hook runs
    `hyperhive deploy` as a subprocess); and, as the reference, what a deploy does done
    by the git CLI and nix (the same writes, the checkout, the parse, the policy's
    evaluation and `nix flake lock`), grown and timed at the same sizes.
(b) Listing the pending approvals of every agent (what `hyperhive approvals` does) over
    A agents with T tags each, beside `git for-each-ref` on the same repos.
(c) Proposing a commit with a 1k/10k/50k-commit history new to the applied repo, beside
    `git fetch` of it into a copy of that repo.

Nothing here asserts a speed; the script only checks that both sides computed the same
thing. Run: .venv/bin/python bench/transitions.py [--quick] (see bench/README.md).
"""

import argparse
import cProfile
import dataclasses
import gc
import io
import itertools
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hyperhive import operator
from hyperhive.agents import create_agent, init_hive
from hyperhive.gitstore import refs
from hyperhive.gitstore.history import write_commit
from hyperhive.gitstore.repos import open_repo
from hyperhive.gitstore.tags import write_tag
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime
from hyperhive.workflow import meta
from hyperhive.workflow.approvals import Approvals, parse_tag_refs
from hyperhive.workflow.deploy import deploy
from hyperhive.workflow.states import State, tag_ref

MAIN = b"refs/heads/main"
HYPERHIVE = str(Path(sys.executable).parent / "hyperhive")
GIT = shutil.which("git")
NIX_INSTANTIATE = shutil.which("nix-instantiate")
NIX = shutil.which("nix")

# The git CLI of the references must not pick up the user's config (signing, hooks …).
GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "operator",
    "GIT_AUTHOR_EMAIL": "operator@hyperhive",
    "GIT_COMMITTER_NAME": "operator",
    "GIT_COMMITTER_EMAIL": "operator@hyperhive",
}

# (b): the approvals written into each applied repo, repeated until the tag budget is
# spent. One round is 7 approvals and 20 tags: 3 deployed (4 tags each), 1 failed (4),
# 1 denied (2) and 2 still pending (1). Leftover budget becomes pending proposals.
MIX = {
    "deployed": (State.PROPOSAL, State.APPROVED, State.BUILDING, State.DEPLOYED),
    "failed": (State.PROPOSAL, State.APPROVED, State.BUILDING, State.FAILED),
    "denied": (State.PROPOSAL, State.DENIED),
    "pending": (State.PROPOSAL,),
}
ROUND = ["deployed", "deployed", "deployed", "failed", "denied", "pending", "pending"]


# -- measuring ---------------------------------------------------------------------------


@dataclass
class Row:
    section: str  # "a" or "b"
    who: str  # "ours", "ref", or "" for a breakdown of the row above
    label: str
    samples: list[float]  # seconds


ROWS: list[Row] = []
# (a) by side ("ours", "ref") and approvals in the repo: each step's samples
GROWTH: dict[tuple[str, int], dict[str, list[float]]] = {}


class NixClock:
    """Seconds spent in the nix processes (`nix`, `nix-instantiate`) this process starts,
    each from before its Popen to the return of its wait: the nix work of a deploy, so that
    the rest of the deploy is the engine's own (or the reference's git and Python)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.installed = False

    def install(self) -> None:
        """Time every nix process started from now on (once; main() does it)."""
        if self.installed:
            return
        self.installed = True
        init, wait = subprocess.Popen.__init__, subprocess.Popen.wait

        def timed_init(popen, args, *rest, **kwargs) -> None:
            start = time.perf_counter()
            init(popen, args, *rest, **kwargs)
            program = args[0] if isinstance(args, list | tuple) else args
            popen.nix_started = start if os.path.basename(str(program)).startswith("nix") else None

        def timed_wait(popen, *rest, **kwargs) -> int:
            code = wait(popen, *rest, **kwargs)
            if (started := getattr(popen, "nix_started", None)) is not None:
                self.total += time.perf_counter() - started
                popen.nix_started = None
            return code

        subprocess.Popen.__init__ = timed_init  # type: ignore[method-assign]
        subprocess.Popen.wait = timed_wait  # type: ignore[method-assign]


NIX_CLOCK = NixClock()


def record(section: str, who: str, label: str, samples: list[float]) -> None:
    ROWS.append(Row(section, who, label, samples))


def record_window(
    who: str, label: str, size: int, phases: dict[str, list[float]], minus_nix: list[float]
) -> None:
    """Section (a)'s rows for one window of cycles (each cycle's total, each phase, deploy
    minus its nix processes), kept in GROWTH for the growth table."""
    totals = [sum(ts) for ts in zip(*phases.values(), strict=True)]
    record("a", who, label, totals)
    for phase, samples in phases.items():
        record("a", "", f"  {phase}", samples)
    record("a", "", "    deploy minus its nix processes", minus_nix)
    GROWTH[(who, size)] = {**phases, "cycle": totals, "deploy - nix": minus_nix}


def print_rows(titles: dict[str, str]) -> None:
    """The recorded rows as one table: n, median, min and mean, section by section."""
    width = max(len(r.label) for r in ROWS) + 7
    say("\n" + "=" * (width + 44))
    say(f"{'':<{width}} {'n':>4} {'median':>11} {'min':>11} {'mean':>11}")
    for section, title in titles.items():
        say(title)
        for r in (r for r in ROWS if r.section == section):
            s = r.samples
            say(
                f"  {r.who:<4} {r.label:<{width - 7}} {len(s):>4} "
                f"{fmt(statistics.median(s))} {fmt(min(s))} {fmt(statistics.fmean(s))}"
            )
    say("=" * (width + 44))


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:8.2f} s "
    return f"{seconds * 1000:8.1f} ms"


def run(argv: list[str], cwd: Path | None = None, stdin: bytes | None = None, env=None) -> str:
    proc = subprocess.run(
        argv, cwd=cwd, input=stdin, capture_output=True, env=env or GIT_ENV, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()}")
    return proc.stdout.decode()


def git(git_dir: Path, *args: str, stdin: bytes | None = None) -> str:
    return run([GIT, f"--git-dir={git_dir}", *args], stdin=stdin)


def policy_eval_argv(nix: str, agent: Path) -> list[str]:
    """The policy evaluation a deploy runs, spelled out as a reference runs it (not through
    the code it measures): `nix-instantiate --eval` of the hyperhive.* options."""
    from hyperhive.runtime.policy import EVAL_EXPR

    return [
        nix,
        "--eval",
        "--strict",
        "--json",
        "--option",
        "restrict-eval",
        "true",
        "-I",
        str(agent.parent),
        "--argstr",
        "file",
        str(agent),
        "--expr",
        EVAL_EXPR,
    ]


def say(text: str) -> None:
    print(text, flush=True)


def note(text: str) -> None:
    say(textwrap.fill(text, width=100, subsequent_indent="    "))


def du(path: Path) -> int:
    """Bytes in the files under `path` (what the repo costs on disk, block rounding aside)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def fast_import(config: Path, commits: int) -> None:
    """`commits` commits on main of a config repo, one small file changed in each, with a
    subject, a body and a trailer, one minute apart and ending a minute ago."""
    git_dir = config / ".git"
    head = git(git_dir, "rev-parse", "refs/heads/main").strip()
    start = int(time.time()) - 60 * (commits + 1)
    chunks = []
    for i in range(1, commits + 1):
        when = start + 60 * i
        message = (
            f"change {i}: tweak the prompt notes\n\nA longer explanation of change {i}.\n\n"
            f"Reason: benchmark history {i}\n"
        ).encode()
        data = f"# history\n\nrevision {i}\n".encode()
        chunks.append(
            b"commit refs/heads/main\n"
            + f"author manager <manager@hyperhive> {when} +0000\n".encode()
            + f"committer manager <manager@hyperhive> {when} +0000\n".encode()
            + f"data {len(message)}\n".encode()
            + message
            + (f"from {head}\n".encode() if i == 1 else b"")
            + f"M 100644 inline notes/history.md\ndata {len(data)}\n".encode()
            + data
            + b"\n"
        )
    git(git_dir, "fast-import", "--quiet", stdin=b"".join(chunks))


# -- (a) cycles ----------------------------------------------------------------------------


def agent_nix(revision: int) -> bytes:
    return f"{{ ... }}:\n{{\n  # benchmark revision {revision}\n}}\n".encode()


def config_files(revision: int) -> dict[str, bytes]:
    return {
        "agent.nix": agent_nix(revision),
        "notes/prompt.md": f"# notes\n\nrevision {revision}\n".encode(),
    }


def new_config_commit(config_dir: Path, revision: int) -> bytes:
    """Commit a new revision on main of a config repo (outside every timed section)."""
    repo = open_repo(config_dir)
    try:
        head = refs.read(repo, MAIN)
        parents = [head] if head else []
        message = f"revision {revision}\n"
        commit = write_commit(repo, config_files(revision), message, "manager", parents)
        refs.cas(repo, MAIN, head, commit)
        return commit
    finally:
        repo.close()


class FillRuntime:
    """A runtime whose build does nothing: the cycles that only grow the history between
    two measured windows (every tag, pin ref, meta commit and log is still written by the
    engine; only the checkout, nix-instantiate and nix flake lock are left out)."""

    def update(self, name: str, rev: str, emit: Callable[[str], None]) -> None:
        emit(f"filled {rev}")


def one_cycle(home: Home, name: str, runtime, revision: int) -> tuple[float, float, float]:
    """A new config commit (not timed), then propose, approve and deploy() it: their times."""
    approvals = Approvals(home, name)
    new_config_commit(home.config_dir(name), revision)
    t_prop, proposal = timed(lambda: approvals.propose("HEAD", "manager"))
    t_appr, _ = timed(lambda: approvals.approve(proposal.id, "operator"))
    t_depl, result = timed(lambda: deploy(home, name, proposal.id, runtime))
    if result.state != State.DEPLOYED:
        raise SystemExit(f"{result.target} ended {result.state}: {result.states}")
    return t_prop, t_appr, t_depl


def cycles_in_process(
    home: Home, name: str, sizes: list[int], window: int, profile: bool, nix_fill: bool = False
) -> Iterator[None]:
    """At each size S: cycles with FillRuntime (and the meta lock kept, unless `nix_fill`:
    then each is locked by nix, as in a hive, so nix's git cache grows with every pin) until
    S - window approvals are deployed, then `window` real cycles on the local runtime, timed
    per step. Yields after each timed cycle (main() alternates them with the reference's,
    so both sides of a size are timed under the same load)."""
    runtime = LocalRuntime(home)
    # As in the daemon: the shipped hook stays, and an approval is queued on the build
    # worker (here a list) without a hook process; deploy() is what the worker then runs.
    queued: list[int] = []

    def submit(_name: str, approval_id: int) -> int:
        queued.append(approval_id)
        return 0

    home = dataclasses.replace(home, deploys=submit)
    one_cycle(home, name, runtime, 0)  # warm-up (imports, first pack): not counted
    done = 1
    profiler = cProfile.Profile() if profile else None
    for size in sizes:
        keep_lock = meta.lock_flake
        if not nix_fill:
            meta.lock_flake = lambda flake, previous, *_: previous
        try:
            while done < size - window:
                one_cycle(home, name, FillRuntime(), done)
                done += 1
        finally:
            meta.lock_flake = keep_lock
        phases: dict[str, list[float]] = {"propose": [], "approve": [], "deploy": []}
        engine = []  # each deploy minus the nix processes it ran
        for _ in range(window):
            nix = NIX_CLOCK.total
            if profiler and size == sizes[-1]:
                profiler.enable()
            times = one_cycle(home, name, runtime, done)
            if profiler:
                profiler.disable()
            for phase, t in zip(phases, times, strict=True):
                phases[phase].append(t)
            engine.append(phases["deploy"][-1] - (NIX_CLOCK.total - nix))
            done += 1
            yield
        record_window("ours", f"in-process cycle at {done} approvals", size, phases, engine)
    tags = len(git(home.applied_dir(name), "for-each-ref", "refs/tags/").splitlines())
    loose = sum(len(files) for _, _, files in os.walk(home.applied_dir(name) / "refs" / "tags"))
    say(f"  after {done} approvals the applied repo holds {tags} tags ({loose} loose)")
    if profiler:
        print_profile(profiler, f"in-process cycles at {sizes[-1]} approvals")
    approve_through_api(home, name, runtime, min(window, 20), queued)


def approve_through_api(home: Home, name: str, runtime, count: int, queued: list[int]) -> None:
    """`POST /api/approvals/NAME/ID/approve` as the daemon serves it: the tag is written
    and the build queued in the daemon's process (before, the hook started a
    `hyperhive deploy` process for it: see `import hyperhive.cli` among the references)."""
    from forge import client_for

    client = client_for(home)
    auth = {"Authorization": f"Bearer {operator.token(home)}"}  # an API client's way
    samples = []
    for i in range(count):
        new_config_commit(home.config_dir(name), 5000 + i)
        proposal = Approvals(home, name).propose("HEAD", "manager")
        path = f"/api/approvals/{name}/{proposal.id}/approve"
        # forced: no check worker runs here (the daemon checks in the background)
        elapsed, r = timed(lambda p=path: client.post(p, headers=auth, json={"force": True}))
        if r.status_code != 200 or queued[-1] != proposal.id:
            raise SystemExit(f"approve through the API answered {r.status_code}: {r.data[:200]}")
        samples.append(elapsed)
        deploy(home, name, proposal.id, runtime)
    record("a", "ours", "approve through the forge API (build queued, no process)", samples)


def cycles_cli(home: Home, name: str, count: int) -> None:
    """Cycles through the console script, with the shipped hook in place: `hyperhive
    approve` runs post-receive, which runs `hyperhive deploy` as a subprocess."""
    env = {**os.environ, "HYPERHIVE_ACTOR": "operator"}
    base = [HYPERHIVE, "--home", str(home.root)]
    totals, proposes, approves = [], [], []
    for i in range(count):
        new_config_commit(home.config_dir(name), 1000 + i)
        t_prop, out = timed(lambda: run([*base, "propose", name], env=env))
        target = out.strip()
        t_appr, _ = timed(lambda t=target: run([*base, "approve", t], env=env))
        state = Approvals(home, name).get(int(target.partition("#")[2])).state
        if state != State.DEPLOYED:
            raise SystemExit(f"{target} ended {state} after `hyperhive approve`")
        proposes.append(t_prop)
        approves.append(t_appr)
        totals.append(t_prop + t_appr)
    record("a", "ours", "CLI cycle: `propose` + `approve` (its hook deploys)", totals)
    record("a", "", "  `hyperhive propose`", proposes)
    record("a", "", "  `hyperhive approve` + hook + `hyperhive deploy`", approves)


def fill_reference(config: Path, applied: Path, meta_dir: Path, first: int, last: int) -> None:
    """Approvals `first`..`last` in the reference repos at once (`git fast-import`): per
    approval a config commit, its four annotated tags in the applied repo and a meta commit,
    as the measured cycles leave them. Every object and ref is real; no step is timed."""
    if last < first:
        return
    now = int(time.time())
    commits, tags, metas = [], [], []
    for i in range(first, last + 1):
        parent = b"from refs/heads/main^0\n" if i == first else b""
        data = agent_nix(i)
        message = f"revision {i}\n".encode()
        commits.append(
            b"commit refs/heads/main\n"
            + f"mark :{i}\ncommitter manager <manager@hyperhive> {now} +0000\n".encode()
            + f"data {len(message)}\n".encode()
            + message
            + parent
            + f"M 100644 inline agent.nix\ndata {len(data)}\n".encode()
            + data
            + b"\n"
        )
        for state in ("proposal", "approved", "building", "deployed"):
            text = f"{state} bench#{i}\n\nActor: operator\n".encode()
            tags.append(
                f"tag {state}/{i}\nfrom :{i}\n".encode()
                + f"tagger operator <operator@hyperhive> {now} +0000\n".encode()
                + f"data {len(text)}\n".encode()
                + text
                + b"\n"
            )
        pins = f'{{"bench": {{"rev": "{i}"}}}}\n'.encode()
        note = f"deploy bench#{i}\n".encode()
        metas.append(
            b"commit refs/heads/main\n"
            + f"committer hyperhive <hyperhive@hyperhive> {now} +0000\n".encode()
            + f"data {len(note)}\n".encode()
            + note
            + parent
            + f"M 100644 inline hyperhive.json\ndata {len(pins)}\n".encode()
            + pins
            + b"\n"
        )
    marks = config.parent / "marks"
    git(
        config / ".git",
        "fast-import",
        "--quiet",
        f"--export-marks={marks}",
        stdin=b"".join(commits),
    )
    git(applied, "fetch", "-q", str(config), "refs/heads/main:refs/heads/main")
    git(applied, "fast-import", "--quiet", f"--import-marks={marks}", stdin=b"".join(tags))
    git(meta_dir, "fast-import", "--quiet", stdin=b"".join(metas))
    last_id = git(applied, "hash-object", "-w", "--stdin", stdin=f"{last}\n".encode()).strip()
    git(applied, "update-ref", "refs/hyperhive/last-id", last_id)
    git(applied, "pack-refs", "--all")  # as `git gc` would: thousands of loose tags slow git


def reference_flake(applied: Path, commit: str) -> str:
    """The meta flake of the reference: the agent's applied repo at `commit`, not a flake."""
    url = f"git+file://{applied}?ref=refs/heads/main&rev={commit}"
    inputs = f'  inputs."agent-bench" = {{ url = "{url}"; flake = false; }};\n'
    return f"{{\n{inputs}  outputs = inputs: {{ }};\n}}\n"


def git_reference_cycles(root: Path, sizes: list[int], window: int) -> Iterator[None]:
    """What one deploy does, with the git CLI and nix, one process per step and no state
    checks: propose = `git fetch --negotiation-tip=main` of the config commit into a bare
    applied repo, the id
    counter (`hash-object` + `update-ref`), `git tag -a proposal/N`; approve = `git tag -a
    approved/N`; deploy = `git tag -a building/N`, `git archive | tar -x` (the checkout),
    `nix-instantiate --parse` of agent.nix, the policy's `nix-instantiate --eval` (the
    engine's expression: what evaluating it costs nix), `git tag -a deployed/N`, main
    moved, `nix flake lock` of the meta flake (its input moved to the new revision) and a
    meta commit of flake.nix, flake.lock and the pins. Grown between sizes as ours is.
    Yields after each timed cycle."""

    config, applied, meta_dir = root / "config", root / "applied.git", root / "meta.git"
    run([GIT, "init", "-q", "-b", "main", str(config)])
    run([GIT, "init", "-q", "--bare", "-b", "main", str(applied)])
    run([GIT, "init", "-q", "--bare", "-b", "main", str(meta_dir)])
    new_config_commit(config, 0)
    git(applied, "fetch", "-q", str(config), "refs/heads/main:refs/heads/main")
    zero = git(applied, "hash-object", "-w", "--stdin", stdin=b"0\n").strip()
    git(applied, "update-ref", "refs/hyperhive/last-id", zero)
    empty = git(meta_dir, "mktree", stdin=b"").strip()
    git(
        meta_dir,
        "update-ref",
        "refs/heads/main",
        git(meta_dir, "commit-tree", empty, "-m", "init").strip(),
    )
    flake_dir, deployed = root / "meta-work", root / "deployed"
    flake_dir.mkdir()
    nix_env = {**os.environ, "NIX_PATH": ""}
    # nix's `git fetch` of the applied repo into its cache clone, without the tags: git
    # would follow every tag pointing into what it fetched (ours does the same, meta.py)
    lock_env = {
        **os.environ,
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": f"remote.file://{applied}.tagOpt",
        "GIT_CONFIG_VALUE_0": "--no-tags",
    }

    def cycle(i: int) -> tuple[float, float, float]:
        commit = new_config_commit(config, i).decode()
        t0 = time.perf_counter()
        # haves from main only: the thousands of tags would otherwise be offered each time
        tip = "--negotiation-tip=refs/heads/main"
        git(applied, "fetch", "-q", "--no-tags", tip, str(config), "refs/heads/main")
        old_id = git(applied, "rev-parse", "refs/hyperhive/last-id").strip()
        blob = git(applied, "hash-object", "-w", "--stdin", stdin=f"{i}\n".encode()).strip()
        git(applied, "update-ref", "refs/hyperhive/last-id", blob, old_id)
        git(
            applied,
            "tag",
            "-a",
            "-m",
            f"proposal bench#{i}\n\nActor: manager\n",
            f"proposal/{i}",
            commit,
        )
        t1 = time.perf_counter()
        git(
            applied,
            "tag",
            "-a",
            "-m",
            f"approved bench#{i}\n\nActor: operator\n",
            f"approved/{i}",
            commit,
        )
        t2 = time.perf_counter()
        git(applied, "tag", "-a", "-m", f"building bench#{i}\n", f"building/{i}", commit)
        staging = root / "deployed.new"
        staging.mkdir()
        archive = subprocess.Popen(
            [GIT, f"--git-dir={applied}", "archive", commit], stdout=subprocess.PIPE, env=GIT_ENV
        )
        run(["tar", "-x", "-C", str(staging)], stdin=archive.stdout.read())
        if archive.wait() != 0:
            raise SystemExit("git archive failed")
        if NIX_INSTANTIATE:
            run([NIX_INSTANTIATE, "--parse", "agent.nix"], cwd=staging, env=os.environ)
            agent = staging.resolve() / "agent.nix"
            run(policy_eval_argv(NIX_INSTANTIATE, agent), cwd=staging, env=nix_env)
        if deployed.exists():
            shutil.rmtree(deployed)
        staging.rename(deployed)
        git(applied, "tag", "-a", "-m", f"deployed bench#{i}\n", f"deployed/{i}", commit)
        old_main = git(applied, "rev-parse", "refs/heads/main").strip()
        git(applied, "update-ref", "refs/heads/main", commit, old_main)
        (flake_dir / "flake.nix").write_text(reference_flake(applied, commit))
        (flake_dir / "hyperhive.json").write_text(f'{{"bench": {{"rev": "{commit}"}}}}\n')
        names = ["flake.nix", "hyperhive.json"]
        if NIX:
            run(
                [
                    NIX,
                    "--extra-experimental-features",
                    "nix-command flakes",
                    "flake",
                    "lock",
                    f"path:{flake_dir}",
                ],
                env=lock_env,
            )
            names.append("flake.lock")
        blobs = git(meta_dir, "hash-object", "-w", *(str(flake_dir / n) for n in names)).split()
        listing = "".join(f"100644 blob {b}\t{n}\n" for b, n in zip(blobs, names, strict=True))
        tree = git(meta_dir, "mktree", stdin=listing.encode()).strip()
        head = git(meta_dir, "rev-parse", "refs/heads/main").strip()
        new_head = git(meta_dir, "commit-tree", tree, "-p", head, "-m", f"deploy bench#{i}").strip()
        git(meta_dir, "update-ref", "refs/heads/main", new_head, head)
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2

    cycle(1)  # warm-up, as ours
    done = 1
    for size in sizes:
        fill_reference(config, applied, meta_dir, done + 1, size - window)
        done = max(done, size - window)
        phases: dict[str, list[float]] = {"propose": [], "approve": [], "deploy": []}
        rest = []  # each deploy minus its nix processes: git and Python
        for _ in range(window):
            done += 1
            nix = NIX_CLOCK.total
            for phase, t in zip(phases, cycle(done), strict=True):
                phases[phase].append(t)
            rest.append(phases["deploy"][-1] - (NIX_CLOCK.total - nix))
            yield  # to ours (see cycles_in_process)
        record_window("ref", f"git CLI + nix cycle at {done} approvals", size, phases, rest)
    tags = len(git(applied, "for-each-ref", "refs/tags/").splitlines())
    say(f"  the reference's applied repo holds {tags} tags")


def other_references(root: Path, count: int) -> None:
    if NIX_INSTANTIATE:
        (root / "agent.nix").write_bytes(agent_nix(0))
        argv = [NIX_INSTANTIATE, "--parse", "agent.nix"]
        samples = [timed(lambda: run(argv, cwd=root, env=os.environ))[0] for _ in range(count)]
        record("a", "ref", "nix-instantiate --parse agent.nix", samples)
    else:
        say("  nix-instantiate is not on PATH: deploys skip .nix parsing")
    argv = [sys.executable, "-c", "import hyperhive.cli"]
    samples = [timed(lambda: run(argv, env=os.environ))[0] for _ in range(count)]
    record("a", "ref", "python -c 'import hyperhive.cli'", samples)


# -- (b) listing ---------------------------------------------------------------------------


def fill_tags(home: Home, name: str, budget: int) -> None:
    """Write `budget` state tags into the agent's applied repo following MIX/ROUND. The
    agent's first proposal (#1, written by create_agent) counts as the first of them."""
    repo = open_repo(home.applied_dir(name))
    try:
        commit = repo[repo.refs[tag_ref(State.PROPOSAL, 1)]].object[1]
        base = int(time.time()) - 86400
        written = 1
        approval_id = 0
        while written < budget:
            approval_id += 1
            states = MIX[ROUND[(approval_id - 1) % len(ROUND)]]
            have = 1 if approval_id == 1 else 0
            if written + len(states) - have > budget:
                states = MIX["pending"]
            for n, state in enumerate(states[have:], start=have):
                trailers = {"Subject": f"revision {approval_id}"} if n == 0 else {}
                body = ""
                if state == State.FAILED:
                    trailers["Reason"] = "agent.nix does not parse"
                    body = "| error: syntax error, unexpected end of file"
                target = f"{name}#{approval_id}"
                write_tag(
                    repo,
                    tag_ref(state, approval_id),
                    commit,
                    "operator" if n < 2 else "hyperhive",
                    f"{state} {target}",
                    trailers,
                    body,
                    when=base + 60 * approval_id + n,
                )
                written += 1
    finally:
        repo.close()


def build_listing_home(home: Home, agents: int, tags: int) -> float:
    runtime = LocalRuntime(home)
    init_hive(home, runtime, "operator")
    for i in range(1, agents):
        create_agent(home, f"agent-{i:03d}", runtime, "operator")
    names = home.agent_names()
    start = time.perf_counter()
    for name in names:
        fill_tags(home, name, tags)
    return time.perf_counter() - start


def engine_pending(home: Home) -> list:
    """What `hyperhive approvals` computes (cli._approvals), without printing."""
    return [a for n in home.agent_names() for a in Approvals(home, n).all(pending_only=True)]


def engine_pending_ids(home: Home) -> set[tuple[str, int]]:
    """The engine's first step alone: tag ref names -> ids whose only tag is a proposal."""
    found = set()
    for name in home.agent_names():
        repo = open_repo(home.applied_dir(name))
        try:
            by_id = parse_tag_refs(refs.under(repo, b"refs/tags/"))
        finally:
            repo.close()
        found.update((name, i) for i, s in by_id.items() if set(s) == {State.PROPOSAL})
    return found


STATES = {str(s) for s in State}


def git_pending_ids(home: Home) -> dict[str, list[int]]:
    """Per repo: `git for-each-ref --format=%(refname:lstrip=2) refs/tags/` (every state
    tag's name), then the ids whose only state is `proposal`, by set arithmetic."""
    pending = {}
    for repo_dir in sorted((home.root / "applied").glob("*.git")):
        by_id: dict[int, set[str]] = {}
        names = git(repo_dir, "for-each-ref", "--format=%(refname:lstrip=2)", "refs/tags/")
        for line in names.splitlines():
            state, _, raw_id = line.partition("/")
            if raw_id.isdigit() and state in STATES:
                by_id.setdefault(int(raw_id), set()).add(state)
        pending[repo_dir.name[: -len(".git")]] = sorted(
            i for i, s in by_id.items() if s == {"proposal"}
        )
    return pending


GIT_FIELDS = "%(refname)%00%(*objectname)%00%(taggername)%00%(taggerdate:unix)%00%(contents)%01"


def git_pending_full(home: Home) -> set[tuple]:
    """git_pending_ids, then one more `git for-each-ref` per repo, given exactly the
    pending refs, printing what the engine returns for each: commit, tagger, time and
    the message (trailers included)."""
    found = set()
    for name, ids in git_pending_ids(home).items():
        if not ids:
            continue
        wanted = [f"refs/tags/proposal/{i}" for i in ids]
        out = git(home.applied_dir(name), "for-each-ref", f"--format={GIT_FIELDS}", *wanted)
        for record_ in out.split("\x01")[:-1]:
            ref, commit, tagger, stamp, _message = record_.lstrip("\n").split("\x00")
            found.add((name, int(ref.rsplit("/", 1)[1]), commit, tagger, int(stamp)))
    return found


def age_refs(home: Home, seconds: float = 600) -> None:
    """Date every applied repo's ref directories `seconds` back: a hive whose tags were
    written minutes ago, as a dashboard finds them (a listing written in the last two
    seconds is never kept, gitstore/cache.py)."""
    old = time.time() - seconds
    for control in (home.root / "applied").glob("*.git"):
        for top, dirs, _ in os.walk(control / "refs"):
            for d in [*dirs, ""]:
                os.utime(os.path.join(top, d), (old, old))


def api_state(home: Home) -> Callable[[], object]:
    """GET /api/state through the forge app (the dashboard's data), as the operator."""
    from forge import client_for

    client = client_for(home)

    def get() -> object:
        r = client.get("/api/state")
        if r.status_code != 200:
            raise SystemExit(f"/api/state answered {r.status_code}")
        return r.get_json()

    return get


def listing(home: Home, repeats: int, profile: bool) -> None:
    samples: dict[str, list[float]] = {k: [] for k in ("all", "ids", "git_ids", "git_full")}
    age_refs(home)
    state = api_state(home)
    record("b", "ours", "GET /api/state, first (every tag parsed)", [timed(state)[0]])
    record("b", "ours", "GET /api/state, again", [timed(state)[0] for _ in range(repeats)])
    for _ in range(repeats):  # interleaved, so drift in the machine hits both sides alike
        t, ours = timed(lambda: engine_pending(home))
        samples["all"].append(t)
        t, our_ids = timed(lambda: engine_pending_ids(home))
        samples["ids"].append(t)
        t, their_ids = timed(lambda: git_pending_ids(home))
        samples["git_ids"].append(t)
        t, theirs = timed(lambda: git_pending_full(home))
        samples["git_full"].append(t)
    # Both sides must have found the same pending set, with the same tag data.
    ours_full = {
        (a.agent, a.id, a.commit, a.states[State.PROPOSAL].actor, a.states[State.PROPOSAL].time)
        for a in ours
    }
    their_id_set = {(n, i) for n, ids in their_ids.items() for i in ids}
    if not (ours_full == theirs and our_ids == their_id_set == {x[:2] for x in ours_full}):
        raise SystemExit("the engine and git disagree on the pending approvals")
    record("b", "ours", "Approvals(home, n).all(pending_only=True) x agents", samples["all"])
    record("b", "", "  its first step: tag refs -> pending ids", samples["ids"])
    record("b", "ref", "git for-each-ref refs/tags/ x repos -> pending ids", samples["git_ids"])
    record("b", "ref", "  + for-each-ref <pending refs> with tag fields", samples["git_full"])
    env = {**os.environ, "HYPERHIVE_HOME": str(home.root)}
    runs = min(3, repeats)  # a process start each: 3 at most, --quick's 1 (as the rows above)
    cli = [timed(lambda: run([HYPERHIVE, "approvals", "--json"], env=env))[0] for _ in range(runs)]
    record("b", "ours", "`hyperhive approvals --json` (whole process)", cli)
    say(f"  {len(ours)} pending approvals found by both sides")
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        engine_pending(home)
        profiler.disable()
        print_profile(profiler, "one engine listing")


def print_profile(profiler: cProfile.Profile, what: str) -> None:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
    say(f"\n--- cProfile, {what}, top entries by cumulative time ---")
    say("\n".join(out.getvalue().strip().splitlines()[4:]))


# -- report ----------------------------------------------------------------------------------


# -- (c) proposing a commit with a long history ------------------------------------------


def long_history(root: Path, sizes: list[int], repeats: int) -> list[str]:
    """For each size N: a new agent, deployed, whose config then gets N commits on top
    (`git fast-import`); `propose HEAD` (which copies the history into the applied repo and
    checks it is no rollback) beside `git fetch` of the same commit into a copy of the
    applied repo as it was just before (same objects, same refs: the same haves), each
    `repeats` times, interleaved, the applied repo put back as it was before each propose.
    Both must end with the same objects, and ours must pass `git fsck --strict`."""
    lines = []
    for n in sizes:
        home = Home(root / f"hive-c{n}")
        init_hive(home, LocalRuntime(home), "operator")
        create_agent(home, "history", LocalRuntime(home), "operator")
        home = dataclasses.replace(home, deploys=lambda _name, approval_id: 0)
        approvals = Approvals(home, "history")
        approvals.approve(1, "operator")
        deploy(home, "history", 1, LocalRuntime(home))
        config = home.config_dir("history")
        fast_import(config, n)
        applied = home.applied_dir("history")
        pristine = root / f"pristine-{n}.git"
        shutil.copytree(applied, pristine, symlinks=True)
        before = du(applied)
        ours_s, ref_s = [], []
        for r in range(repeats):
            if r:  # the applied repo as it was before the first propose
                shutil.rmtree(applied)
                shutil.copytree(pristine, applied, symlinks=True)
            ref = root / f"fetch-{n}-{r}.git"
            shutil.copytree(pristine, ref, symlinks=True)
            t_ours, approval = timed(
                lambda h=home: Approvals(h, "history").propose("HEAD", "manager")
            )
            fetch = (ref, "fetch", "-q", "--no-tags", str(config), "refs/heads/main")
            t_ref, _ = timed(lambda f=fetch: git(*f))
            ours_s.append(t_ours)
            ref_s.append(t_ref)
        objects = ("rev-list", "--objects", "--no-object-names")
        ours = sorted(git(applied, *objects, approval.commit).split())
        theirs = sorted(git(ref, *objects, "FETCH_HEAD").split())
        if ours != theirs:
            raise SystemExit(f"propose copied {len(ours)} objects, git fetch {len(theirs)}")
        git(applied, "fsck", "--strict", "--no-dangling", "--no-progress")
        record("c", "ours", f"propose, history of {n} commits", ours_s)
        record("c", "ref", f"git fetch, history of {n} commits", ref_s)
        t_ours, t_ref = statistics.median(ours_s), statistics.median(ref_s)
        grown = (du(applied) - before) / 2**20
        lines.append(
            f"(c) {n} commits: propose {t_ours:.2f} s, +{grown:.1f} MiB on disk; git fetch "
            f"{t_ref:.2f} s, +{(du(ref) - before) / 2**20:.1f} MiB; ratio "
            f"{t_ours / t_ref:.2f}x (medians)"
        )
        gc.collect()  # close dulwich's pack files before the directory goes away
    return lines


def growth_table(sizes: list[int]) -> None:
    """(a) p50 of each step, ours beside the reference, at each size: the curve."""
    steps = ("propose", "approve", "deploy", "deploy - nix", "cycle")
    say("(a) p50 per step in ms by approvals in the repo: ours, git CLI + nix, ours - ref")
    say(f"  {'approvals':>9}" + "".join(f"{s:>25}" for s in steps))
    for n in sizes:
        cells = []
        for step in steps:
            ours = statistics.median(GROWTH[("ours", n)][step]) * 1000
            ref = statistics.median(GROWTH[("ref", n)][step]) * 1000
            cells.append(f"{ours:7.1f} {ref:7.1f} {ours - ref:+8.1f}")
        say(f"  {n:>9}" + "".join(f"{c:>25}" for c in cells))


def table(args: argparse.Namespace, pending: int) -> None:
    titles = {
        "a": "(a) one proposal -> approved -> building -> deployed cycle, local runtime",
        "b": f"(b) list pending approvals: {args.agents} agents x {args.tags} tags "
        f"({pending} pending)",
        "c": "(c) propose a commit whose history is new to the applied repo",
    }
    print_rows(titles)

    def median(section: str, who: str, label_start: str) -> float:
        row = next(
            r
            for r in ROWS
            if r.section == section and r.who == who and r.label.startswith(label_start)
        )
        return statistics.median(row.samples)

    b_full = ("b", "ours", "Approvals"), ("b", "ref", "  +")
    b_ids = ("b", "", "  its first"), ("b", "ref", "git")
    sizes = sorted({size for _, size in GROWTH})
    ratios = [
        (
            f"(a) cycle at {n} approvals / git CLI + nix",
            ("a", "ours", f"in-process cycle at {n} "),
            ("a", "ref", f"git CLI + nix cycle at {n} "),
        )
        for n in sizes
    ]
    ratios += [
        ("(b) full listing / git ids + tag fields", *b_full),
        ("(b) pending ids / git for-each-ref ids", *b_ids),
    ]
    for text, ours, ref in ratios:
        say(f"ratio of medians, ours / reference: {text:<42} {median(*ours) / median(*ref):5.2f}x")
    say("")
    growth_table(sizes)
    say("")
    note(
        "(a) reference: propose = `git fetch` of the config commit into a bare repo, "
        "`git hash-object` + `git update-ref` (id counter), `git tag -a`; approve = `git tag "
        "-a`; deploy = `git tag -a` building, `git archive | tar -x` (checkout), "
        "`nix-instantiate --parse agent.nix`, the policy's `nix-instantiate --eval`, `git tag "
        "-a` deployed, `git update-ref` main, `nix flake lock` of the meta flake (its input "
        "moved) and a meta commit (`git hash-object` of 3 files, `git mktree`, `git "
        "commit-tree`, `git update-ref`); no state checks, no hook. Between sizes both sides "
        "grow their history without timing it (ours: engine cycles whose build does nothing; "
        "the reference: `git fast-import` of the same commits and tags, then "
        "`git pack-refs --all`); the timed cycles of the two sides take turns, one each, so "
        "both see the same load. `deploy - nix`: each deploy minus the time its nix "
        "processes ran (from their start to their exit): the engine's own work on our side, "
        "git and Python on the reference's. The reference's `nix flake lock` fetches "
        "without tags, as ours does (`remote.<url>.tagOpt=--no-tags`)."
    )
    note(
        "(b) reference: per repo `git for-each-ref --format=%(refname:lstrip=2) refs/tags/`, "
        "pending = ids whose only state tag is proposal (Python sets); the second row adds "
        "`git for-each-ref` over exactly the pending refs printing *objectname, taggername, "
        "taggerdate and contents, i.e. the data the engine returns. Both sides were checked "
        "to find the same pending set."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="20,200,1000", help="(a) approvals in the repo when each window ends"
    )
    parser.add_argument("--window", type=int, default=15, help="(a) cycles timed at each size")
    parser.add_argument("--cli-cycles", type=int, default=5, help="cycles through the CLI (a)")
    parser.add_argument("--agents", type=int, default=50, help="agents for the listing (b)")
    parser.add_argument("--tags", type=int, default=200, help="tags per agent (b)")
    parser.add_argument("--repeats", type=int, default=5, help="listing repetitions (b)")
    parser.add_argument(
        "--history", default="1000,10000,50000", help="(c) commits of history, comma-separated"
    )
    parser.add_argument("--history-repeats", type=int, default=3, help="(c) proposes per size")
    parser.add_argument(
        "--nix-fill",
        action="store_true",
        help="(a) lock the meta flake with nix in the cycles that grow the history too",
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="--quick made smaller still: every section and row, for tests/test_bench.py",
    )
    parser.add_argument("--profile", action="store_true", help="print cProfile top entries")
    args = parser.parse_args(argv)
    args.quick = args.quick or args.smoke
    if args.quick:
        args.sizes, args.window = "3,6,15", 2
        args.cli_cycles, args.agents, args.tags, args.repeats = 1, 3, 20, 1
        args.history, args.history_repeats = "20,200,1000", 1
    if args.smoke:  # the least that still times every row at three sizes
        args.sizes, args.window, args.history = "2,3,4", 1, "5,10,20"
    if GIT is None:
        parser.error("the git CLI is needed for the references")
    sizes = [int(n) for n in args.sizes.split(",")]
    if sizes != sorted(sizes) or sizes[0] < args.window + 1 or args.window < 1:
        parser.error("--sizes must grow and each be more than --window (>= 1)")
    say(
        f"hyperhive bench/transitions.py: sizes={args.sizes} window={args.window} "
        f"cli-cycles={args.cli_cycles} "
        f"agents={args.agents} tags={args.tags} repeats={args.repeats}"
    )
    started = time.perf_counter()
    NIX_CLOCK.install()
    with tempfile.TemporaryDirectory(prefix="hyperhive-bench-") as tmp:
        root = Path(tmp)
        home_a = Home(root / "hive-a")
        init_hive(home_a, LocalRuntime(home_a), "operator")
        for name in ("bench", "bench-cli"):
            create_agent(home_a, name, LocalRuntime(home_a), "operator")
        say(
            f"(a) in-process cycles of agent `bench` and git CLI + nix reference cycles, "
            f"one each in turn, {args.window} timed at {args.sizes} …"
        )
        (root / "gitref").mkdir()
        ours = cycles_in_process(home_a, "bench", sizes, args.window, args.profile, args.nix_fill)
        ref = git_reference_cycles(root / "gitref", sizes, args.window)
        for _ in itertools.zip_longest(ours, ref):
            pass
        say(f"(a) {args.cli_cycles} CLI cycles of agent `bench-cli` …")
        cycles_cli(home_a, "bench-cli", args.cli_cycles)
        other_references(root, min(args.window, 5))

        home_b = Home(root / "hive-b")
        say(f"(b) building {args.agents} agents x {args.tags} tags …")
        setup = build_listing_home(home_b, args.agents, args.tags)
        say(f"  wrote the tags in {setup:.1f} s")
        say(f"(b) listing, {args.repeats} repetitions …")
        listing(home_b, args.repeats, args.profile)
        pending = len(engine_pending_ids(home_b))
        gc.collect()  # close dulwich's pack files before the directory goes away
        say(f"(c) proposing histories of {args.history} commits …")
        histories = [int(n) for n in args.history.split(",")]
        grown = long_history(root, histories, args.history_repeats)
    table(args, pending)
    for line in grown:
        say(line)
    say(f"total wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
