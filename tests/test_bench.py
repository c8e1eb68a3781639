"""The benchmark runs: a smoke run of bench/transitions.py prints our figures and the
git references beside them (speed itself is measured there, never asserted)."""

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "transitions.py"


def quick(script: str) -> str:
    """Run bench/<script> --quick; its stdout."""
    proc = subprocess.run(
        [sys.executable, str(BENCH.parent / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,  # a smoke run takes seconds; a loaded machine stretches it many times
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


def assert_timed_rows(out: str, labels: list[str]) -> None:
    """Each label has an `ours` or `ref` row, and each such row carries a time."""
    rows = [r for r in out.splitlines() if r.startswith("  ours") or r.startswith("  ref")]
    for label in labels:
        found = [r for r in rows if label in r]
        assert found, f"no row with {label!r} in:\n{out}"
        assert all(" ms" in r or " s " in r for r in found), found


def test_transitions_quick_run_prints_ours_and_reference():
    out = quick("transitions.py")
    rows = out.splitlines()

    def row(who: str, label: str) -> str:
        found = [r for r in rows if r.startswith(f"  {who}") and label in r]
        assert found, f"no {who!r} row with {label!r} in:\n{out}"
        return found[0]

    for line in (
        row("ours", "in-process cycle"),
        row("ours", "CLI cycle"),
        row("ref", "git CLI + nix cycle at 15 approvals"),
        row("ours", "in-process cycle at 3 approvals"),
        row("ours", "in-process cycle at 15 approvals"),
        row("ours", "Approvals(home, n).all(pending_only=True)"),
        row("ours", "GET /api/state, first"),
        row("ours", "GET /api/state, again"),
        row("ref", "git for-each-ref"),
    ):
        assert " ms" in line or " s " in line, line
    assert "pending approvals found by both sides" in out
    assert out.count("ratio of medians") == 5  # (a) at 3 sizes, (b) twice
    growth = out[out.index("(a) p50 per step") :].splitlines()[2:5]  # a line per size
    assert [line.split()[0] for line in growth] == ["3", "6", "15"]
    assert all(len(line.split()) == 16 for line in growth), growth  # 5 steps x 3, size


def test_forge_quick_run_prints_pages_and_git_references():
    out = quick("forge.py")
    labels = ["GET /review/", ", cold (unified)", ", warm (unified)", "?view=split, warm"]
    labels += ["If-None-Match: its ETag (304)", "git diff <deployed> <proposed>"]
    labels += ["GET /repos/bench-log-50x/config/log (page 1)", "(the pager's link)"]
    labels += ["git log -n 50 --skip=", "interleaved changed lines: file_patches"]
    labels += ["git diff (the whole patch)", "/blob/big/blob-50x.py", "git show HEAD:big/"]
    assert_timed_rows(out, labels)
    # (a) cold, warm, split, 304 at 1x/10x/50x; (b) --quick: 61, 601 and 3,001 commits,
    # pages [1, 2], [1, 6, 13], [1, 30, 61]; (c), (d), (e) one row each at 1x/10x/50x
    assert out.count("ratio of medians") == 12 + 8 + 3 + 3 + 3
    for scale in ("1x", "10x", "50x"):
        assert f"  {scale}: every file listed" in out
        assert f"  {scale}: statuses and similarities as `git diff -M -C -l400`" in out
        assert f"  {scale}: last page by the pager's link / page 1:" in out
        assert re.search(rf"  {scale}: pages \[[\d, ]+\]: both sides list the same commits", out)
        assert re.search(rf"  {scale}: \+\d+ -\d+, as `git diff --numstat` counts them", out)
    assert out.count("ratio of medians, ours / reference: (c)") == 3
    assert_timed_rows(out, ["renames cold", "git diff -M -C --name-status"])


def test_broker_quick_run_prints_latency_throughput_and_the_sleep_poll_reference():
    out = quick("broker.py")
    labels = ["long-poll recv(wait_seconds=60)", "sleep-poll: recv() every 0.5 s"]
    labels += ["send on one connection", "recv draining", "ping round trip", "sqlite3 INSERT"]
    labels += ["send -> recv wake-up, 10 readers waiting", "5,000 messages stored"]
    labels += ["send, 10 agents, a socket each", "send, 8 connections on one socket"]
    labels += ["sqlite3 INSERT, 10 thread(s), a connection each"]
    assert_timed_rows(out, labels)
    assert "--quick: poll interval shortened to 0.5 s" in out
    assert "p50" in out and "p99" in out
    assert "ratio of medians, sleep-poll / long-poll" in out
    assert "messages/second: send" in out
    assert "(d) sends/second by history: ours" in out
    assert "(e) sends/second, many senders at once: 1 agents, a socket each: ours" in out


def test_stats_quick_run_prints_ingest_query_and_size_beside_the_naive_table():
    out = quick("stats.py")
    labels = ["record 1 h of turns", "naive INSERT of the same", "Stats.record_turn"]
    labels += ["the agent's keys, then its buckets", "NOT INDEXED", "naive table: full scan"]
    assert_timed_rows(out, labels)
    assert "all sides aggregate" in out and "to the same counts and sums" in out
    assert "rows (raw " in out and "minute " in out and "hour " in out  # all three levels
    assert out.count("ratio of medians") == 2


def test_load_quick_run_prints_what_the_daemon_held_and_its_answers():
    out = quick("load.py")
    labels = ["GET /login, nothing else open", "slow clients open", "logins (wrong password)"]
    labels += ["pushes to refs/for/main", "over file://", "host.sock ping"]
    assert_timed_rows(out, labels)
    assert "slow clients answered or cut while the requests ran: 0 of 100" in out
    assert "proposals made: 2 of 2" in out
    assert re.search(r"long-polls served: 16, refused at once: 34", out)
    assert re.search(r"daemon with 100 slow clients open .*: \d+ threads, \d+ open files", out)


def test_sandbox_quick_run_prints_ours_and_reference():
    out = quick("sandbox.py")
    labels = ["harness start -> first claude exec", "recv reply -> claude exec", "/bin/true"]
    assert_timed_rows(out, labels)
    assert "sandboxed" in out and "open" in out


def test_swarm_quick_run_prints_the_daemon_under_load_beside_its_references():
    out = quick("swarm.py")
    labels = ["messages/s delivered", "send -> recv wake-up p50", "same probe, idle hive p50"]
    labels += ["turn start p50", "GET /api/state p50", "GET /login p50", "sqlite INSERT into"]
    labels += ["same INSERT, scratch db p50", "daemon RSS", "daemon open fds", "fd limit"]
    rows = [r for r in out.splitlines() if r.startswith("  ours") or r.startswith("  ref")]
    for label in labels:
        assert [r for r in rows if label in r], f"no row with {label!r} in:\n{out}"
    assert "sandbox: " in out
    assert not re.search(r"probe \w+ failed", out), out

    def cells(label: str) -> list[str]:
        (line,) = [r for r in out.splitlines() if label in r]
        return line.replace(",", " ").split()

    # the swarm really ran: tasks became turns, none failed, all was delivered, and the
    # daemon took every harness with it
    tasks, turns, failed = (int(x) for x in cells("tasks injected, turns run, failed")[-3:])
    assert tasks > 0 and turns > 0 and failed == 0, out
    assert cells("backlog after drain")[-3] == "0", out
    assert cells("harnesses left after the stop")[-1] == "0", out


def test_state_quick_run_prints_api_state_beside_for_each_ref():
    out = quick("state.py")
    labels = ["GET /api/state, cold (new process)", "GET /api/state, warm", "GET / (the dash"]
    labels += ["right after a new tag", "git for-each-ref refs/tags/ x repos, with fields"]
    assert_timed_rows(out, labels)
    assert out.count("pending approvals found by both sides") == 3  # 1x, 10x, 50x
    assert out.count("ratio of medians") == 9
