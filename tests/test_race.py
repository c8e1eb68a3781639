"""Real processes racing on one applied repo: the transition lock picks exactly one winner."""

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.hive import commit_config, fake_program, fresh_commit, git

from hyperhive.home import Home

NAME = "manager"

# One process imports the CLI and what the racing commands use, then forks a racer per
# run: each a process of its own (its own pid, locks, environment and file descriptors)
# that says it is ready (a byte on the ready pipe) and blocks on the starting pipe, whose
# end of file, when the test closes the only write end, sends every racer into `main` at
# (nearly) the same moment. No racer pays an interpreter's start and imports of its own,
# and none spends CPU polling for the start while the others get ready.
ZYGOTE = r"""
import json, os, sys, traceback
from hyperhive.cli import main
import hyperhive.broker.messages, hyperhive.settings, hyperhive.wire.notify
import hyperhive.wire.protocol, hyperhive.workflow.approvals, hyperhive.workflow.checks
import hyperhive.workflow.deploy, hyperhive.workflow.hooks, hyperhive.workflow.states
ready, go, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
pids = []
for i, (argv, env) in enumerate(json.loads(sys.argv[4])):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.environ.update(env)
            for fd, name in ((1, "out"), (2, "err")):
                f = os.open(f"{out}/{i}.{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.dup2(f, fd)
                os.close(f)
            os.write(ready, b".")
            os.close(ready)
            assert os.read(go, 1) == b""
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code if isinstance(code, int) else 1)
    pids.append(pid)
os.close(ready)
print(json.dumps([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]))
"""


def race(home: Home, tmp: Path, runs: list[tuple[list[str], dict]]) -> list[tuple]:
    """Start one process per (argv, env) and fire them together; (code, out, err) each."""
    out = tmp / "racers"
    out.mkdir()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    zygote = None
    try:
        zygote = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE, str(ready_w), str(go_r), str(out), json.dumps(runs)],
            env={**os.environ, "HYPERHIVE_HOME": str(home.root)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=(ready_w, go_r),
            start_new_session=True,  # the racers with it, for a kill if it comes to that
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
                assert got, f"a racer died before the start: {zygote.communicate()[1]}"
                seen += len(got)
        os.close(go_w)  # the starting shot
        go_w = -1
        codes, err = zygote.communicate(timeout=60)
        assert zygote.returncode == 0, err
        return [
            (code, (out / f"{i}.out").read_text(), (out / f"{i}.err").read_text())
            for i, code in enumerate(json.loads(codes))
        ]
    finally:
        for fd in (ready_r, ready_w, go_r, go_w):
            if fd >= 0:
                os.close(fd)
        if zygote is not None and zygote.poll() is None:
            os.killpg(zygote.pid, signal.SIGKILL)
            zygote.wait()


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
    results = race(home, tmp_path, runs)

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
    results = race(home, tmp_path, runs)
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
    results = race(home, tmp_path, [(["deploy", f"{NAME}#{i}"], env) for i in (2, 3)])
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
