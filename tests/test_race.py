"""Real processes racing on one applied repo: the transition lock picks exactly one winner."""

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from support.hive import commit_config, fake_program, fresh_commit, git

from hyperhive.home import Home

NAME = "manager"

# Each racer imports the CLI, says it is ready (a byte on the ready pipe), then blocks on
# the starting pipe: its end of file, when the test closes the only write end, is the shot
# that sends every process into `main` at (nearly) the same moment, with no CPU spent
# polling for it while the others start.
RACER = r"""
import os, sys
from hyperhive.cli import main
ready, go = int(sys.argv[1]), int(sys.argv[2])
os.write(ready, b".")
os.close(ready)
assert os.read(go, 1) == b""
sys.exit(main(sys.argv[3:]))
"""


def race(home: Home, runs: list[tuple[list[str], dict]]) -> list[tuple]:
    """Start one process per (argv, env) and fire them together; (code, out, err) each."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    procs = []
    try:
        for argv, env in runs:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", RACER, str(ready_w), str(go_r), *argv],
                    env={**os.environ, "HYPERHIVE_HOME": str(home.root), **env},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    pass_fds=(ready_w, go_r),
                )
            )
        os.close(ready_w)
        ready_w = -1
        deadline = time.monotonic() + 60
        seen = 0
        while seen < len(runs):
            left = deadline - time.monotonic()
            assert left > 0, "racers did not get ready"
            if select.select([ready_r], [], [], min(left, 1.0))[0]:
                got = os.read(ready_r, len(runs))
                assert got, "a racer died before the start"  # every write end is closed
                seen += len(got)
            assert all(p.poll() is None for p in procs), "a racer died before the start"
        os.close(go_w)  # the starting shot
        go_w = -1
        outputs = [p.communicate(timeout=60) for p in procs]
        return [(p.returncode, *out) for p, out in zip(procs, outputs, strict=True)]
    finally:
        for fd in (ready_r, ready_w, go_r, go_w):
            if fd >= 0:
                os.close(fd)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def install_recorder(home: Home, record: Path) -> None:
    """A post-receive that only appends its stdin: approve does not start a deploy, and
    the record shows which tags were written."""
    hook = home.applied_dir(NAME) / "hooks" / "post-receive"
    hook.write_text(f"#!/bin/sh\ncat >> '{record}'\n")
    hook.chmod(0o755)


def test_twenty_processes_racing_approve_and_deny_get_one_winner(home: Home, tmp_path: Path):
    record = tmp_path / "hook-stdin"
    record.touch()
    install_recorder(home, record)
    runs = []
    for i in range(10):
        # --force: the race is over the decision, not over ten checks of the proposal
        runs.append((["approve", f"{NAME}#1", "--force"], {"HYPERHIVE_ACTOR": f"approver-{i}"}))
        runs.append(
            (["deny", f"{NAME}#1", "--reason", f"no from {i}"], {"HYPERHIVE_ACTOR": f"denier-{i}"})
        )
    results = race(home, runs)

    winners = [i for i, (code, _, _) in enumerate(results) if code == 0]
    assert len(winners) == 1, results
    (w,) = winners
    winner_actor = runs[w][1]["HYPERHIVE_ACTOR"]
    state = "approved" if winner_actor.startswith("approver") else "denied"
    assert results[w][1] == f"{state} {NAME}#1\n"

    for i, (code, out, err) in enumerate(results):
        if i == w:
            continue
        assert code == 1, (runs[i], err)
        assert out == ""
        assert len(err.strip().splitlines()) == 1, err
        assert "already" in err
        # every loser is told who won and how
        assert f"{NAME}#1 was already {state} by {winner_actor} at " in err

    repo = home.applied_dir(NAME)
    decided = git(
        repo,
        "for-each-ref",
        "--format=%(refname) %(taggername)",
        "refs/tags/approved/",
        "refs/tags/denied/",
    )
    assert decided.splitlines() == [f"refs/tags/{state}/1 {winner_actor}"]
    tag = git(repo, "rev-parse", f"refs/tags/{state}/1").strip()
    # exactly one tag was written, so the hook ran exactly once, for it
    assert record.read_text() == f"{'0' * 40} {tag} refs/tags/{state}/1\n"
    if state == "denied":
        reason = git(
            repo,
            "for-each-ref",
            "--format=%(contents:trailers:key=Reason,valueonly)",
            "refs/tags/denied/1",
        )
        assert reason.strip() == f"no from {winner_actor.split('-')[1]}"
    git(repo, "fsck", "--strict", "--no-dangling")


def test_racing_proposals_get_distinct_consecutive_ids(home: Home, tmp_path: Path):
    record = tmp_path / "hook-stdin"
    record.touch()
    install_recorder(home, record)
    n = 16
    # Commits that share all objects but one (the same tree twice is "no new changes"):
    # the shared ones are copied concurrently.
    commits = [fresh_commit(home, NAME) for _ in range(n)]
    runs = [(["propose", NAME, commits[i]], {"HYPERHIVE_ACTOR": f"proposer-{i}"}) for i in range(n)]
    results = race(home, runs)
    assert [code for code, _, _ in results] == [0] * n, [err for *_, err in results]

    ids = {}
    for i, (_, out, _) in enumerate(results):
        name, _, raw = out.strip().partition("#")
        assert name == NAME
        ids[int(raw)] = i
    assert sorted(ids) == list(range(2, n + 2))  # #1 is the hive's first proposal

    repo = home.applied_dir(NAME)
    listed = git(
        repo,
        "for-each-ref",
        "--format=%(refname:lstrip=3) %(*objectname) %(taggername)",
        "refs/tags/proposal/",
    ).splitlines()
    assert len(listed) == n + 1
    for line in listed:
        raw, commit, actor = line.split()
        if raw == "1":
            continue
        i = ids[int(raw)]
        assert commit == commits[i]
        assert actor == f"proposer-{i}"
    assert git(repo, "cat-file", "-p", "refs/hyperhive/last-id").strip() == str(n + 1)
    assert len(record.read_text().splitlines()) == n
    git(repo, "fsck", "--strict", "--no-dangling")


def test_builds_of_one_agent_are_serialized(home: Home, tmp_path: Path):
    """Two `hyperhive deploy` processes started together: the second build starts only
    after the first ended, and both end deployed."""
    from hyperhive.workflow.approvals import Approvals

    (home.applied_dir(NAME) / "hooks" / "post-receive").unlink()
    approvals = Approvals(home, NAME)
    commit_config(home, NAME, {"agent.nix": "# two\n{ ... }: { }\n"}, "two")
    approvals.propose("HEAD", "manager")
    commit_config(home, NAME, {"agent.nix": "# one\n{ ... }: { }\n"}, "one")
    approvals.propose("HEAD", "manager")
    for i in (2, 3):
        approvals.approve(i, "operator")

    builds = tmp_path / "builds"
    fake_program(
        tmp_path / "bin",
        "nix-instantiate",
        f"""\
        # the policy evaluation (--eval) of a config without hyperhive.* options
        if [ "$1" = --eval ]; then echo '{{}}'; exit 0; fi
        # the first line of the file it parses tells the builds apart
        echo "start $(head -n 1 "$2")" >> '{builds}'
        sleep 0.3
        echo "end $(head -n 1 "$2")" >> '{builds}'
        """,
    )
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    results = race(home, [(["deploy", f"{NAME}#{i}"], env) for i in (2, 3)])
    assert [code for code, _, _ in results] == [0, 0], results

    lines = builds.read_text().splitlines()
    assert len(lines) == 4
    first, second = lines[0].split(" ", 1)[1], lines[2].split(" ", 1)[1]
    assert {first, second} == {"# one", "# two"}
    assert lines == [f"start {first}", f"end {first}", f"start {second}", f"end {second}"]

    # the build that ran last is what main, the deployed directory and meta show
    last_id = 3 if second == "# one" else 2
    last_commit = approvals.get(last_id).commit
    repo = home.applied_dir(NAME)
    assert git(repo, "rev-parse", "refs/heads/main").strip() == last_commit
    assert (home.deployed_dir(NAME) / "agent.nix").read_text().startswith(second)
    assert git(home.meta_dir, "log", "-1", "--format=%s").strip() == (
        f"deploy {NAME}#{last_id} {last_commit[:12]}"
    )
    assert len(git(home.meta_dir, "log", "--format=%H").split()) == 3
