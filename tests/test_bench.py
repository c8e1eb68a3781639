"""The benchmark runs: a smoke run of each bench prints our figures and the references
beside them (speed itself is measured there, never asserted)."""

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "transitions.py"


def run(script: str, size: str = "--quick") -> str:
    """Run bench/<script> at `size` (--quick, or --smoke where a bench has the smaller
    size that still prints every section and row); its stdout."""
    proc = subprocess.run(
        [sys.executable, str(BENCH.parent / script), size],
        capture_output=True,
        text=True,
        timeout=300,  # a smoke run takes seconds; a loaded machine stretches it many times
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


# A row of the benches' tables (transitions.print_rows; broker.py's percentiles): n and
# three times, under a header naming them "median min mean" or "p50 p99 max"
TABLE_ROW = re.compile(r" (\d+) +(-?[\d.]+) (ms|s ) +(-?[\d.]+) (ms|s ) +(-?[\d.]+) (ms|s )$")


def seconds(value: str, unit: str) -> float:
    return float(value) / (1000 if unit == "ms" else 1)


def plausible(row: str, columns: str) -> bool:
    """A table row has samples, no negative time, and its figures in their order: the
    minimum not above the median or the mean; p50 <= p99 <= max. (A time may print as
    0.0 ms: an INSERT, or a CPU time under a clock tick.)"""
    m = TABLE_ROW.search(row)
    if m is None:
        return True  # not a table row: its time was checked above
    n, a, b, c = int(m[1]), *(seconds(m[i], m[i + 1]) for i in (2, 4, 6))
    ordered = 0 <= b <= a and b <= c if columns == "median" else 0 <= a <= b <= c
    return n >= 1 and ordered


def assert_timed_rows(out: str, labels: list[str]) -> None:
    """Each label has an `ours` or `ref` row, each such row carries a time, and a table's
    rows are plausible."""
    rows, columns = {}, "median"
    for line in out.splitlines():
        if " median " in line and " min " in line:
            columns = "median"
        elif " p50 " in line and " p99 " in line:
            columns = "p50"
        elif line.startswith(("  ours", "  ref")):
            rows[line] = columns
    for label in labels:
        found = [r for r in rows if label in r]
        assert found, f"no row with {label!r} in:\n{out}"
        assert all(" ms" in r or " s " in r for r in found), found
        assert all(plausible(r, rows[r]) for r in found), found


def test_transitions_smoke_run_prints_ours_and_reference():
    out = run("transitions.py", "--smoke")
    rows = out.splitlines()

    def row(who: str, label: str) -> str:
        found = [r for r in rows if r.startswith(f"  {who}") and label in r]
        assert found, f"no {who!r} row with {label!r} in:\n{out}"
        return found[0]

    for line in (
        row("ours", "in-process cycle"),
        row("ours", "CLI cycle"),
        row("ref", "git CLI + nix cycle at 4 approvals"),  # --smoke: 2, 3 and 4 approvals
        row("ours", "in-process cycle at 2 approvals"),
        row("ours", "in-process cycle at 4 approvals"),
        row("ours", "Approvals(home, n).all(pending_only=True)"),
        row("ours", "GET /api/state, first"),
        row("ours", "GET /api/state, again"),
        row("ref", "git for-each-ref"),
    ):
        assert " ms" in line or " s " in line, line
    assert "pending approvals found by both sides" in out
    assert out.count("ratio of medians") == 5  # (a) at 3 sizes, (b) twice
    growth = out[out.index("(a) p50 per step") :].splitlines()[2:5]  # a line per size
    assert [line.split()[0] for line in growth] == ["2", "3", "4"]  # --smoke's sizes
    assert all(len(line.split()) == 16 for line in growth), growth  # 5 steps x 3, size


def test_forge_smoke_run_prints_pages_and_git_references():
    out = run("forge.py", "--smoke")
    labels = ["GET /review/", ", cold (unified)", ", warm (unified)", "?view=split, warm"]
    labels += ["If-None-Match: its ETag (304)", "git diff <deployed> <proposed>"]
    labels += ["GET /repos/bench-log-50x/config/log (page 1)", "(the pager's link)"]
    labels += ["git log -n 50 --skip=", "interleaved changed lines: file_patches"]
    labels += ["git diff (the whole patch)", "/blob/big/blob-50x.py", "git show HEAD:big/"]
    assert_timed_rows(out, labels)
    # (a) cold, warm, split, 304 at 1x/10x/50x; (b) --smoke: 51, 501 and 2,501 commits,
    # pages [1, 2], [1, 5, 11], [1, 25, 51]; (c), (d), (e) one row each at 1x/10x/50x
    assert out.count("ratio of medians") == 12 + 8 + 3 + 3 + 3
    for scale in ("1x", "10x", "50x"):
        assert f"  {scale}: every file listed" in out
        assert f"  {scale}: statuses and similarities as `git diff -M -C -l400`" in out
        assert f"  {scale}: last page by the pager's link / page 1:" in out
        assert re.search(rf"  {scale}: pages \[[\d, ]+\]: both sides list the same commits", out)
        assert re.search(rf"  {scale}: \+\d+ -\d+, as `git diff --numstat` counts them", out)
    assert out.count("ratio of medians, ours / reference: (c)") == 3
    assert_timed_rows(out, ["renames cold", "git diff -M -C --name-status"])


def test_startup_smoke_run_prints_each_entry_beside_its_references():
    out = run("startup.py", "--smoke")
    labels = ["hyperhive --help", "hyperhive approvals", "hyperhive mcp -> initialize answered"]
    labels += ["hyperhive harness -> first recv", "hyperhive up -> GET /login answered"]
    labels += ["python -c pass", "git --version", "python -c 'import mcp.server'"]
    labels += ["python -c 'import <the daemon's packages>'"]
    assert_timed_rows(out, [f"{label}, {kind}" for label in labels for kind in ("wall", "cpu")])


def test_state_quick_run_prints_api_state_beside_for_each_ref():
    out = run("state.py")
    labels = ["GET /api/state, cold (new process)", "GET /api/state, warm", "GET / (the dash"]
    labels += ["right after a new tag", "git for-each-ref refs/tags/ x repos, with fields"]
    assert_timed_rows(out, labels)
    assert out.count("pending approvals found by both sides") == 3  # 1x, 10x, 50x
    assert out.count("ratio of medians") == 9


def test_push_smoke_run_prints_pushes_to_the_forge_beside_git_push():
    out = run("push.py", "--smoke")
    labels = ["git push HEAD:refs/for/main, 300 commits", "git push HEAD:main, 300 commits"]
    labels += ["git push file:// to a bare repo, 300 commits", "receive.fsckObjects=true"]
    assert_timed_rows(out, labels)
    assert out.count("ratio of medians") == 1
    for n in (20, 120, 300):
        assert re.search(rf"  {n} commits: refs/for/main [\d.]+ s \([\d.]+x git with fsck", out)


def test_load_quick_run_prints_what_the_daemon_held_and_its_answers():
    out = run("load.py")
    labels = ["GET /login, nothing else open", "slow clients open", "logins (wrong password)"]
    labels += ["pushes to refs/for/main", "over file://", "host.sock ping"]
    assert_timed_rows(out, labels)
    assert "slow clients answered or cut while the requests ran: 0 of 100" in out
    assert "proposals made: 2 of 2" in out
    assert re.search(r"long-polls served: 16, refused at once: 34", out)
    assert re.search(r"daemon with 100 slow clients open .*: \d+ threads, \d+ open files", out)


def test_swarm_smoke_run_prints_the_daemon_under_load_beside_its_references():
    out = run("swarm.py", "--smoke")
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


def test_broker_smoke_run_prints_latency_throughput_and_the_sleep_poll_reference():
    out = run("broker.py", "--smoke")
    labels = ["long-poll recv(wait_seconds=60)", "sleep-poll: recv() every 0.5 s"]
    labels += ["send on one connection", "recv draining", "ping round trip", "sqlite3 INSERT"]
    labels += ["send pipelined 10 deep on one connection"]
    labels += ["send -> recv wake-up, 10 readers waiting", "5,000 messages stored"]
    labels += ["send, 10 agents, a socket each", "send, 8 connections on one socket"]
    labels += ["sqlite3 INSERT, 10 thread(s), a connection each"]
    assert_timed_rows(out, labels)
    assert "--quick: poll interval shortened to 0.5 s" in out
    assert "p50" in out and "p99" in out
    assert "ratio of medians, sleep-poll / long-poll" in out
    assert "messages/second: send" in out and "pipelined 10 deep" in out
    assert "(d) sends/second by history: ours" in out
    assert "(e) sends/second, many senders at once: 1 agents, a socket each: ours" in out


def test_stats_quick_run_prints_ingest_query_and_size_beside_the_naive_table():
    out = run("stats.py")
    labels = ["record 1 h of turns", "naive INSERT of the same", "Stats.record_turn"]
    labels += ["the agent's keys, then its buckets", "NOT INDEXED", "naive table: full scan"]
    assert_timed_rows(out, labels)
    assert "all sides aggregate" in out and "to the same counts and sums" in out
    assert "rows (raw " in out and "minute " in out and "hour " in out  # all three levels
    assert out.count("ratio of medians") == 2


def test_sandbox_quick_run_prints_ours_and_reference():
    out = run("sandbox.py")
    labels = ["harness start -> first claude exec", "recv reply -> claude exec", "/bin/true"]
    assert_timed_rows(out, labels)
    assert "sandboxed" in out and "open" in out
