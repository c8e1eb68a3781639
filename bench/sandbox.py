"""Benchmark of the local runtime's sandbox: how much later a turn's `claude` starts when
the agent's harness runs in its bubblewrap sandbox than when it runs open, both measured
in the same run on the same agent, home and machine.

(a) harness start -> first claude exec: `Harnesses.start` (the daemon's call: the
    command line, bwrap's namespaces and mounts in the sandbox, the harness's start,
    whoami, release, its first recv answered at once) until the policy's `claude` runs
    its first line; then the harness is stopped (a SIGTERM it answers) and started again.
(b) a turn: from the moment the recv reply carrying a message is written to the harness
    until its `claude` runs: the harness writes inflight.json, acks, reads the policy,
    renders the MCP config and the prompt and execs claude, in its sandbox or not.
(c) reference: the bare cost of the sandbox, `bwrap <the agent's sandbox> /bin/true`
    beside `/bin/true` alone, spawn to exit.

The daemon's side is a stand-in on the agent's real socket path (whoami, release, recv,
ack, turn_report, in hostsock's protocol), so the figures are the harness's and the
sandbox's alone. The `claude` is a shell script that appends `date +%s%N` (CLOCK_REALTIME,
one clock inside and outside: no time namespace) to a file in the state, then prints a
stream-json `result`. Nothing is asserted about speed; the script checks every turn ran.
Run: .venv/bin/python bench/sandbox.py [--quick] (see bench/README.md).
"""

import argparse
import json
import os
import queue
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from transitions import ROWS, note, print_rows, record, say

from hyperhive.agents import init_hive
from hyperhive.home import Home
from hyperhive.runtime import sandbox
from hyperhive.runtime.local import LocalRuntime
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import deploy

NAME = "manager"
CLAUDE = """#!/bin/sh
[ "$1" = --version ] && { echo '2.1.328 (Claude Code)'; exit 0; }
date +%s%N >> ./claude-exec.log
echo '{"type":"result","subtype":"success","is_error":false,"result":"ok","session_id":"s"}'
"""


def hung_up(conn: socket.socket) -> bool:
    return bool(select.select([conn], [], [], 0)[0]) and not conn.recv(1, socket.MSG_PEEK)


class SocketStandIn:
    """A unix socket served as the daemon serves an agent's: a thread per connection,
    whose request line `respond(conn, request)` answers (bench/startup.py has one too)."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(16)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn: socket.socket) -> None:
        with conn:
            line = conn.makefile("rb").readline()
            if line:
                self.respond(conn, json.loads(line))

    def respond(self, conn: socket.socket, request: dict) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.sock.close()


class StandIn(SocketStandIn):
    """The daemon's side of one agent's socket: answers whoami and release, hands a
    message to a recv when `turn()` asks (noting the time its reply is written), and
    counts turn reports."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self.pending: queue.Queue[None] = queue.Queue()
        self.sent: list[int] = []  # time.time_ns() just before each message's reply
        self.reports = queue.Queue()
        self.next_id = 1
        super().__init__(path)

    def respond(self, conn: socket.socket, request: dict) -> None:
        op = request.get("op")
        reply: dict = {"ok": True}
        if op == "whoami":
            reply.update(name=NAME, role="manager", tools=[])
        elif op == "release":
            reply["released"] = 0
        elif op == "recv":
            reply["messages"] = []
            if self.wait_turn(conn, request.get("wait_seconds", 60)):
                message = {"id": self.next_id, "from": "operator", "body": "go"}
                message["at"] = "2026-01-01T00:00:00Z"
                self.next_id += 1
                reply["messages"] = [message]
        elif op == "turn_report":
            self.reports.put(request.get("report"))
        if reply.get("messages"):
            self.sent.append(time.time_ns())
        try:
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError:  # its harness was stopped: the turn goes to the next one
            if reply.get("messages"):
                self.sent.pop()
                self.pending.put(None)

    def wait_turn(self, conn: socket.socket, seconds: float) -> bool:
        """A turn was asked for while the harness still waits on `conn`."""
        deadline = time.monotonic() + seconds
        while True:
            if hung_up(conn):
                return False
            try:
                self.pending.get(timeout=0.01)
                if hung_up(conn):  # meanwhile: the next harness's, then
                    self.pending.put(None)
                    return False
                return True
            except queue.Empty:
                if time.monotonic() >= deadline:  # a recv without a wait: one look
                    return False

    def turn(self) -> None:
        self.pending.put(None)


def execs(state: Path) -> list[int]:
    try:
        return [int(x) for x in (state / "claude-exec.log").read_text().split()]
    except FileNotFoundError:
        return []


def wait(predicate, timeout: float = 60.0, what: str = "it"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.002)
    raise SystemExit(f"timed out waiting for {what}")


def set_sandbox(home: Home, on: bool) -> None:
    (home.root / "hyperhive.toml").write_text(f"[local]\nsandbox = {str(on).lower()}\n")


def measure(home: Home, runtime: LocalRuntime, stand: StandIn, on: bool, args) -> None:
    who, label = ("ours", "sandboxed") if on else ("ref ", "open")
    set_sandbox(home, on)
    state = home.state_dir(NAME)
    starts, turns = [], []
    for _ in range(args.starts):
        before = len(execs(state))
        stand.turn()  # the first recv is answered at once
        t0 = time.time_ns()
        runtime.harnesses.start(NAME, f"bench-{time.time_ns()}")
        t1 = wait(lambda b=before: execs(state)[b:], what="the first claude")[0]
        starts.append((t1 - t0) / 1e9)
        stand.reports.get(timeout=60)
        for _ in range(args.turns):
            before = len(execs(state))
            sent = len(stand.sent)
            stand.turn()
            t1 = wait(lambda b=before: execs(state)[b:], what="a turn's claude")[0]
            turns.append((t1 - stand.sent[sent]) / 1e9)
            stand.reports.get(timeout=60)
        runtime.harnesses.stop(NAME)
    record("a", who, f"harness start -> first claude exec, {label}", starts)
    record("b", who, f"recv reply -> claude exec, {label}", turns)


def bare(home: Home, runtime: LocalRuntime, repeats: int) -> None:
    env = runtime.harnesses.env(NAME, sandboxed=True)
    box = runtime.harnesses.sandbox(NAME, env)
    for who, argv in (("ours", box.command(["/bin/true"])), ("ref ", ["/bin/true"])):
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run(argv, env=env, check=True)
            samples.append(time.perf_counter() - t0)
        label = "bwrap <sandbox> /bin/true" if who == "ours" else "/bin/true"
        record("c", who, label, samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=10, help="harness starts per mode")
    parser.add_argument("--turns", type=int, default=10, help="turns after each start")
    parser.add_argument("--repeats", type=int, default=50, help="bare spawns per side")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.starts, args.turns, args.repeats = 1, 1, 3
    sandbox.check()
    say(
        f"hyperhive bench/sandbox.py: starts={args.starts} turns={args.turns} "
        f"repeats={args.repeats} (bwrap {sandbox.bwrap()}, uid {os.geteuid()})"
    )
    with tempfile.TemporaryDirectory(prefix="hyperhive-bench-") as tmp:
        home = Home(Path(tmp) / "hive")
        runtime = LocalRuntime(home)
        init_hive(home, runtime, "operator")
        claude = Path(tmp) / "opt" / "claude"
        claude.parent.mkdir(parents=True)
        claude.write_text(CLAUDE)
        claude.chmod(0o755)
        config = home.config_dir(NAME)
        (config / "agent.nix").write_text(f'{{ ... }}: {{ hyperhive.claude = "{claude}"; }}\n')
        for git in (["add", "-A"], ["commit", "-qm", "bench claude"]):
            subprocess.run(
                ["git", "-c", "user.name=b", "-c", "user.email=b@b", *git], cwd=config, check=True
            )
        approvals = Approvals(home, NAME)
        (home.applied_dir(NAME) / "hooks" / "post-receive").unlink()
        target = approvals.propose("HEAD", "operator", "bench").id
        approvals.approve(target, "operator")
        deploy(home, NAME, target, runtime)
        stand = StandIn(home.agent_socket(NAME))
        try:
            for on in (False, True, False, True):  # interleaved: drift hits both alike
                say(f"  {'sandboxed' if on else 'open'} …")
                measure(home, runtime, stand, on, args)
            bare(home, runtime, args.repeats)
        finally:
            runtime.harnesses.stop(NAME)
            stand.close()
        ran = len(execs(home.state_dir(NAME)))
        expected = 4 * args.starts * (args.turns + 1)
        if ran != expected:
            raise SystemExit(f"{ran} claude runs, expected {expected}")
    merged: dict[tuple, list[float]] = {}
    for r in ROWS:
        merged.setdefault((r.section, r.who, r.label), []).extend(r.samples)
    ROWS.clear()
    for (section, who, label), samples in merged.items():
        record(section, who, label, samples)
    print_rows(
        {
            "a": "(a) harness start until its first claude runs",
            "b": "(b) a turn: the message's recv reply until claude runs",
            "c": "(c) reference: the sandbox alone, spawn to exit",
        }
    )
    note(
        "ours = in the agent's bubblewrap sandbox, ref = open ([local] sandbox = false); "
        "goal: the sandbox adds under 50 ms to a turn's start."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
