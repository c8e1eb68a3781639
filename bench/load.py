"""Benchmark of the daemon under load from one client, all on 127.0.0.1: how fast it still
answers and what it holds meanwhile (the worker process's threads, open files, RSS).

(a) slow clients: N connections each send half a request head (`GET /login HTTP/1.1`,
    `Host: x`, never the empty line) and wait; meanwhile `GET /login` and `GET /api/state`
    are timed. Reference: the same requests with nothing else open, in the same run.
(b) concurrent logins: C clients each GET the login form and POST a wrong password at
    once (each check is a scrypt hash of ~32 MiB); timed, with a `GET /login` beside them.
    Reference: one login at a time.
(c) concurrent pushes: P clones each push a new commit to refs/for/main at once over the
    git remote (each a proposal). Reference: the same pushes with the stock git CLI to a
    plain bare repo over file:// (git's own receive-pack, no HTTP, no rules).
(d) agent-socket long-polls: L connections to one agent's socket each ask a 60 s `recv`;
    the socket serves a few (hostsock.AGENT_CONNECTIONS) and refuses the rest at once;
    a `ping` on host.sock is timed meanwhile. Reference: the same ping before.

Every part is bounded in count and time and closes what it opened. Nothing is asserted
about speed; the script checks that each request got its answer and each push its
proposal. Run: .venv/bin/python bench/load.py [--quick] (see bench/README.md).
"""

import argparse
import concurrent.futures
import contextlib
import http.client
import os
import re
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from broker import Daemon
from transitions import engine_pending, note, print_rows, record, say

from hyperhive import operator
from hyperhive.daemon import hostsock
from hyperhive.home import Home

PASSWORD = "bench load password"
HALF_HEAD = b"GET /login HTTP/1.1\r\nHost: x\r\n"
SECTION_SECONDS = 120.0  # no part runs longer than this


# -- what the daemon holds ------------------------------------------------------------------


def worker_pid(master: int) -> int:
    """gunicorn's worker: the `hyperhive up` process's child that serves requests."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    if not children:
        raise SystemExit("the daemon has no worker process")
    return int(children[0])


def held(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()

    def field(name: str) -> int:
        return int(re.search(rf"^{name}:\s+(\d+)", status, re.M).group(1))

    return {
        "threads": field("Threads"),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "rss": field("VmRSS") / 1024,
        "peak": field("VmHWM") / 1024,
    }


def show(what: str, h: dict) -> None:
    say(
        f"    daemon {what}: {h['threads']} threads, {h['fds']} open files, "
        f"RSS {h['rss']:.0f} MiB (peak so far {h['peak']:.0f} MiB)"
    )


class Sampler:
    """The worker's highest thread count and RSS while a part runs."""

    def __init__(self, pid: int):
        self.pid, self.top = pid, held(pid)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopping.wait(0.05):
            with_now = held(self.pid)
            self.top = {k: max(v, with_now[k]) for k, v in self.top.items()}

    def __enter__(self) -> "Sampler":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join()


# -- HTTP ----------------------------------------------------------------------------------


def request(port: int, method: str, path: str, headers=None, body=None, timeout=30.0):
    """One request on a new connection (the daemon closes each after its answer)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        conn.close()


def timed_get(port: int, path: str, headers=None) -> float:
    start = time.perf_counter()
    status, _, _ = request(port, "GET", path, headers)
    took = time.perf_counter() - start
    if status != 200:
        raise SystemExit(f"GET {path} answered {status}")
    return took


def login(port: int, password: str) -> tuple[int, float]:
    """GET the form (session cookie, CSRF token), POST the password; status and time."""
    start = time.perf_counter()
    _, headers, page = request(port, "GET", "/login")
    cookie = next(v.split(";")[0] for k, v in headers if k.lower() == "set-cookie")
    token = re.search(rb'name="csrf_token"[^>]*value="([^"]+)"', page).group(1).decode()
    body = urllib.parse.urlencode(
        {"csrf_token": token, "account": "operator", "password": password}
    )
    status, _, _ = request(
        port,
        "POST",
        "/login",
        {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"},
        body,
    )
    return status, time.perf_counter() - start


# -- the parts ------------------------------------------------------------------------------


def slow_clients(daemon: Daemon, port: int, pid: int, count: int, samples: int, bearer: dict):
    for path, headers, label in (
        ("/login", None, "GET /login"),
        ("/api/state", bearer, "GET /api/state"),
    ):
        record(
            "a",
            "ref",
            f"{label}, nothing else open",
            [timed_get(port, path, headers) for _ in range(samples)],
        )
    before = held(pid)
    socks = []
    start = time.perf_counter()
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(HALF_HEAD)
            socks.append(s)
        opened = time.perf_counter() - start
        for path, headers, label in (
            ("/login", None, "GET /login"),
            ("/api/state", bearer, "GET /api/state"),
        ):
            record(
                "a",
                "ours",
                f"{label}, {count} slow clients open",
                [timed_get(port, path, headers) for _ in range(samples)],
            )
        during = held(pid)
        # Still open (none answered yet): they were held by the loop, not cut early.
        sel = selectors.DefaultSelector()
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        answered = len(sel.select(0))
        sel.close()
    finally:
        for s in socks:
            s.close()
    show("before", before)
    show(f"with {count} slow clients open (opened in {opened:.2f} s)", during)
    say(f"    slow clients answered or cut while the requests ran: {answered} of {count}")


def logins(port: int, pid: int, clients: int, alone: int) -> None:
    record(
        "b",
        "ref",
        "one login (right password), alone",
        [login(port, PASSWORD)[1] for _ in range(alone)],
    )
    statuses: dict[int, int] = {}
    beside: list[float] = []
    stop = threading.Event()

    def page_meanwhile() -> None:
        while not stop.is_set():
            beside.append(timed_get(port, "/login"))
            time.sleep(0.05)

    with Sampler(pid) as sampler, concurrent.futures.ThreadPoolExecutor(clients) as pool:
        watcher = threading.Thread(target=page_meanwhile, daemon=True)
        watcher.start()
        results = list(pool.map(lambda _: login(port, "wrong " + PASSWORD), range(clients)))
        stop.set()
        watcher.join(SECTION_SECONDS)
    for status, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    record("b", "ours", f"{clients} logins (wrong password) at once, each", [t for _, t in results])
    if beside:
        record("b", "ours", "GET /login while they run", beside)
    show(f"peak during {clients} logins", sampler.top)
    say(f"    answers: {', '.join(f'{n}× {s}' for s, n in sorted(statuses.items()))}")


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc.stdout


def pushes(daemon: Daemon, port: int, pid: int, count: int, token: str, tmp: Path) -> None:
    remote = f"http://x:{token}@127.0.0.1:{port}/git/manager/config.git"
    first = tmp / "clone"
    git(tmp, "clone", "-q", remote, str(first))
    bare = tmp / "ref.git"
    git(tmp, "clone", "-q", "--bare", str(first), str(bare))
    clones = []
    for i in range(count):
        work = tmp / f"push-{i}"
        shutil.copytree(first, work, symlinks=True)
        (work / f"load-{i}.md").write_text(f"push {i}\n")
        git(work, "add", "-A")
        git(work, "-c", "user.name=bench", "-c", "user.email=b@x", "commit", "-qm", f"load {i}")
        clones.append(work)

    def push(work: Path, url: str, ref: str) -> float:
        start = time.perf_counter()
        git(work, "push", "-q", url, f"HEAD:{ref}")
        return time.perf_counter() - start

    before = len(approvals(daemon))
    with Sampler(pid) as sampler, concurrent.futures.ThreadPoolExecutor(count) as pool:
        ours = list(pool.map(lambda w: push(w, remote, "refs/for/main"), clones))
    made = len(approvals(daemon)) - before
    if made != count:
        raise SystemExit(f"{count} pushes made {made} proposals")
    record("c", "ours", f"{count} pushes to refs/for/main at once, each", ours)
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        ref = list(
            pool.map(
                lambda iw: push(iw[1], f"file://{bare}", f"refs/heads/b{iw[0]}"), enumerate(clones)
            )
        )
    record("c", "ref", f"{count} git pushes to a bare repo over file:// at once", ref)
    show(f"peak during {count} pushes", sampler.top)
    say(f"    proposals made: {made} of {count}")


def approvals(daemon: Daemon) -> list:
    """The pending approvals, as `hyperhive approvals` lists them (read in this process:
    the tags the pushes wrote, without a CLI start's imports each time)."""
    return engine_pending(Home(daemon.root))


def long_polls(daemon: Daemon, pid: int, count: int, samples: int) -> None:
    host = daemon.root / "run" / "host.sock"

    def ping() -> float:
        start = time.perf_counter()
        hostsock.call(host, {"op": "ping"})
        return time.perf_counter() - start

    record("d", "ref", "host.sock ping, nothing else open", [ping() for _ in range(samples)])
    before = held(pid)
    path = daemon.wait_socket("manager")
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(path))  # blocking: waits while the listen backlog is full
            s.settimeout(10)
            socks.append(s)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused first
                s.sendall(b'{"op": "recv", "wait_seconds": 60}\n')
        # Those over the socket's cap are answered at once; the served ones wait.
        refused, deadline = 0, time.monotonic() + 10
        sel = selectors.DefaultSelector()
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        pending = set(socks)
        while pending and time.monotonic() < deadline:
            ready = sel.select(0.5)
            if not ready:
                break
            for key, _ in ready:
                try:
                    line = key.fileobj.recv(4096)
                except ConnectionResetError:
                    line = b""
                refused += b"connections open" in line
                sel.unregister(key.fileobj)
                pending.discard(key.fileobj)
        sel.close()
        record(
            "d",
            "ours",
            f"host.sock ping, {count} long-polls on an agent socket",
            [ping() for _ in range(samples)],
        )
        during = held(pid)
    finally:
        for s in socks:
            s.close()
    show("before", before)
    show(f"with {count} long-polls asked", during)
    cap = hostsock.AGENT_CONNECTIONS
    say(f"    long-polls served: {len(pending)}, refused at once: {refused} (cap {cap})")


# -- the run ---------------------------------------------------------------------------------


def fd_room(wanted: int) -> int:
    """Raise this process's open-file limit; how many sockets it may open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return max(10, min(wanted, soft - 200))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow", type=int, default=1000, help="slow clients for (a)")
    parser.add_argument("--samples", type=int, default=20, help="requests timed per row")
    parser.add_argument("--logins", type=int, default=16, help="concurrent logins for (b)")
    parser.add_argument("--pushes", type=int, default=8, help="concurrent pushes for (c)")
    parser.add_argument("--polls", type=int, default=1000, help="long-polls for (d)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.slow, args.samples, args.logins, args.pushes, args.polls = 100, 5, 2, 2, 50
    slow, polls = fd_room(args.slow), fd_room(args.polls)
    say(
        f"hyperhive bench/load.py: slow={slow} samples={args.samples} logins={args.logins} "
        f"pushes={args.pushes} polls={polls}"
        + (f" (open-file limit: {args.slow} slow clients asked)" if slow < args.slow else "")
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hyperhive-bench-") as tmp:
        root = Path(tmp)
        daemon = Daemon(root / "hive").start()
        try:
            port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", daemon.log.read_text()).group(1))
            pid = worker_pid(daemon.proc.pid)
            # what `hyperhive operator set-password` and `operator token` do, in this
            # process (the daemon reads them from the home as it would theirs)
            operator.set_password(Home(daemon.root), PASSWORD)
            token = operator.token(Home(daemon.root))
            bearer = {"Authorization": f"Bearer {token}"}
            say(f"  up in {time.perf_counter() - started:.1f} s, worker pid {pid}")
            say(f"(a) {slow} slow clients …")
            slow_clients(daemon, port, pid, slow, args.samples, bearer)
            say(f"(b) {args.logins} logins at once …")
            logins(port, pid, args.logins, 1 if args.quick else 3)
            say(f"(c) {args.pushes} pushes at once …")
            pushes(daemon, port, pid, args.pushes, token, root)
            say(f"(d) {polls} long-polls …")
            long_polls(daemon, pid, polls, args.samples)
            show("at the end", held(pid))
        finally:
            daemon.stop()
    print_rows(
        {
            "a": "(a) requests while slow clients hold connections",
            "b": "(b) logins at once",
            "c": "(c) pushes at once",
            "d": "(d) long-polls on an agent socket",
        }
    )
    note(
        "Before the daemon read requests in gunicorn's loop (hyperhive/daemon/httpworker.py), "
        "64 slow clients held all 64 threads and (a)'s requests waited for them to go away."
    )
    say(f"total wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
