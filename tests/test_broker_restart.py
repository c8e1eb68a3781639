"""10 concurrent senders x 100 messages through a real daemon's agent sockets, a reader
receiving at the same time, and the daemon restarted (SIGTERM, wait, start again on the
same home) in the middle: every message delivered exactly once, each sender's order kept.

The retry rule, which the senders and the reader follow:

- The connection could not be made (no socket file, connection refused): nothing was
  written, so nothing was done. Retry the same request.
- The request was written but no complete reply line came back (EOF or reset): the daemon
  may or may not have carried it out. Today a daemon's handler never closes a connection
  on its own, so this means the daemon process died (or is stopping). The sender waits
  until a daemon answers on its socket again: the test starts the next daemon only after
  the previous process exited, so by then nothing of the old one is in flight and its
  INSERT either was committed or never will be. Then it looks for the message in hive.db
  (every body is unique: sender and sequence number): there, it was stored and is not
  sent again; absent, it is sent again, before the next one, so the order is kept. (An
  idempotency key on `send` would let a client do this without reading hive.db.)
- A reader's `recv` that got no reply is simply asked again. Whatever the lost call had
  taken would be lost (marked delivered, never handed over): the checks below catch that,
  since the broker promises it cannot happen.
- A socket timeout is not a restart: it fails the test.
"""

import contextlib
import json
import signal
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from support.daemon import Daemon
from support.wait import wait_for

from hyperhive.agents import create_agent, init_hive
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime

SENDERS = [f"s{i}" for i in range(10)]
READER = "reader"
PER_SENDER = 100
TOTAL = len(SENDERS) * PER_SENDER
RESTART_AFTER = TOTAL // 3  # messages stored before the SIGTERM
# From the SIGTERM until the next daemon answers, a sender sends one message every
# STOPPING_PACE seconds and none past STOPPING_CAP: a stopping daemon keeps serving the
# connections it has until its process exits (seconds), and the senders must neither
# finish before the restart nor fall silent at the moment the process dies.
STOPPING_PACE = 0.1
STOPPING_CAP = 90


class NotSent(Exception):
    """The connection was refused or the socket file missing: nothing was written."""


class NoReply(Exception):
    """The request was written but no whole reply line came: it may have been done."""


class Client:
    """A persistent connection to one daemon socket, reconnecting after a failure."""

    def __init__(self, path: Path):
        self.path = path
        self.sock: socket.socket | None = None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            with contextlib.suppress(OSError):  # it flushes what a broken pipe left behind
                self.file.close()
            self.sock = None

    def request(self, request: dict) -> dict:
        if self.sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(30)
            try:
                s.connect(str(self.path))
            except (FileNotFoundError, ConnectionRefusedError) as e:
                s.close()
                raise NotSent(str(e)) from e
            self.sock, self.file = s, s.makefile("rwb")
        try:
            self.file.write(json.dumps(request).encode() + b"\n")
            self.file.flush()
            line = self.file.readline()
        except TimeoutError:
            self.close()
            raise AssertionError(f"no reply to {request} within 30 s") from None
        except OSError as e:  # EPIPE, ECONNRESET: the daemon went away
            self.close()
            raise NoReply(str(e)) from e
        if not line.endswith(b"\n"):  # EOF, or a reply cut short
            self.close()
            raise NoReply(f"connection closed after {len(line)} bytes")
        reply = json.loads(line)
        assert reply["ok"], f"the daemon refused {request}: {reply}"
        return reply


def sock(root: Path, name: str) -> Path:
    return Home(root).agent_socket(name)


def stored(root: Path, sender: str, body: str) -> int:
    """How many rows hive.db holds for this message (read-only, beside the daemon)."""
    with sqlite3.connect(f"file:{root / 'hive.db'}?mode=ro", uri=True, timeout=30) as db:
        query = "SELECT count(*) FROM messages WHERE sender = ? AND body = ?"
        return db.execute(query, (sender, body)).fetchone()[0]


def wait_answering(root: Path, name: str, timeout: float = 30.0) -> None:
    def answers() -> bool:
        client = Client(sock(root, name))
        try:
            return client.request({"op": "whoami"})["name"] == name
        except (NotSent, NoReply):
            return False
        finally:
            client.close()

    wait_for(answers, timeout=timeout, what=f"a daemon answering on {name}'s socket")


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "hive"
    home = Home(root)
    runtime = LocalRuntime(home)
    init_hive(home, runtime, "operator")
    for name in [*SENDERS, READER]:
        create_agent(home, name, runtime, "operator")
    return root


def test_messages_survive_a_restart_exactly_once_in_order(root):
    daemon = Daemon(root).start()
    phase = [0]  # 0: the first daemon, 1: stopping or down, 2: the restarted daemon
    sent: dict[str, list[tuple[int, int]]] = {n: [] for n in SENDERS}  # (seq, phase)
    retries = {"not sent": 0, "no reply": 0, "found stored": 0, "sent again": 0}
    received: list[dict] = []
    reader_retries = [0]
    stopping = [0.0, 0.0]  # time.time() of the SIGTERM and of seeing the process gone
    senders_done = threading.Event()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def count(key: str) -> None:
        with lock:
            retries[key] += 1

    def sender(name: str) -> None:
        client = Client(sock(root, name))
        seq = 0
        while seq < PER_SENDER:
            if phase[0] == 1:
                time.sleep(STOPPING_PACE)
                if seq >= STOPPING_CAP:
                    continue
            body = f"{name} {seq:03d}"
            try:
                client.request({"op": "send", "to": READER, "body": body})
            except NotSent:
                count("not sent")
                time.sleep(0.02)
                continue
            except NoReply:
                count("no reply")
                wait_answering(root, name)  # the daemon that read the request is gone
                if not stored(root, name, body):
                    count("sent again")
                    continue
                count("found stored")
            sent[name].append((seq, phase[0]))
            seq += 1
        client.close()

    def reader() -> None:
        client = Client(sock(root, READER))
        deadline = time.monotonic() + 40
        last = time.monotonic()
        while len(received) < TOTAL and time.monotonic() < deadline:
            if senders_done.is_set() and time.monotonic() - last > 5:
                break  # all sent, and nothing more arrives: the checks will say what is missing
            try:
                reply = client.request({"op": "recv", "wait_seconds": 1})
            except (NotSent, NoReply):
                reader_retries[0] += 1
                time.sleep(0.02)
                continue
            if reply["messages"]:
                received.extend(reply["messages"])
                last = time.monotonic()
        client.close()

    def guarded(fn, *args):
        def run():
            try:
                fn(*args)
            except BaseException as e:
                errors.append(e)

        return threading.Thread(target=run, daemon=True)

    threads = [guarded(reader)] + [guarded(sender, n) for n in SENDERS]
    try:
        for t in threads:
            t.start()
        wait_for(
            lambda: sum(map(len, sent.values())) >= RESTART_AFTER or errors,
            what=f"{RESTART_AFTER} messages sent",
        )
        phase[0] = 1
        stopping[0] = time.time()
        assert daemon.stop(signal.SIGTERM) == 0
        stopping[1] = time.time()
        # senders and the reader meet a missing daemon (not a guessed pause: until they have)
        wait_for(
            lambda: (retries["not sent"] + retries["no reply"] and reader_retries[0]) or errors,
            what="the clients to meet the stopped daemon",
        )
        daemon.start()
        wait_answering(root, READER)
        phase[0] = 2
        for t in threads[1:]:
            t.join(timeout=40)
        senders_done.set()
        threads[0].join(timeout=40)
        assert not errors, errors
        assert not any(t.is_alive() for t in threads), "a sender or the reader is stuck"
    finally:
        if daemon.proc.poll() is None:
            daemon.stop()

    # The restart really came in the middle, and the clients really met it.
    phases = [p for seqs in sent.values() for _, p in seqs]
    assert phases.count(0) >= RESTART_AFTER and phases.count(2) >= 10 * len(SENDERS), phases
    assert retries["not sent"] + retries["no reply"] > 0, retries
    assert reader_retries[0] > 0

    # hive.db, read with sqlite3 directly: one row per message, each sender's in order.
    with sqlite3.connect(root / "hive.db") as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT id, sender, recipient, body, delivered_at FROM messages "
            "WHERE recipient = ? ORDER BY id",
            (READER,),
        ).fetchall()
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert len(rows) == len({(r["sender"], r["body"]) for r in rows}) == TOTAL, retries
    for name in SENDERS:
        mine = [r["body"] for r in rows if r["sender"] == name]
        assert mine == [f"{name} {i:03d}" for i in range(PER_SENDER)], name

    # The reader got every one of them once, in id order (so each sender's order), and
    # hive.db says each was delivered.
    got = [m["id"] for m in received]
    lost = [
        f"{r['body']} (id {r['id']}, delivered_at {r['delivered_at']}, "
        f"SIGTERM at {stopping[0]:.3f}, exit seen at {stopping[1]:.3f})"
        for r in rows
        if r["id"] not in set(got)
    ]
    assert not lost, f"never received: {lost}; reader retries {reader_retries[0]}"
    assert len(got) == len(set(got)) == TOTAL, "a message was received twice"
    assert got == [r["id"] for r in rows]
    assert all(
        (m["from"], m["to"], m["body"]) == (r["sender"], r["recipient"], r["body"])
        for m, r in zip(received, rows, strict=True)
    )
    assert all(r["delivered_at"] is not None for r in rows)
    assert "stopped" in daemon.log.read_text()
