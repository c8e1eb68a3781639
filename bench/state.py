"""Benchmark of `GET /api/state` (the dashboard's data) and the dashboard page at A agents
x T state tags each (T at 1x, 10x and 50x), beside `git for-each-ref` printing the same
fields of every tag in every applied repo, in the same run.

Ours is the forge app in a process of its own (Flask's test client, a logged-in session;
no network): **cold** is its first GET after start (nothing parsed or listed yet, as a
daemon finds its hive after a restart), **warm** the GETs after it with nothing changed,
**after a new tag** a GET right after one more tag was written in one repo (what every
dashboard asks after a transition), and **GET /** the dashboard page (warm). The
reference is one `git for-each-ref` per applied repo over `refs/tags/` printing the
refname, the tagged commit, tagger, date and message: the tag data the engine reads. The
script checks that both sides find the same pending approvals with the same commit,
actor and time. Nothing here asserts a speed. Run: .venv/bin/python bench/state.py
[--quick] (see bench/README.md).
"""

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from transitions import (
    GIT,
    ROWS,
    age_refs,
    build_listing_home,
    git,
    note,
    print_rows,
    record,
    say,
    timed,
)

from hyperhive.gitstore import refs
from hyperhive.gitstore.repos import open_repo
from hyperhive.gitstore.tags import write_tag
from hyperhive.home import Home
from hyperhive.workflow import checks, policydiff
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.states import State, tag_ref

FIELDS = (
    "%(refname:lstrip=2)%00%(*objectname)%00%(taggername)%00%(taggerdate:unix)%00%(contents)%01"
)


POLICY = json.dumps(
    {"allowedBash": ["git *", "nix *"], "notes": {"maxBytes": 65536}, "mcp": {}, "model": "x"},
    sort_keys=True,
    separators=(",", ":"),
)


def add_checks(home: Home) -> int:
    """A passed check tag (`checked/<id>`, as workflow/checks.py writes one, its policy in
    the body) for every proposal: the daemon checks each one. Returns how many."""
    written = 0
    for name in home.agent_names():
        repo = open_repo(home.applied_dir(name))
        try:
            for ref, sha in refs.under(repo, b"refs/tags/proposal/").items():
                target = repo[sha].object[1]
                trailers = {
                    "Result": "passed",
                    "Duration": "1.20s",
                    "Check-Log": str(home.check_log(name, int(ref))),
                    "Policy-Digest": checks.digest(json.loads(POLICY)),
                    "Runtime": "LocalRuntime",
                }
                subject = f"check {name}#{ref.decode()}: passed"
                ref_name = checks.tag_ref(int(ref), 1)
                write_tag(
                    repo, ref_name, target, checks.ACTOR, subject, trailers, f"policy: {POLICY}"
                )
                written += 1
        finally:
            repo.close()
    return written


def evaluate_policies(home: Home) -> None:
    """Evaluate each pending approval's policy diff once (nix, cached on disk by commit,
    as a running daemon has them): a cold GET then measures the forge, not a background
    evaluation started by its first look competing for the CPU."""
    for name in home.agent_names():
        for a in Approvals(home, name).all(pending_only=True):
            policydiff.of_approval(home, a)


STATES = {str(s) for s in State}


def git_tags(home: Home) -> set[tuple]:
    """Per applied repo, `git for-each-ref` of every tag with its fields; the pending ones
    (an id whose only state tag is its proposal) as (agent, id, commit, actor, time)."""
    pending = set()
    for repo_dir in sorted((home.root / "applied").glob("*.git")):
        name = repo_dir.name.removesuffix(".git")
        by_id: dict[int, dict[str, tuple]] = {}
        for item in git(repo_dir, "for-each-ref", f"--format={FIELDS}", "refs/tags/").split("\x01")[
            :-1
        ]:
            ref, commit, tagger, stamp, _message = item.lstrip("\n").split("\x00")
            state, _, raw = ref.partition("/")
            if raw.isdigit() and state in STATES:  # not checked/<id>: outside the states
                by_id.setdefault(int(raw), {})[state] = (commit, tagger, int(stamp))
        for i, states in by_id.items():
            if set(states) == {"proposal"}:
                pending.add((name, i, *states["proposal"]))
    return pending


def ours_pending(data: dict) -> set[tuple]:
    return {
        (a["agent"], a["id"], a["commit"], a["states"][0]["actor"], a["states"][0]["time"])
        for a in data["approvals"]
    }


# -- the measuring process -----------------------------------------------------------------


def measure(home: Home, repeats: int, profile: bool) -> dict:
    """In a fresh process: the forge app over `home`, its first GET /api/state (cold),
    then warm ones, ones right after a new tag, and the dashboard page."""
    from forge import client_for

    client = client_for(home)

    def get(path: str = "/api/state"):
        r = client.get(path)
        if r.status_code != 200:
            raise SystemExit(f"GET {path} answered {r.status_code}")
        return r

    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    cpu = time.thread_time()
    cold, first = timed(get)
    cold_cpu = time.thread_time() - cpu
    if profiler:
        profiler.disable()
    data = first.get_json()
    if data["errors"]:
        raise SystemExit(f"/api/state reported errors: {data['errors']}")
    warm, warm_cpu = [], []
    for _ in range(repeats):
        cpu = time.thread_time()
        warm.append(timed(get)[0])
        warm_cpu.append(time.thread_time() - cpu)
    after = []
    repo = open_repo(home.applied_dir("manager"))
    try:
        commit = repo[repo.refs[tag_ref(State.PROPOSAL, 1)]].object[1]
        for n in range(repeats):
            ref = tag_ref(State.PROPOSAL, 900_000 + n)
            write_tag(repo, ref, commit, "operator", "proposal", {"Subject": "one more"})
            after.append(timed(get)[0])
            repo.refs.remove_if_equals(ref, None)
    finally:
        repo.close()
    get("/")  # its templates compiled
    page = [timed(lambda: get("/"))[0] for _ in range(repeats)]
    result = {
        "cold": cold,
        "cold_cpu": cold_cpu,
        "warm": warm,
        "warm_cpu": warm_cpu,
        "after": after,
        "page": page,
        "pending": sorted(ours_pending(data)),
    }
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
        result["profile"] = out.getvalue()
    return result


def measure_in_child(home: Home, repeats: int, profile: bool) -> dict:
    argv = [sys.executable, __file__, "--measure", str(home.root), "--repeats", str(repeats)]
    proc = subprocess.run(
        argv + (["--profile"] if profile else []), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"the measuring process failed:\n{proc.stderr}{proc.stdout}")
    return json.loads(proc.stdout)


# -- the run ---------------------------------------------------------------------------------


def one_size(root: Path, agents: int, tags: int, repeats: int, scale: str, profile: bool) -> int:
    home = Home(root / f"hive-{scale}")
    say(f"{scale}: building {agents} agents x {tags} tags …")
    setup = build_listing_home(home, agents, tags)
    checked = add_checks(home)
    say(f"  wrote the tags in {setup:.1f} s, and {checked} check tags")
    evaluate_policies(home)
    age_refs(home)
    git_tags(home)  # the page cache warm for both sides alike
    colds, cold_cpu, results = [], [], None
    for _ in range(repeats):  # each cold run in a new process
        results = measure_in_child(home, repeats, profile and results is None)
        colds.append(results["cold"])
        cold_cpu.append(results["cold_cpu"])
        if "profile" in results:
            say(f"--- cProfile of the cold GET /api/state at {scale} ---")
            say("\n".join(results["profile"].strip().splitlines()[:45]))
    theirs, their_cpu = [], []
    for _ in range(repeats):
        before = children_cpu()
        theirs.append(timed(lambda: git_tags(home)))
        their_cpu.append(children_cpu() - before)
    if {tuple(p) for p in results["pending"]} != theirs[-1][1]:
        raise SystemExit(f"{scale}: the forge and git disagree on the pending approvals")
    section = f"{scale}: {agents} agents x {tags} tags"
    record(section, "ours", "GET /api/state, cold (new process)", colds)
    record(section, "ours", "GET /api/state, warm", results["warm"])
    record(section, "ours", "GET /api/state, right after a new tag", results["after"])
    record(section, "ours", "GET / (the dashboard page), warm", results["page"])
    record(
        section, "ref", "git for-each-ref refs/tags/ x repos, with fields", [t for t, _ in theirs]
    )
    record(section, "ours", "  CPU time of the cold GET /api/state", cold_cpu)
    record(section, "ours", "  CPU time of a warm GET /api/state", results["warm_cpu"])
    record(section, "ref", "  CPU time of the for-each-ref processes", their_cpu)
    say(f"  {len(theirs[-1][1])} pending approvals found by both sides")
    gc.collect()
    return len(theirs[-1][1])


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_of(section: str, who: str, start: str) -> float:
    import statistics

    row = next(
        r for r in ROWS if r.section == section and r.who == who and r.label.startswith(start)
    )
    return statistics.median(row.samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=50, help="agents (the manager included)")
    parser.add_argument("--tags", default="4,40,200", help="tags per agent at 1x,10x,50x")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--profile", action="store_true", help="cProfile of one cold GET")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the measuring process's home
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(Home(Path(args.measure)), args.repeats, args.profile)))
        return 0
    if args.quick:
        args.agents, args.tags, args.repeats = 2, "4,8,12", 1
    if GIT is None:
        parser.error("the git CLI is needed for the reference")
    sizes = [int(n) for n in args.tags.split(",")]
    say(f"hyperhive bench/state.py: agents={args.agents} tags={args.tags} repeats={args.repeats}")
    started = time.perf_counter()
    titles = {}
    with tempfile.TemporaryDirectory(prefix="hyperhive-bench-") as tmp:
        for scale, tags in zip(("1x", "10x", "50x"), sizes, strict=True):
            found = one_size(Path(tmp), args.agents, tags, args.repeats, scale, args.profile)
            titles[f"{scale}: {args.agents} agents x {tags} tags"] = (
                f"{scale}: {args.agents} agents x {tags} tags ({found} pending)"
            )
    print_rows(titles)
    for section in titles:
        ref = median_of(section, "ref", "git for-each-ref")
        for label in ("GET /api/state, cold", "GET /api/state, warm"):
            ratio = median_of(section, "ours", label) / ref
            say(f"ratio of medians, ours / reference: {section}, {label[15:]:<5} {ratio:6.2f}x")
        cpu = median_of(section, "ours", "  CPU time of the cold") / median_of(
            section, "ref", "  CPU time"
        )
        say(f"ratio of medians, ours / reference: {section}, cold CPU {cpu:6.2f}x")
    say("")
    note(
        "CPU rows: the thread time of our GET (time.thread_time) and the CPU time of the git "
        "processes (getrusage of the children): on a shared machine these move less with "
        "the load than the wall-clock rows."
    )
    note(
        "reference: per applied repo `git for-each-ref --format=<refname, *objectname, "
        "taggername, taggerdate, contents> refs/tags/` (one process each); both sides were "
        "checked to find the same pending approvals (commit, actor, time)."
    )
    say(f"total wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
