"""Benchmark of process start-up: what each `hyperhive` process pays before it does its
work, wall and CPU, beside references started the same way in the same run.

Entries (ours), each a fresh process, spawn to the moment it has done what it is for:
- `hyperhive --help`: until it exits (the parser alone);
- `hyperhive approvals`: until it exits, on a new home (`hyperhive init`: nothing pending);
- `hyperhive mcp --socket S`: until it answers an MCP `initialize` on stdin (what each
  `claude` turn starts), against a stand-in daemon socket answering `whoami`;
- `hyperhive harness`: until its first `recv` reaches the stand-in socket (it has read its
  policy, run `claude --version` — a shell script here — asked whoami and release);
- `hyperhive up --port 0`: until the forge answers `GET /login` (a new home each start).
References (ref): `python -c pass` (the interpreter's own start, the same interpreter),
`python -c 'import mcp.server'` (the floor of the SDK the mcp server imports),
`python -c 'import flask'` (the floor of a web app), `python -c 'import <the daemon's
third-party packages>'` (flask, flask-sock, flask-wtf, gunicorn, apscheduler, dulwich,
pygments, unidiff: the floor of what the daemon imports), `git --version` (a C CLI).

The packages' bytecode is compiled first (`compileall`, as an installed package has it):
with PYTHONDONTWRITEBYTECODE set, each start would otherwise compile every changed module.
CPU is user + system time of the process and everything it started, read from
/proc/<pid>/stat (utime, stime, cutime, cstime of each process of the tree) at the moment
it was ready, or from wait4's rusage for one that exits. Nothing is asserted about speed.
Run: .venv/bin/python bench/startup.py [--quick | --smoke] [--repeats N] (see
bench/README.md).
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from importlib.util import find_spec
from pathlib import Path

from sandbox import SocketStandIn
from transitions import note, print_rows, record, say

BIN = Path(sys.executable).parent
HYPERHIVE = str(BIN / "hyperhive")
TICK = os.sysconf("SC_CLK_TCK")
CLAUDE = "#!/bin/sh\necho '2.1.328 (Claude Code)'\n"  # all `--version` asks of it
# What the daemon serves with, third-party: the floor of its imports.
DAEMON_PACKAGES = (
    "flask",
    "flask_sock",
    "flask_wtf.csrf",
    "gunicorn.app.base",
    "gunicorn.workers.gthread",
    "apscheduler.schedulers.background",
    "dulwich.repo",
    "dulwich.server",
    "dulwich.web",
    "pygments.lexers",
    "unidiff",
)
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "bench", "version": "0"},
    },
}


def tree_cpu(root: int) -> float:
    """Seconds of CPU used so far by `root` and every live descendant (with the children
    each has reaped), from /proc."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = text[text.rindex(")") + 2 :].split()
        ppid = int(fields[1])
        cpu = sum(int(f) for f in fields[11:15]) / TICK  # utime stime cutime cstime
        stats[int(entry)] = (ppid, cpu)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0.0))[1]
        todo += [p for p, (ppid, _) in stats.items() if ppid == pid]
    return total


def run_to_exit(argv: list[str], **kw) -> tuple[float, float]:
    """(wall, cpu) of one process run to its exit (it must exit 0)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, **kw)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv} exited {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


class StandIn(SocketStandIn):
    """The daemon's side of an agent socket: whoami, release, and a recv it holds until
    the client hangs up; each op's arrival is put on `seen`."""

    def __init__(self, path: Path, tools: list[str]):
        self.tools = tools
        self.seen: list[tuple[str, float]] = []
        self.arrived = threading.Condition()
        super().__init__(path)

    def respond(self, conn: socket.socket, request: dict) -> None:
        op = request.get("op")
        with self.arrived:
            self.seen.append((op, time.perf_counter()))
            self.arrived.notify_all()
        reply: dict = {"ok": True}
        if op == "whoami":
            reply.update(name="manager", role="manager", tools=self.tools)
        elif op == "release":
            reply["released"] = 0
        elif op == "recv":
            conn.recv(1)  # held until the harness goes away
            return
        conn.sendall(json.dumps(reply).encode() + b"\n")

    def wait_for(self, op: str, after: int, timeout: float = 60) -> float:
        """The time the first `op` after the `after`-th arrival came."""
        with self.arrived:
            ok = self.arrived.wait_for(
                lambda: any(o == op for o, _ in self.seen[after:]), timeout=timeout
            )
            if not ok:
                raise SystemExit(f"no {op} reached the stand-in within {timeout} s")
            return next(t for o, t in self.seen[after:] if o == op)


def mcp_start(sock: Path) -> tuple[float, float]:
    """`hyperhive mcp` until its answer to `initialize`; then stdin closes and it exits."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [HYPERHIVE, "mcp", "--socket", str(sock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    proc.stdin.write(json.dumps(INITIALIZE).encode() + b"\n")
    proc.stdin.flush()
    reply = json.loads(proc.stdout.readline() or b"null")
    wall = time.perf_counter() - t0
    cpu = tree_cpu(proc.pid)
    proc.stdin.close()
    proc.wait(timeout=60)
    if not (isinstance(reply, dict) and reply.get("id") == 1 and "result" in reply):
        raise SystemExit(f"hyperhive mcp answered initialize with {reply!r}")
    return wall, cpu


def harness_start(sock: Path, stand: StandIn, state: Path, etc: Path) -> tuple[float, float]:
    """`hyperhive harness` until its first recv reaches the socket; then SIGTERM."""
    after = len(stand.seen)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [HYPERHIVE, "harness", "--socket", str(sock), "--state", str(state), "--etc", str(etc)],
        stderr=subprocess.DEVNULL,
    )
    try:
        wall = stand.wait_for("recv", after) - t0
        cpu = tree_cpu(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return wall, cpu


def daemon_start(root: Path) -> tuple[float, float]:
    """`hyperhive up` on a new home until `GET /login` answers; then SIGTERM."""
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    log = root.parent / "up.log"
    out = log.open("w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [HYPERHIVE, "up", "--home", str(root), "--port", "0"],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HYPERHIVE_HOME": str(root)},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (m := re.search(r"http://127\.0\.0\.1:(\d+)/", log.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"hyperhive up did not listen:\n{log.read_text()}")
            time.sleep(0.005)
        url = f"http://127.0.0.1:{m.group(1)}/login"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=30) as r:
                    r.read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
        wall = time.perf_counter() - t0
        cpu = tree_cpu(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.close()
    return wall, cpu


def sample(section: str, who: str, label: str, runs: int, start) -> None:
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = start()
        walls.append(wall)
        cpus.append(cpu)
    record(section, who, f"{label}, wall", walls)
    record(section, who, f"{label}, cpu", cpus)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="starts per entry")
    parser.add_argument("--daemon-repeats", type=int, default=5, help="starts of the daemon")
    parser.add_argument("--quick", action="store_true", help="a small run: 2 starts each")
    parser.add_argument("--smoke", action="store_true", help="every row once (tests/test_bench.py)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.daemon_repeats = 2, 1
    if args.smoke:
        args.repeats, args.daemon_repeats = 1, 1
    n = args.repeats
    py = sys.executable
    packages = [str(Path(find_spec(m).origin).parent) for m in ("hyperhive", "forge_ui")]
    subprocess.run([py, "-m", "compileall", "-q", *packages], check=True)
    with tempfile.TemporaryDirectory(prefix="hh-startup-") as tmp:
        tmp = Path(tmp)
        home = tmp / "home"
        env = {**os.environ, "HYPERHIVE_HOME": str(home)}
        subprocess.run([HYPERHIVE, "init"], env=env, check=True, stdout=subprocess.DEVNULL)
        sock = tmp / "agent.sock"
        from hyperhive.wire.ops import tools_for  # the tool list a manager gets

        stand = StandIn(sock, tools_for("manager"))
        claude = tmp / "claude"
        claude.write_text(CLAUDE)
        claude.chmod(0o755)
        etc = tmp / "etc"
        etc.mkdir()
        (etc / "policy.json").write_text(json.dumps({"claude": str(claude)}))

        say(f"start-up of each entry, {n} starts each (daemon: {args.daemon_repeats})")
        sample("a", "ref ", "python -c pass", n, lambda: run_to_exit([py, "-c", "pass"]))
        sample("a", "ref ", "git --version", n, lambda: run_to_exit(["git", "--version"]))
        sample("a", "ours", "hyperhive --help", n, lambda: run_to_exit([HYPERHIVE, "--help"]))
        approvals = [HYPERHIVE, "approvals"]
        sample("a", "ours", "hyperhive approvals", n, lambda: run_to_exit(approvals, env=env))
        mcp_floor = [py, "-c", "import mcp.server"]
        sample("b", "ref ", "python -c 'import mcp.server'", n, lambda: run_to_exit(mcp_floor))
        sample("b", "ours", "hyperhive mcp -> initialize answered", n, lambda: mcp_start(sock))
        state = tmp / "state"
        sample(
            "c",
            "ours",
            "hyperhive harness -> first recv",
            n,
            lambda: harness_start(sock, stand, state, etc),
        )
        flask = [py, "-c", "import flask"]
        sample("d", "ref ", "python -c 'import flask'", n, lambda: run_to_exit(flask))
        floor = [py, "-c", f"import {', '.join(DAEMON_PACKAGES)}"]
        sample(
            "d", "ref ", "python -c 'import <the daemon's packages>'", n, lambda: run_to_exit(floor)
        )
        sample(
            "d",
            "ours",
            "hyperhive up -> GET /login answered",
            args.daemon_repeats,
            lambda: daemon_start(tmp / "daemon" / "hive"),
        )
        stand.close()
    print_rows(
        {
            "a": "(a) the CLI: spawn to exit",
            "b": "(b) the agents' MCP server: spawn to its initialize reply",
            "c": "(c) an agent's harness: spawn to its first recv on the socket",
            "d": "(d) the daemon: spawn to the forge's first answer",
        }
    )
    note(
        "cpu: user + system seconds of the process tree until ready (wait4 for one that "
        "exits); the `python -c` rows are the same interpreter as ours."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
