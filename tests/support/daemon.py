"""`hyperhive up` as a real process for tests: start it on an ephemeral port, call its
HTTP API and websockets with the operator's token, stop or kill it."""

import json
import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import simple_websocket

from hyperhive import operator
from hyperhive.home import Home

from .hive import HYPERHIVE
from .wait import wait_for

# A crashed harness's restart and the supervisor's sync, short: tests wait on both (the
# defaults, 5 s each, are an operator's; the backoff's doubling is test_supervisor's).
QUICK = {"HYPERHIVE_LOCAL_RESTART_SECONDS": "0.2", "HYPERHIVE_LOCAL_SYNC_SECONDS": "0.5"}


class Daemon:
    def __init__(self, root: Path):
        self.root = root
        self.log = root.parent / "daemon.log"
        self.proc = None
        self.port = None

    def start(self):
        self.root.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("a")
        offset = out.tell()  # the log is shared by successive daemons of one test
        self.proc = subprocess.Popen(
            [HYPERHIVE, "up", "--home", str(self.root), "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **QUICK, "HYPERHIVE_HOME": str(self.root)},
            start_new_session=True,
        )
        try:
            match = wait_for(
                lambda: (
                    re.search(r"http://127\.0\.0\.1:(\d+)/", self.log.read_text()[offset:])
                    or (self.proc.poll() is not None and "exited")
                ),
                timeout=60,
                what="the daemon to listen",
            )
        except BaseException:  # not listening in time: leave nothing of it behind
            self.kill()
            raise
        assert match != "exited", self.log.read_text()
        self.port = int(match.group(1))
        return self

    def get(self, path):
        token = operator.token(Home(self.root))
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        """End the daemon and everything in its session at once, if it still runs (a
        fixture's teardown: nothing of it outlives the test)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def ws(daemon, path, **headers):
    return simple_websocket.Client.connect(f"ws://127.0.0.1:{daemon.port}{path}", headers=headers)


def bearer(daemon) -> str:
    return f"Bearer {operator.token(Home(daemon.root))}"
