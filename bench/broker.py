"""Benchmark of the broker through a real daemon's agent sockets: our figures beside a
reference measured in the same run, on the same daemon and the same sockets.

(a) send -> recv wake-up latency: a reader blocked in `{"op": "recv", "wait_seconds": 60}`
    on agent `bench`'s socket, a writer sending to it from the manager's socket; latency
    is the time from just before the send to the reader holding the message. Reference:
    a 5-second sleep-poll loop (how the system we replace delivered): the reader calls
    `recv` without waiting, sleeps 5 s, and again; messages are sent at random moments.
(b) messages per second through the socket: one persistent connection sending N
    messages, one request each, then `recv` draining them; beside a `ping` round trip on
    host.sock (the socket and JSON floor, no database) and the same INSERTs straight into
    a scratch sqlite file (the storage floor, no socket).

The daemon is `hyperhive up --port 0` in a temporary home, as a real process. Nothing here
asserts a speed; the script only checks that every message arrived once, intact. Run:
.venv/bin/python bench/broker.py [--quick] (see bench/README.md).
"""

import argparse
import contextlib
import json
import os
import queue
import random
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

from transitions import HYPERHIVE, ROWS, fmt, note, print_rows, record, say

from hyperhive.agents import create_agent, init_hive
from hyperhive.broker.db import MIGRATIONS, db_path
from hyperhive.broker.messages import Broker
from hyperhive.daemon import hostsock
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime

READER = "bench"
WRITER = "manager"


# -- the daemon and its sockets -------------------------------------------------------------


class Daemon:
    """`hyperhive up --port 0` on a home, as its own process (its own session, so a
    failed run can take down gunicorn's master and worker together)."""

    def __init__(self, root: Path):
        self.root = root
        self.log = root.parent / "daemon.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "Daemon":
        """Start it and wait until it listens."""
        with self.log.open("a") as out:
            offset = out.tell()
            self.proc = subprocess.Popen(
                [HYPERHIVE, "--home", str(self.root), "up", "--port", "0"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "HYPERHIVE_HOME": str(self.root)},
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            text = self.log.read_text()[offset:]
            if re.search(r"http://127\.0\.0\.1:\d+/", text):
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise SystemExit(f"`hyperhive up` did not start:\n{text}")
            time.sleep(0.05)

    def socket(self, name: str) -> Path:
        return Home(self.root).agent_socket(name)

    def wait_socket(self, name: str, timeout: float = 30.0) -> Path:
        path = self.socket(name)
        deadline = time.monotonic() + timeout
        while True:
            try:
                hostsock.call(path, {"op": "whoami"}, timeout=5)
                return path
            except (hostsock.DaemonUnavailable, OSError):
                if time.monotonic() > deadline:
                    log = self.log.read_text()[-4000:]
                    raise SystemExit(f"no daemon answers on {path}; its log ends:\n{log}") from None
                time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the daemon's processes so far (its session)."""
        total = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == self.proc.pid:  # its session: started as the leader
                    total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def settle(self, timeout: float = 180.0, busy: float = 0.05) -> float:
        """Wait until the daemon uses under `busy` of a core for two seconds running: its
        start-up work (a minute at 25-40% of a core with 100 agents on a loaded machine)
        is not what the rows measure. The seconds waited."""
        start = time.monotonic()
        quiet, before = 0, self.cpu_seconds()
        while quiet < 2 and time.monotonic() - start < timeout:
            time.sleep(1.0)
            now = self.cpu_seconds()
            quiet = quiet + 1 if now - before < busy else 0
            before = now
        return time.monotonic() - start

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class Conn:
    """One persistent connection to a daemon socket: a JSON line out, a JSON line back."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rwb")

    def write(self, request: dict) -> None:
        self.file.write(json.dumps(request).encode() + b"\n")
        self.file.flush()

    def read(self) -> dict:
        line = self.file.readline()
        if not line:
            raise SystemExit("the daemon closed a connection")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise SystemExit(f"the daemon refused a request: {reply.get('error')}")
        return reply

    def call(self, request: dict) -> dict:
        self.write(request)
        return self.read()

    def close(self) -> None:
        with contextlib.suppress(OSError):  # close flushes; a write cut by shutdown() cannot
            self.file.close()
        self.sock.close()


def send(conn: Conn, body: str) -> None:
    conn.call({"op": "send", "to": READER, "body": body})


def scratch_db(path: Path) -> sqlite3.Connection:
    """The references' sqlite file: the broker's messages table, WAL, autocommit."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    for sql in MIGRATIONS[0]:
        db.execute(sql)
    return db


def drain(conn: Conn) -> list[dict]:
    """Whatever is left in the reader's inbox (between rows, so no row sees another's)."""
    return conn.call({"op": "recv"})["messages"]


# -- (a) wake-up latency ----------------------------------------------------------------------


def long_poll_latency(daemon: Daemon, samples: int, warmup: int = 5) -> None:
    """Each sample: the reader thread writes `recv wait_seconds=60` and says so; 20 ms
    later (so the daemon has it waiting) the writer sends; the reader notes the moment
    its reply line is in. The reader blocks in readline, so that moment is not delayed
    by the writer's own round trip."""
    reader, writer = Conn(daemon.socket(READER)), Conn(daemon.socket(WRITER))
    armed, go, done = threading.Event(), threading.Event(), threading.Event()
    got: queue.Queue = queue.Queue()

    def read_loop() -> None:
        while True:
            go.wait()
            go.clear()
            if done.is_set():
                return
            reader.write({"op": "recv", "wait_seconds": 60})
            armed.set()
            reply = reader.read()
            got.put((time.perf_counter(), reply["messages"]))

    thread = threading.Thread(target=read_loop, daemon=True)
    thread.start()
    latency, send_rtt = [], []
    try:
        for i in range(warmup + samples):
            armed.clear()
            go.set()
            armed.wait()
            time.sleep(0.02)
            body = f"latency {i}"
            t0 = time.perf_counter()
            send(writer, body)
            t_sent = time.perf_counter()
            t_have, messages = got.get(timeout=60)
            if [m["body"] for m in messages] != [body]:
                raise SystemExit(f"sample {i}: the reader got {messages!r}, not {body!r}")
            if i >= warmup:
                latency.append(t_have - t0)
                send_rtt.append(t_sent - t0)
    finally:
        done.set()
        go.set()
        reader.close()
        writer.close()
    record("a", "ours", "long-poll recv(wait_seconds=60), woken by a send", latency)
    record("a", "", "  the writer's send round trip (socket + INSERT + reply)", send_rtt)


def in_process_latency(root: Path, samples: int) -> None:
    """The same wake-up inside one process: Broker.recv in a thread, Broker.send here, on
    a scratch home (no socket, no JSON; the daemon's own share of the latency)."""
    home = Home(root)
    applied = root / "applied" / f"{READER}.git"  # what Home.agent_names() looks for
    applied.mkdir(parents=True)
    (applied / "HEAD").write_text("ref: refs/heads/main\n")
    broker = Broker(home)
    got: queue.Queue = queue.Queue()
    waiting = threading.Event()

    def wait_once() -> None:
        waiting.set()
        messages = broker.recv(READER, 60)
        got.put((time.perf_counter(), messages))

    out = []
    for i in range(samples + 5):
        waiting.clear()
        t = threading.Thread(target=wait_once)
        t.start()
        waiting.wait()
        time.sleep(0.02)
        t0 = time.perf_counter()
        broker.send(WRITER, READER, f"in-process {i}")
        t_have, messages = got.get(timeout=60)
        t.join()
        if len(messages) != 1:
            raise SystemExit(f"in-process sample {i}: got {messages!r}")
        if i >= 5:
            out.append(t_have - t0)
    record("a", "", "  in-process Broker.recv woken by Broker.send (no socket)", out)


def sleep_poll_latency(daemon: Daemon, samples: int, interval: float, seed: int) -> None:
    """The reference: the reader calls `recv` (no wait) every `interval` seconds; the
    writer sends `samples` messages at random moments over samples/2 intervals, so each
    message waits for the next poll: uniform in [0, interval], measured, not assumed."""
    reader, writer = Conn(daemon.socket(READER)), Conn(daemon.socket(WRITER))
    rng = random.Random(seed)
    window = samples * interval / 2
    offsets = sorted(rng.uniform(0, window) for _ in range(samples))
    have: dict[str, float] = {}
    polls = [0]

    def poll_loop() -> None:
        while len(have) < samples:
            messages = reader.call({"op": "recv"})["messages"]
            now = time.perf_counter()
            polls[0] += 1
            for m in messages:
                have[m["body"]] = now
            if len(have) < samples:
                time.sleep(interval)

    sent: dict[str, float] = {}
    start = time.perf_counter()
    thread = threading.Thread(target=poll_loop, daemon=True)
    thread.start()
    try:
        for i, offset in enumerate(offsets):
            time.sleep(max(0.0, start + offset - time.perf_counter()))
            body = f"poll {i}"
            sent[body] = time.perf_counter()
            send(writer, body)
        thread.join(timeout=window + 4 * interval + 30)
        if thread.is_alive() or set(have) != set(sent):
            raise SystemExit(f"the poller got {sorted(have)}, the writer sent {sorted(sent)}")
    finally:
        reader.close()
        writer.close()
    latency = [have[b] - sent[b] for b in sent]
    record("a", "ref", f"sleep-poll: recv() every {interval:g} s (the system we replace)", latency)
    say(f"  sleep-poll: {polls[0]} polls in {time.perf_counter() - start:.1f} s")


# -- (b) throughput ---------------------------------------------------------------------------


def throughput(daemon: Daemon, count: int, tmp: Path, depth: int) -> dict[str, float]:
    writer, reader = Conn(daemon.socket(WRITER)), Conn(daemon.socket(READER))
    rates = {}
    try:
        for i in range(20):  # warm-up, not counted
            send(writer, f"warm-up {i}")
        drain(reader)
        per_send = []
        cpu = daemon.cpu_seconds()
        start = time.perf_counter()
        for i in range(count):
            t0 = time.perf_counter()
            send(writer, f"message {i}")
            per_send.append(time.perf_counter() - t0)
        rates["send"] = count / (time.perf_counter() - start)
        rates["cpu"] = (daemon.cpu_seconds() - cpu) / count
        record("b", "ours", f"send on one connection, {count} messages (per message)", per_send)

        received: list[dict] = []
        calls = 0
        start = time.perf_counter()
        while len(received) < count:
            received += drain(reader)
            calls += 1
        drain_time = time.perf_counter() - start
        rates["drain"] = count / drain_time
        rates["drain_calls"] = calls
        if [m["body"] for m in received] != [f"message {i}" for i in range(count)]:
            raise SystemExit("recv did not return every message once, in order")
        record("b", "ours", f"recv draining the {count} messages ({calls} call(s))", [drain_time])

        # Pipelined: `depth` sends written before their replies are read (the protocol
        # answers each line in order), the same messages on the same connection.
        start = time.perf_counter()
        for i in range(0, count, depth):
            burst = range(i, min(count, i + depth))
            for n in burst:
                writer.write({"op": "send", "to": READER, "body": f"piped {n}"})
            for _ in burst:
                writer.read()
        elapsed = time.perf_counter() - start
        rates["pipelined"] = count / elapsed
        record("b", "ours", f"send pipelined {depth} deep on one connection", [elapsed / count])
        piped: list[dict] = []
        while len(piped) < count and (batch := drain(reader)):
            piped += batch
        if [m["body"] for m in piped] != [f"piped {i}" for i in range(count)]:
            raise SystemExit("pipelined sends did not all arrive once, in order")

        # A connection per request: what `hostsock.call` (and a one-shot client) pays.
        one_shot = []
        n = max(10, count // 10)
        for i in range(n):
            t0 = time.perf_counter()
            hostsock.call(daemon.socket(WRITER), {"op": "send", "to": READER, "body": f"c {i}"})
            one_shot.append(time.perf_counter() - t0)
        rates["one_shot"] = n / sum(one_shot)
        record("b", "", "  send, a new connection per message (hostsock.call)", one_shot)
        got = 0
        while got < n and (batch := drain(reader)):  # a recv returns MAX_BATCH at most
            got += len(batch)
        if got != n:
            raise SystemExit("one-shot sends went missing")
    finally:
        writer.close()
        reader.close()

    # References: the socket floor and the storage floor.
    host = Conn(daemon.root / "run" / "host.sock")
    try:
        for _ in range(20):
            host.call({"op": "ping"})
        pings = []
        for _ in range(count):
            t0 = time.perf_counter()
            host.call({"op": "ping"})
            pings.append(time.perf_counter() - t0)
    finally:
        host.close()
    rates["ping"] = count / sum(pings)
    record("b", "ref", "ping round trip on host.sock, one connection (no database)", pings)

    db = scratch_db(tmp / "scratch.db")
    try:
        inserts = []
        for i in range(count):
            t0 = time.perf_counter()
            db.execute(
                "INSERT INTO messages (sender, recipient, body, created_at) VALUES (?, ?, ?, ?)",
                (WRITER, READER, f"message {i}", time.time()),
            )
            inserts.append(time.perf_counter() - t0)
    finally:
        db.close()
    rates["insert"] = count / sum(inserts)
    record("b", "ref", "sqlite3 INSERT, autocommit, WAL, in-process (no socket)", inserts)
    return rates


# -- (c) wake-ups with many readers waiting, (d) sends as the history grows -------------------


def readers(count: int) -> list[str]:
    return [f"w{i:03d}" for i in range(count)]


class Waiter:
    """One reader: a thread that keeps a `recv wait_seconds=60` open on its own socket
    and puts `(time, name, messages)` on `got` for each reply."""

    def __init__(self, daemon: Daemon, name: str, got: queue.Queue):
        self.name, self.got = name, got
        self.conn = Conn(daemon.socket(name))
        self.armed = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        try:
            while True:
                self.conn.write({"op": "recv", "wait_seconds": 60})
                self.armed.set()
                messages = self.conn.read()["messages"]
                self.got.put((time.perf_counter(), self.name, messages))
        except (SystemExit, OSError, ValueError):
            return  # closed at the end

    def close(self) -> None:
        self.conn.sock.shutdown(socket.SHUT_RDWR)  # its blocked read ends first
        self.thread.join(10)
        self.conn.close()


def many_waiting(daemon: Daemon, counts: list[int], samples: int, seed: int) -> None:
    """For each count K: K readers block in `recv wait_seconds=60`, each on its own agent
    socket; the writer sends to one of them at random, and the time runs from just before
    the send to that reader holding it. A send must wake its recipient only, so the
    latency should not grow with K."""
    rng = random.Random(seed)
    for k in counts:
        got: queue.Queue = queue.Queue()
        waiters = {n: Waiter(daemon, n, got) for n in readers(k)}
        writer = Conn(daemon.socket(WRITER))
        latency = []
        try:
            for i in range(samples + 5):
                to = rng.choice(sorted(waiters))
                waiters[to].armed.wait(30)
                waiters[to].armed.clear()
                time.sleep(0.01)  # its recv is waiting in the daemon
                t0 = time.perf_counter()
                writer.call({"op": "send", "to": to, "body": f"many {i}"})
                t_have, name, messages = got.get(timeout=60)
                if name != to or [m["body"] for m in messages] != [f"many {i}"]:
                    raise SystemExit(f"{to} should have had 'many {i}': {name} got {messages}")
                if i >= 5:
                    latency.append(t_have - t0)
        finally:
            writer.close()
            for w in waiters.values():
                w.close()
        record("c", "ours", f"send -> recv wake-up, {k} readers waiting", latency)


def prefill(db: Path, total: int) -> None:
    """Delivered messages up to `total` rows, in one transaction (the history)."""
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        have = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO messages (sender, recipient, body, created_at, delivered_at) "
            "VALUES (?, ?, ?, ?, ?)",
            ((WRITER, READER, f"old {i}", time.time(), time.time()) for i in range(have, total)),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def sends_by_history(daemon: Daemon, sizes: list[int], count: int, tmp: Path) -> None:
    """`count` sends on one connection with the messages table holding each size of
    history, beside the same INSERTs into a scratch sqlite file holding the same history."""
    scratch = tmp / "history.db"
    scratch_db(scratch).close()
    writer, reader = Conn(daemon.socket(WRITER)), Conn(daemon.socket(READER))
    try:
        for size in sizes:
            prefill(db_path(Home(daemon.root)), size)
            per_send = []
            for i in range(count):
                t0 = time.perf_counter()
                send(writer, f"history {size} {i}")
                per_send.append(time.perf_counter() - t0)
            while len(drain(reader)) == 100:
                pass
            record("d", "ours", f"send on one connection, {size:,} messages stored", per_send)
            prefill(scratch, size)
            db = sqlite3.connect(scratch, isolation_level=None)
            inserts = []
            try:
                for i in range(count):
                    t0 = time.perf_counter()
                    db.execute(
                        "INSERT INTO messages (sender, recipient, body, created_at) "
                        "VALUES (?, ?, ?, ?)",
                        (WRITER, READER, f"history {size} {i}", time.time()),
                    )
                    inserts.append(time.perf_counter() - t0)
            finally:
                db.close()
            record("d", "ref", f"sqlite3 INSERT, {size:,} messages stored", inserts)
    finally:
        writer.close()
        reader.close()


# -- (e) many senders at once ------------------------------------------------------------------


def _together(workers: list) -> float:
    """Run each of `workers` (callables) in its own thread, started together; the seconds
    from the start to the last one's end."""
    start, errors = threading.Barrier(len(workers) + 1), []

    def run(work) -> None:
        start.wait()
        try:
            work()
        except BaseException as e:  # a failed sender fails the run, not silently the rate
            errors.append(e)

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"a sender failed: {errors[0]!r}")
    return elapsed


def _sends(conn: Conn, prefix: str, count: int) -> None:
    for n in range(count):
        send(conn, f"{prefix} {n}")


def _inserts(scratch: Path, prefix: str, count: int) -> None:
    db = sqlite3.connect(scratch, timeout=60, isolation_level=None)
    try:
        for n in range(count):
            db.execute(
                "INSERT INTO messages (sender, recipient, body, created_at) VALUES (?, ?, ?, ?)",
                (WRITER, READER, f"{prefix} {n}", time.time()),
            )
    finally:
        db.close()


def scratch_broker(root: Path) -> Broker:
    """A Broker on a scratch home where `READER` is an agent (no daemon, no socket)."""
    applied = root / "applied" / f"{READER}.git"  # what Home.is_agent looks for
    applied.mkdir(parents=True)
    (applied / "HEAD").write_text("ref: refs/heads/main\n")
    return Broker(Home(root))


def in_process_sends(broker: Broker, counts: list[int], total: int) -> dict[int, int]:
    """K threads calling Broker.send at once, `total` messages between them: the broker's
    own share (no socket), and how many commits carried them (broker/group.py)."""
    commits = {}
    group = getattr(broker, "_sends", None)  # None: a broker from before group commit
    for k in counts:
        each = max(1, total // k)
        before = group.groups if group else 0

        def sends(i: int, each: int = each) -> None:
            for n in range(each):
                broker.send(WRITER, READER, f"in-process {i} {n}")

        elapsed = _together([partial(sends, i) for i in range(k)])
        commits[k] = group.groups - before if group else k * each  # one each, then
        got = 0
        while batch := broker.recv(READER):
            got += len(batch)
        if got != k * each:
            raise SystemExit(f"in-process, {k} threads: {got} of {k * each} messages arrived")
        record(
            "e",
            "",
            f"  in-process Broker.send, {k} thread(s) ({commits[k]} commits)",
            [elapsed / (k * each)],
        )
    return commits


def concurrent_sends(daemon: Daemon, counts: list[int], total: int, tmp: Path) -> dict:
    """For each count K: K agents send `total` messages between them at once, each from
    its own socket, one request at a time (K = 1 is one connection alone); beside it, K
    threads doing the same INSERTs into a scratch sqlite file, each on its own connection
    (autocommit, WAL, the same `synchronous = FULL`). Then 8 connections on the one
    manager socket, and as many INSERT threads. Messages/second, the whole run."""
    rates: dict[str, tuple[float, float]] = {}
    scratch = tmp / "concurrent.db"
    scratch_db(scratch).close()
    reader = Conn(daemon.socket(READER))
    runs = [(f"{k} agents, a socket each", [daemon.socket(n) for n in readers(k)]) for k in counts]
    runs.append(("8 connections on one socket", [daemon.socket(WRITER)] * 8))
    try:
        for label, sockets in runs:
            k = len(sockets)
            each = max(1, total // k)
            conns = [Conn(path) for path in sockets]
            try:
                elapsed = _together(
                    [partial(_sends, c, f"{label} {i}", each) for i, c in enumerate(conns)]
                )
            finally:
                for c in conns:
                    c.close()
            got = []
            while len(batch := drain(reader)):
                got += batch
            if len(got) != k * each:
                raise SystemExit(f"{label}: {len(got)} of {k * each} messages arrived")
            record("e", "ours", f"send, {label} ({k * each} messages)", [elapsed / (k * each)])
            ref = _together([partial(_inserts, scratch, f"{label} {i}", each) for i in range(k)])
            record(
                "e", "ref", f"sqlite3 INSERT, {k} thread(s), a connection each", [ref / (k * each)]
            )
            rates[label] = (k * each / elapsed, k * each / ref)
    finally:
        reader.close()
    in_process_sends(scratch_broker(tmp / "scratch-concurrent"), counts, total)
    return rates


# -- report -----------------------------------------------------------------------------------


def percentile(samples: list[float], p: float) -> float:
    """The median for p = 50 (as in the table above), else the nearest-rank percentile."""
    if p == 50:
        return statistics.median(samples)
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def table(args: argparse.Namespace, rates: dict[str, float], together: dict) -> None:
    print_rows(
        {
            "a": "(a) send -> recv wake-up latency, agent socket to agent socket",
            "b": "(b) throughput through the socket (time per message)",
            "c": "(c) wake-up latency with many readers waiting, each on its own socket",
            "d": "(d) send as the history grows (time per message)",
            "e": "(e) many senders at once (the whole run / messages: time per message)",
        }
    )
    a_rows = [r for r in ROWS if r.section in ("a", "c")]
    width = max(len(r.label) for r in a_rows) + 7
    say(f"\n{'(a, c) percentiles':<{width}} {'n':>4} {'p50':>11} {'p99':>11} {'max':>11}")
    for r in a_rows:
        s = r.samples
        say(
            f"  {r.who:<4} {r.label:<{width - 7}} {len(s):>4} "
            f"{fmt(percentile(s, 50))} {fmt(percentile(s, 99))} {fmt(max(s))}"
        )
    ours = next(r for r in a_rows if r.who == "ours" and r.section == "a")
    ref = next(r for r in a_rows if r.who == "ref" and r.section == "a")
    ratio = statistics.median(ref.samples) / statistics.median(ours.samples)
    say(f"\nratio of medians, sleep-poll / long-poll: {ratio:,.0f}x")
    say(
        f"messages/second: send {rates['send']:,.0f}/s on one connection "
        f"(the daemon's CPU {rates['cpu'] * 1e6:,.0f} us a send), "
        f"{rates['pipelined']:,.0f}/s pipelined {args.pipeline} deep, "
        f"{rates['one_shot']:,.0f}/s a connection each; recv drained {rates['drain']:,.0f}/s "
        f"({rates['drain_calls']:.0f} call(s)); ref: ping {rates['ping']:,.0f}/s, "
        f"sqlite INSERT {rates['insert']:,.0f}/s"
    )
    d_rows = [r for r in ROWS if r.section == "d"]
    say(
        "(d) sends/second by history: "
        + ", ".join(
            f"{r.who} {len(r.samples) / sum(r.samples):,.0f}/s ({r.label.split(', ')[1]})"
            for r in d_rows
        )
    )
    say(
        "(e) sends/second, many senders at once: "
        + "; ".join(
            f"{label}: ours {o:,.0f}/s, ref {r:,.0f}/s" for label, (o, r) in together.items()
        )
    )
    say("")
    quick = " (--quick: shortened from 5 s)" if args.quick else ""
    note(
        f"(a) ours: {args.samples} samples after 5 warm-ups; each sample the reader's "
        "`recv wait_seconds=60` is written 20 ms before the send, and the time runs from "
        "just before the send to the reader's reply line being read. ref: the reader polls "
        f"`recv` (no wait) every {args.poll_interval:g} s{quick}; {args.poll_samples} "
        "messages sent at random moments over "
        f"{args.poll_samples * args.poll_interval / 2:g} s, so each waits for the next poll "
        f"(expected uniform in [0, {args.poll_interval:g} s], median "
        f"{args.poll_interval / 2:g} s). Both through the same daemon and sockets."
    )
    note(
        f"(b) ours: {args.messages} sends from the manager's socket to `{READER}`, one request "
        "at a time on one persistent connection, then `recv` (no wait) on the reader's socket "
        "until all were returned (checked: each once, in order); the daemon's CPU a send is "
        "its processes' user + system time over that run. Then the same sends pipelined "
        f"(--pipeline {args.pipeline}: that many written before their replies are read; "
        "those already there share a commit, each answered once stored); the indented row "
        "opens a new connection per send. "
        "ref: the `ping` op on host.sock (socket + JSON, no database) "
        "and the same INSERT into a scratch sqlite file in this process (no socket)."
    )
    note(
        f"(c) {args.waiting_samples} samples per row after 5 warm-ups: every reader holds a "
        "`recv wait_seconds=60` on its own agent socket; the writer sends to one at random "
        "(10 ms after that reader re-armed) and the time runs to that reader's reply line."
    )
    note(
        f"(d) ours: {args.history_sends} sends on one connection after the messages table was "
        "filled (delivered rows, one transaction) to each size; ref: the same INSERTs into "
        "a scratch sqlite file (WAL, autocommit) filled to the same size."
    )
    note(
        f"(e) ours: {args.concurrent_messages} messages sent between K agents at once, each on "
        "its own socket and one connection, one request at a time (then 8 connections on the "
        "manager's one socket); the time is the whole run's, from a barrier to the last reply, "
        "and every message is checked to arrive. ref: K threads doing the same INSERTs into "
        "a scratch sqlite file (WAL, autocommit, synchronous = FULL, as ours), a connection "
        "each. Both commit every message before it is acknowledged; ours groups the commits "
        "of sends that meet (broker/group.py)."
    )


def _filesystem(path: str) -> str:
    """The type of the filesystem `path` is on, from /proc/mounts (longest mount prefix)."""
    best, kind = "", "unknown filesystem"
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            _, point, fstype, *_ = line.split()
            if os.path.realpath(path).startswith(point) and len(point) > len(best):
                best, kind = point, fstype
    return kind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=300, help="long-poll latency samples")
    parser.add_argument("--poll-samples", type=int, default=10, help="sleep-poll samples")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="sleep-poll period, s")
    parser.add_argument("--messages", type=int, default=1000, help="messages for (b)")
    parser.add_argument(
        "--pipeline", type=int, default=10, help="(b) sends written before reading replies"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the random send times")
    parser.add_argument(
        "--waiting", default="2,20,100", help="(c) readers waiting at once, comma-separated"
    )
    parser.add_argument("--waiting-samples", type=int, default=200, help="(c) samples per row")
    parser.add_argument(
        "--history", default="1000,10000,50000", help="(d) messages stored, comma-separated"
    )
    parser.add_argument("--history-sends", type=int, default=1000, help="(d) sends per size")
    parser.add_argument(
        "--concurrent", default="1,10,50", help="(e) agents sending at once, comma-separated"
    )
    parser.add_argument(
        "--concurrent-messages", type=int, default=2000, help="(e) messages per row"
    )
    parser.add_argument(
        "--dir",
        help="where the temporary home and the scratch files go (default: the system's temp "
        "dir); /dev/shm takes the disk's fsync out of ours and the reference alike",
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="--quick made smaller still: every section and row, for tests/test_bench.py",
    )
    args = parser.parse_args(argv)
    args.quick = args.quick or args.smoke
    if args.quick:
        args.samples, args.poll_samples, args.poll_interval, args.messages = 30, 6, 0.5, 200
        args.waiting, args.waiting_samples = "2,4,10", 30
        args.history, args.history_sends = "100,1000,5000", 100
        args.concurrent, args.concurrent_messages = "1,4,10", 100
    if args.smoke:  # the same rows (10 readers, 5,000 stored, 1 and 10 senders), fewer samples
        args.samples, args.poll_samples, args.messages, args.waiting_samples = 10, 3, 50, 10
        args.waiting, args.concurrent = "2,10", "1,10"
        args.history_sends, args.concurrent_messages = 20, 20
    waiting = [int(k) for k in args.waiting.split(",")]
    history = [int(k) for k in args.history.split(",")]
    concurrent = [int(k) for k in args.concurrent.split(",")]
    agents = max(*waiting, *concurrent)
    say(
        f"hyperhive bench/broker.py: samples={args.samples} poll-samples={args.poll_samples} "
        f"poll-interval={args.poll_interval:g}s messages={args.messages}"
        + (" (--quick: poll interval shortened to 0.5 s)" if args.quick else "")
    )
    started = time.perf_counter()
    if args.dir:
        say(f"in {args.dir} ({_filesystem(args.dir)})")
    with tempfile.TemporaryDirectory(prefix="hyperhive-bench-", dir=args.dir) as tmp:
        root = Path(tmp)
        home = Home(root / "hive")
        runtime = LocalRuntime(home)
        init_hive(home, runtime, "operator")
        for name in [READER, *readers(agents)]:
            create_agent(home, name, runtime, "operator")
        say(f"starting `hyperhive up --port 0` with {agents + 2} agents …")
        daemon = Daemon(home.root).start()
        try:
            for name in [WRITER, READER, *readers(agents)]:
                daemon.wait_socket(name)
            say(f"  up in {time.perf_counter() - started:.1f} s")
            if not args.quick:  # a smoke run's 10 agents start in a moment
                say(f"  settled (under 5% of a core for 2 s) after {daemon.settle():.0f} s more")
            say(f"(a) {args.samples} long-poll wake-ups …")
            long_poll_latency(daemon, args.samples)
            in_process_latency(root / "scratch-home", min(args.samples, 100))
            say(f"(a) {args.poll_samples} sleep-poll deliveries, every {args.poll_interval:g} s …")
            sleep_poll_latency(daemon, args.poll_samples, args.poll_interval, args.seed)
            say(f"(b) {args.messages} messages through the socket …")
            rates = throughput(daemon, args.messages, root, args.pipeline)
            say(f"(c) wake-ups with {args.waiting} readers waiting …")
            many_waiting(daemon, waiting, args.waiting_samples, args.seed)
            say(f"(d) sends with {args.history} messages stored …")
            sends_by_history(daemon, history, args.history_sends, root)
            say(f"(e) {args.concurrent_messages} sends from {args.concurrent} agents at once …")
            together = concurrent_sends(daemon, concurrent, args.concurrent_messages, root)
        finally:
            daemon.stop()
    table(args, rates, together)
    say(f"total wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
