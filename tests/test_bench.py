"""The benchmark runs: a smoke run of bench/transitions.py prints our figures and the
git references beside them (speed itself is measured there, never asserted)."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "transitions.py"


def test_transitions_quick_run_prints_ours_and_reference():
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.splitlines()

    def row(who: str, label: str) -> str:
        found = [r for r in rows if r.startswith(f"  {who}") and label in r]
        assert found, f"no {who!r} row with {label!r} in:\n{proc.stdout}"
        return found[0]

    for line in (
        row("ours", "in-process cycle"),
        row("ours", "CLI cycle"),
        row("ref", "git CLI cycle"),
        row("ours", "Approvals(home, n).all(pending_only=True)"),
        row("ref", "git for-each-ref"),
    ):
        assert " ms" in line or " s " in line, line
    assert "pending approvals found by both sides" in proc.stdout
    assert proc.stdout.count("ratio of medians") == 3


def test_forge_quick_run_prints_pages_and_git_references():
    proc = subprocess.run(
        [sys.executable, str(BENCH.parent / "forge.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [r for r in proc.stdout.splitlines() if r.startswith("  ours") or r.startswith("  ref")]
    labels = ["GET /review/", "?view=split", "git diff", "GET /repos/bench-log/config/log"]
    labels += ["?page=", "git log -n 50 --skip="]
    for label in labels:
        found = [r for r in rows if label in r]
        assert found, f"no row with {label!r} in:\n{proc.stdout}"
        assert all(" ms" in r or " s " in r for r in found), found
    assert "both sides list the same commits in the same order" in proc.stdout
    assert proc.stdout.count("ratio of medians") == 5


def test_broker_quick_run_prints_latency_throughput_and_the_sleep_poll_reference():
    proc = subprocess.run(
        [sys.executable, str(BENCH.parent / "broker.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = proc.stdout
    rows = [r for r in out.splitlines() if r.startswith("  ours") or r.startswith("  ref")]
    labels = ["long-poll recv(wait_seconds=60)", "sleep-poll: recv() every 0.5 s"]
    labels += ["send on one connection", "recv draining", "ping round trip", "sqlite3 INSERT"]
    for label in labels:
        found = [r for r in rows if label in r]
        assert found, f"no row with {label!r} in:\n{out}"
        assert all(" ms" in r or " s " in r for r in found), found
    assert "--quick: poll interval shortened to 0.5 s" in out
    assert "p50" in out and "p99" in out
    assert "ratio of medians, sleep-poll / long-poll" in out
    assert "messages/second: send" in out


def test_stats_quick_run_prints_ingest_query_and_size_beside_the_naive_table():
    proc = subprocess.run(
        [sys.executable, str(BENCH.parent / "stats.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = proc.stdout
    rows = [r for r in out.splitlines() if r.startswith("  ours") or r.startswith("  ref")]
    labels = ["record 1 h of turns", "naive INSERT of the same", "Stats.record_turn"]
    labels += ["the agent's keys, then its buckets", "NOT INDEXED", "naive table: full scan"]
    for label in labels:
        found = [r for r in rows if label in r]
        assert found, f"no row with {label!r} in:\n{out}"
        assert all(" ms" in r or " s " in r for r in found), found
    assert "all sides aggregate" in out and "to the same counts and sums" in out
    assert "rows (raw " in out and "minute " in out and "hour " in out  # all three levels
    assert out.count("ratio of medians") == 2
