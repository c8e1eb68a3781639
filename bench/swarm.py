"""How big a hive one host holds: a real daemon with the local runtime and N agents, each
a real harness driving the fake claude (tests/fake_claude.py), under a steady stream of
tasks; our figures beside references measured in the same run.

For each size N (default 10, 50, 200 agents plus the manager) the hive is grown to N
deployed agents through the workflow (in-process propose, approve, deploy; each agent.nix
names the fake claude in `hyperhive.claude`), then `hyperhive up --port 0` starts them all.
Tasks go to random agents at `--rate` per second for `--seconds`: each task's turn calls
`whoami`, `list_peers`, `send` to a peer and, every other task, `send` to the manager —
the fake claude runs them through the real `hyperhive mcp` and the agent's socket — then
the harness reports the turn; the peer's and the manager's messages run turns of their own
(no tool calls). Meanwhile the bench probes, on the same daemon and host:

- send -> recv wake-up: `recv wait_seconds=60` on a never-deployed agent's socket woken by
  a send from the manager's (ref: the same probe on the idle hive before the load);
- sqlite write latency: one INSERT transaction into hive.db's messages table (ref: the
  same INSERT into a scratch database in the same directory, interleaved);
- the forge: `GET /api/state` and the dashboard `GET /` (ref: `GET /login`, the HTTP
  floor, and `git for-each-ref refs/tags/` over every applied repo, the data floor);
- the daemon's RSS, threads, open fds and CPU, every second (ref: its fd limit), the
  harnesses' memory and CPU, the host's CPU (other users included).

From hive.db and the fake claude's run records afterwards: messages delivered per second
(beside the offered rate), the swarm's send -> recv time (inbox wait included), and turn
start latency (the recv that took a batch to the start of its claude; ref: starting a
Python that imports anyio, what the fake claude does first). Logs are searched for locked
databases, missed scheduler runs, fd exhaustion and tracebacks.

Nothing asserts a speed. Everything runs in a temporary directory on 127.0.0.1 and every
process is stopped at the end (checked). Run: .venv/bin/python bench/swarm.py [--quick]
(see bench/README.md).
"""

import argparse
import contextlib
import http.client
import json
import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from broker import Conn, Daemon
from transitions import GIT_ENV, fmt, note, say

from hyperhive import operator
from hyperhive.agents import MANAGER, init_hive
from hyperhive.broker.db import MIGRATIONS
from hyperhive.broker.messages import Broker
from hyperhive.daemon.sampler import Sampler
from hyperhive.gitstore import refs
from hyperhive.gitstore.history import write_commit
from hyperhive.gitstore.repos import open_repo
from hyperhive.hive import Hive
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime
from hyperhive.settings import load_settings
from hyperhive.spawn import spawn_commit, spawn_draft
from hyperhive.workflow import meta
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import deploy
from hyperhive.workflow.states import State

FAKE_CLAUDE = Path(__file__).resolve().parents[1] / "tests" / "fake_claude.py"
PROBE = "probe"  # an agent never deployed: its socket is the probe's reader
SQL_PROBE = "~sqlite-probe"  # the recipient of the write probe's rows: no agent's name
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MESSAGE_ID = re.compile(r"^--- message #(\d+) from", re.MULTILINE)


def worker(i: int) -> str:
    return f"w{i:03d}"


# -- the hive ----------------------------------------------------------------------------


def claude_wrapper(directory: Path) -> Path:
    """The `claude` every agent's policy names: the fake, its records in the agent's state
    (the directory claude runs in), so concurrent agents never share a file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "claude"
    path.write_text(
        "#!/bin/sh\n"
        'FAKE_CLAUDE_HOME="$PWD/.fake-claude" FAKE_CLAUDE_MCP=lazy '
        f'exec "{sys.executable}" "{FAKE_CLAUDE}" "$@"\n'
    )
    path.chmod(0o755)
    return path


def commit_agent_nix(home: Home, name: str, claude: Path) -> None:
    """agent.nix naming the fake claude, committed on the config repo's main."""
    text = f'{{ ... }}:\n{{\n  hyperhive.claude = "{claude}";\n}}\n'
    repo = open_repo(home.config_dir(name))
    try:
        head = refs.read(repo, b"refs/heads/main")
        parents = [head] if head else []
        commit = write_commit(
            repo, {"agent.nix": text.encode()}, "bench agent\n", "manager", parents
        )
        refs.cas(repo, b"refs/heads/main", head, commit)
    finally:
        repo.close()


def deploy_one(home: Home, name: str, claude: Path) -> None:
    runtime = LocalRuntime(home)
    if name == MANAGER:  # init proposed manager#1 (the template): this config replaces it
        commit_agent_nix(home, name, claude)
        approvals = Approvals(home, name)
        (home.applied_dir(name) / "hooks" / "post-receive").unlink(missing_ok=True)
        approvals.deny(1, "operator", "replaced by the bench's config")
        approval = approvals.propose("HEAD", "operator")
    else:
        spawn_draft(home, name, "operator")
        commit_agent_nix(home, name, claude)
        approval = spawn_commit(home, name, "HEAD", runtime, "operator")
        # approve would run the shipped hook, i.e. a `hyperhive deploy` process: deploy here
        (home.applied_dir(name) / "hooks" / "post-receive").unlink()
        approvals = Approvals(home, name)
    approvals.approve(approval.id, "operator")
    result = deploy(home, name, approval.id, runtime)
    if result.state != State.DEPLOYED:
        raise SystemExit(f"{result.target} ended {result.state}: {result.states}")


def grow(home: Home, names: list[str], claude: Path, lock_meta: bool) -> float:
    """Deploy `names` (a few at a time: builds of different agents are independent).
    Without `lock_meta` the meta commits keep their previous flake.lock: `nix flake lock`
    of a flake with one input per agent, once per deploy, would make the setup of 200
    agents take minutes, and deploys are not what this bench measures (transitions.py)."""
    t0 = time.perf_counter()
    if not lock_meta:
        meta.lock_flake = lambda flake, previous, *_: previous
    with ThreadPoolExecutor(4) as pool:
        for f in [pool.submit(deploy_one, home, n, claude) for n in names]:
            f.result()
    return time.perf_counter() - t0


def sandbox_state(home: Home) -> str:
    """Whether the local runtime sandboxes its harnesses: `[local] sandbox` in the
    settings, else a `sandbox` attribute of the runtime, else it has none (off)."""
    section = getattr(load_settings(home), "local", None)
    value = getattr(section, "sandbox", None)
    if value is not None:
        return f"{'on' if value else 'off'} ([local] sandbox = {str(value).lower()})"
    runtime = LocalRuntime(home)
    for holder in (runtime, getattr(runtime, "harnesses", None)):
        value = getattr(holder, "sandbox", None)
        if value is not None:
            return f"{'on' if value else 'off'} (the local runtime's default)"
    return "off (this local runtime has no sandbox)"


# -- processes ---------------------------------------------------------------------------


def proc_stat(pid: int) -> dict | None:
    """From /proc/<pid>/stat: ppid, cpu (own) and child cpu in seconds, threads, rss."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return {
        "ppid": int(fields[1]),
        "cpu": (int(fields[11]) + int(fields[12])) / TICK,
        "children_cpu": (int(fields[13]) + int(fields[14])) / TICK,
        "threads": int(fields[17]),
        "rss": int(fields[21]) * PAGE,
    }


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (s := proc_stat(int(entry))) and s["ppid"] == pid:
            out.append(int(entry))
    return out


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def fd_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise SystemExit(f"no fd limit for {pid}")


def host_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole host since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def percentile(samples: list[float], p: float) -> float:
    """Nearest rank; NaN of nothing."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[max(0, -(-len(ordered) * p // 100) - 1)]


# -- probes ------------------------------------------------------------------------------


class Probes:
    """Background probes of one daemon; each appends (monotonic time, value) samples."""

    def __init__(self, daemon: Daemon, port: int, token: str, scratch: Path):
        self.daemon, self.port, self.token = daemon, port, token
        self.stop = threading.Event()
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self.scratch = scratch
        self.threads: list[threading.Thread] = []

    def add(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append((time.monotonic(), value))

    def values(self, key: str, start: float = 0.0, end: float = float("inf")) -> list[float]:
        return [v for t, v in self.samples.get(key, []) if start <= t <= end]

    def start(self, *loops) -> None:
        for loop in loops:
            t = threading.Thread(target=self._guard, args=(loop,), daemon=True)
            t.start()
            self.threads.append(t)

    def _guard(self, loop) -> None:
        try:
            loop()
        except Exception as e:  # a probe that broke says so in the output, not silently
            self.add(f"error:{loop.__name__}", 1)
            say(f"  probe {loop.__name__} failed: {type(e).__name__}: {e}")

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=90)
        self.threads.clear()
        self.stop.clear()

    # send -> recv on the probe agent's socket, woken by the manager's socket
    def wakeup(self) -> None:
        reader = Conn(self.daemon.socket(PROBE))
        writer = Conn(self.daemon.socket(MANAGER))
        got: list[float] = []
        ready = threading.Event()

        def read() -> None:
            reply = reader.read()
            got.append(time.perf_counter())
            if len(reply["messages"]) != 1:
                raise SystemExit(f"the probe got {reply['messages']!r}")
            ready.set()

        try:
            while not self.stop.is_set():
                got.clear()
                ready.clear()
                reader.write({"op": "recv", "wait_seconds": 60})
                t = threading.Thread(target=read, daemon=True)
                t.start()
                time.sleep(0.05)  # the daemon holds the recv by then
                t0 = time.perf_counter()
                writer.call({"op": "send", "to": PROBE, "body": "probe"})
                if not ready.wait(60):
                    raise SystemExit("the probe's recv was never woken")
                self.add("wakeup", got[0] - t0)
                self.stop.wait(0.5)  # its sends are load too: a few a second at most
        finally:
            reader.close()
            writer.close()

    # one INSERT transaction into hive.db, and the same into a scratch database
    def sqlite(self) -> None:
        hive = sqlite3.connect(self.daemon.root / "hive.db", timeout=60, isolation_level=None)
        ref = sqlite3.connect(self.scratch, timeout=60, isolation_level=None)
        ref.execute("PRAGMA journal_mode = WAL")
        if not ref.execute("SELECT 1 FROM sqlite_master WHERE name = 'messages'").fetchone():
            for sql in MIGRATIONS[0]:
                ref.execute(sql)
        insert = (
            "INSERT INTO messages (sender, recipient, body, created_at, delivered_at) "
            "VALUES ('bench', ?, 'x', ?, ?)"
        )
        try:
            while not self.stop.is_set():
                for key, conn in (("sqlite", hive), ("sqlite-ref", ref)):
                    now = time.time()
                    t0 = time.perf_counter()
                    conn.execute(insert, (SQL_PROBE, now, now))
                    self.add(key, time.perf_counter() - t0)
                self.stop.wait(0.25)
        finally:
            hive.close()
            ref.close()

    # GET /api/state, / and /login in turn
    def http(self) -> None:
        paths = [("api", "/api/state"), ("dashboard", "/"), ("login", "/login")]
        while not self.stop.is_set():
            for key, path in paths:
                self.add(key, self.get(path))
            self.stop.wait(1.0)

    def get(self, path: str) -> float:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = {} if path == "/login" else {"Authorization": f"Bearer {self.token}"}
        t0 = time.perf_counter()
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise SystemExit(f"GET {path}: {response.status}")
        return time.perf_counter() - t0

    # the daemon's processes, every second
    def resources(self) -> None:
        master = self.daemon.proc.pid
        busy0, total0 = host_cpu()
        while not self.stop.is_set():
            workers = children(master)
            daemon = [p for p in [master, *workers] if proc_stat(p)]
            harnesses = [h for w in workers for h in children(w)]
            stats = {p: proc_stat(p) for p in daemon + harnesses}
            stats = {p: s for p, s in stats.items() if s}
            self.add("rss", sum(stats[p]["rss"] for p in daemon if p in stats))
            self.add("threads", sum(stats[p]["threads"] for p in daemon if p in stats))
            self.add("fds", sum(fd_count(p) for p in daemon))
            self.add("daemon_cpu", sum(stats[p]["cpu"] for p in daemon if p in stats))
            agent = [stats[h] for h in harnesses if h in stats]
            self.add("harnesses", len(agent))
            self.add("harness_rss", sum(s["rss"] for s in agent))
            self.add("agents_cpu", sum(s["cpu"] + s["children_cpu"] for s in agent))
            busy, total = host_cpu()
            self.add("host_busy", (busy - busy0) / max(1, total - total0))
            busy0, total0 = busy, total
            self.stop.wait(0.5)


# -- the load ----------------------------------------------------------------------------


def task_body(k: int, to: str, peers: list[str], rng: random.Random) -> str:
    peer = rng.choice([p for p in peers if p != to] or [MANAGER])
    lines = [
        f"task {k} for {to}: look around, tell {peer}" + (", report to the manager" * (k % 2)),
        "fake: call whoami {}",
        "fake: call list_peers {}",
        "fake: call send " + json.dumps({"to": peer, "body": f"re task {k}: a note for you"}),
    ]
    if k % 2:
        lines.append(
            "fake: call send " + json.dumps({"to": MANAGER, "body": f"task {k} done by {to}"})
        )
    return "\n".join(lines)


def inject(daemon: Daemon, names: list[str], rate: float, seconds: float, seed: int) -> int:
    """Tasks from the manager's socket to random agents, `rate` per second; how many."""
    rng = random.Random(seed)
    conn = Conn(daemon.socket(MANAGER))
    start = time.monotonic()
    count = int(rate * seconds)
    try:
        for k in range(count):
            time.sleep(max(0.0, start + k / rate - time.monotonic()))
            to = rng.choice(names)
            conn.call({"op": "send", "to": to, "body": task_body(k, to, names, rng)})
    finally:
        conn.close()
    return count


def undelivered(root: Path) -> int:
    with contextlib.closing(sqlite3.connect(root / "hive.db", timeout=60)) as db:
        return db.execute(
            "SELECT count(*) FROM messages WHERE delivered_at IS NULL AND recipient NOT IN (?, ?)",
            (PROBE, SQL_PROBE),
        ).fetchone()[0]


def turns(home: Home, names: list[str], since: float) -> list[dict]:
    """The fake claude's runs of `names` that started after `since` (unix time)."""
    runs = []
    for name in names:
        path = home.state_dir(name) / ".fake-claude" / "runs.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                run = json.loads(line)
                if run.get("started", 0) >= since:
                    runs.append({**run, "agent": name})
    return runs


def wait_ready(home: Home, names: list[str], offsets: dict[str, int], timeout: float) -> float:
    """Seconds until every harness logged `ready on` after `offsets` (bytes of its log)."""
    t0 = time.monotonic()
    waiting = set(names)
    while waiting:
        for name in list(waiting):
            path = home.log_dir(name) / "harness.log"
            with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
                f.seek(offsets.get(name, 0))
                if b" ready on " in f.read():
                    waiting.discard(name)
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"{len(waiting)} harnesses not ready after {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - t0


def log_sizes(home: Home, names: list[str]) -> dict[str, int]:
    sizes = {}
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            sizes[name] = (home.log_dir(name) / "harness.log").stat().st_size
    return sizes


LOG_PATTERNS = {
    "database is locked": "database is locked",
    "missed scheduler runs": "was missed by",
    "skipped scheduler runs": "maximum number of running instances",
    "fd exhaustion": "Too many open files",
    "harness crashes": "exited unexpectedly",
    "tracebacks": "Traceback (most recent call last)",
}


def log_counts(texts: list[str]) -> dict[str, int]:
    return {label: sum(t.count(p) for t in texts) for label, p in LOG_PATTERNS.items()}


def read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


# -- one size ----------------------------------------------------------------------------


def run_size(root: Path, n: int, args: argparse.Namespace, out: dict) -> None:
    home = Home(root / "hive")
    names = [MANAGER] + [worker(i) for i in range(1, n + 1)]
    daemon = Daemon(home.root)
    offsets = log_sizes(home, names)
    daemon_log_at = daemon.log.stat().st_size if daemon.log.exists() else 0
    t0 = time.perf_counter()
    daemon.start()
    pids: set[int] = set()
    try:
        text = daemon.log.read_text()[daemon_log_at:]
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", text).group(1))
        daemon.wait_socket(PROBE)
        wait_ready(home, names, offsets, timeout=60 + n)
        out["ready"] = time.perf_counter() - t0  # from starting `hyperhive up`
        probes = Probes(daemon, port, operator.token(home), root / f"scratch-{n}.db")

        # idle: the reference probes, no load
        idle_s = args.idle_seconds
        probes.start(probes.wakeup, probes.resources, probes.sqlite)
        time.sleep(idle_s)
        probes.join()
        idle = dict(probes.samples)
        probes.samples.clear()
        for _ in range(3):
            probes.add("login", probes.get("/login"))

        # the load
        say(f"  N={n}: {args.rate:g} tasks/s for {args.seconds:g} s …")
        probes.start(probes.wakeup, probes.resources, probes.sqlite, probes.http)
        load_start, load_wall = time.monotonic(), time.time()
        sent = inject(daemon, names[1:], args.rate, args.seconds, args.seed + n)
        load_end, load_wall_end = time.monotonic(), time.time()
        deadline = time.monotonic() + args.drain
        while (left := undelivered(home.root)) and time.monotonic() < deadline:
            time.sleep(0.05)  # a count in sqlite: cheap to ask often
        drained = time.monotonic()
        out["drain"] = drained - load_end
        out["backlog"] = left
        pids = {h for w in children(daemon.proc.pid) for h in children(w)}
        probes.join()

        # in-process, same home and load: the sampler's run, the git floor of the state
        hive = Hive(home, LocalRuntime(home))
        sampler = Sampler(hive, Broker(home), load_settings(home).telemetry)
        t = time.perf_counter()
        sampler.sample()
        out["sampler"] = time.perf_counter() - t
        t = time.perf_counter()
        for name in home.agent_names():
            subprocess.run(
                ["git", "--git-dir", str(home.applied_dir(name)), "for-each-ref", "refs/tags/"],
                check=True,
                capture_output=True,
                env=GIT_ENV,
            )
        out["for_each_ref"] = time.perf_counter() - t
        floor = []
        for _ in range(1 if args.smoke else 5):  # --smoke: the row, once
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import anyio"], check=True)
            floor.append(time.perf_counter() - t)
        out["python_start"] = statistics.median(floor)
        fd_max = fd_limit(daemon.proc.pid)
    finally:
        t = time.perf_counter()
        daemon.stop()
        out["stop"] = time.perf_counter() - t
        out["leftover"] = reap(pids)
    summarize(
        home, names, probes, idle, out, (load_start, load_end, drained), load_wall, load_wall_end
    )
    out["sent_tasks"] = sent
    out["fd_limit"] = fd_max
    texts = [read_from(daemon.log, daemon_log_at)]
    texts += [read_from(home.log_dir(x) / "harness.log", offsets.get(x, 0)) for x in names]
    out["logs"] = log_counts(texts)


def kill_strays(root: Path) -> int:
    """Kill every process still running from the bench's temporary directory (only ours
    have it on their command line); how many there were."""
    mark, killed = str(root).encode(), 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if mark not in Path(f"/proc/{entry}/cmdline").read_bytes():
                continue
            os.kill(int(entry), signal.SIGKILL)
            killed += 1
        except (OSError, ProcessLookupError):
            continue
    return killed


def reap(pids: set[int], timeout: float = 15.0) -> int:
    """Wait for the harnesses to be gone with their daemon; kill any left (counted)."""
    deadline = time.monotonic() + timeout
    while (alive := {p for p in pids if proc_stat(p)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p, signal.SIGKILL)
    return len(alive)


def summarize(home, names, probes, idle, out, window, wall, wall_end) -> None:
    """The figures of one size into `out`; `window` = (load start, load end, drained),
    monotonic; `wall`, `wall_end`: the load's start and end in unix time."""
    start, end, drained = window

    def both(key: str) -> list[float]:
        return probes.values(key, start, float("inf"))

    out["wakeup"], out["wakeup_idle"] = both("wakeup"), [v for _, v in idle.get("wakeup", [])]
    out["sqlite"], out["sqlite_ref"] = both("sqlite"), both("sqlite-ref")
    out["api"], out["dashboard"], out["login"] = both("api"), both("dashboard"), both("login")
    for key in ("rss", "threads", "fds", "harnesses", "harness_rss"):
        out[key] = max(both(key) or [0])
        out[f"{key}_idle"] = max([v for _, v in idle.get(key, [])] or [0])

    def rate(series: list[tuple[float, float]], a: float, b: float) -> float:
        inside = [(t, v) for t, v in series if a <= t <= b]
        if len(inside) < 2:
            return float("nan")
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    for key in ("daemon_cpu", "agents_cpu"):  # the CPU the load cost, its drain included
        out[key] = rate(probes.samples.get(key, []), start, drained)
        out[f"{key}_idle"] = rate(idle.get(key, []), 0, float("inf"))
    busy = probes.values("host_busy", start, drained)
    out["host_busy"] = statistics.fmean(busy or [float("nan")])

    with contextlib.closing(sqlite3.connect(home.root / "hive.db", timeout=60)) as db:
        rows = db.execute(
            "SELECT id, sender, recipient, created_at, delivered_at FROM messages "
            "WHERE created_at >= ? AND recipient NOT IN (?, ?)",
            (wall, PROBE, SQL_PROBE),
        ).fetchall()
    by_id = {r[0]: r for r in rows}
    in_window = [r for r in rows if r[3] <= wall_end]
    out["sent_per_s"] = len(in_window) / (wall_end - wall)
    delivered = [r for r in rows if r[4] is not None and wall <= r[4] <= wall_end]
    out["delivered_per_s"] = len(delivered) / (wall_end - wall)
    out["messages"] = len(rows)
    out["inbox_wait"] = [r[4] - r[3] for r in rows if r[4] is not None]

    runs = turns(home, names, wall)
    starts, first = [], []
    failed = 0
    for run in runs:
        ids = [int(i) for i in MESSAGE_ID.findall(run.get("prompt", ""))]
        batch = [by_id[i] for i in ids if i in by_id and by_id[i][4] is not None]
        if not batch:
            continue  # a notes compaction, or a batch from before the window
        failed += run.get("exit", 0) != 0
        starts.append(run["started"] - max(r[4] for r in batch))
        first.append(run["started"] - min(r[3] for r in batch))
    out["turns"], out["failed_turns"] = len(starts), failed
    out["turn_start"], out["to_turn"] = starts, first


# -- report ------------------------------------------------------------------------------


def ms(values: list[float], p: float) -> str:
    v = percentile(values, p)
    return "—" if v != v else fmt(v).strip()


def mib(n: float) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


def report(sizes: list[int], results: dict[int, dict], args: argparse.Namespace) -> None:
    rows: list[tuple[str, str, list[str], str]] = []

    def row(who: str, label: str, cell, ref: str = "") -> None:
        rows.append((who, label, [cell(results[n]) for n in sizes], ref))

    def pct(r, key, p):
        return ms(r[key], p)

    row("ours", "harnesses running (load, max)", lambda r: f"{r['harnesses']:.0f}")
    row("ours", "all harnesses ready after `up`", lambda r: fmt(r["ready"]).strip())
    row("ours", "messages/s delivered", lambda r: f"{r['delivered_per_s']:.2f}/s")
    row("ref", "  messages/s sent (offered load)", lambda r: f"{r['sent_per_s']:.2f}/s")
    row(
        "",
        "  tasks injected, turns run, failed",
        lambda r: f"{r['sent_tasks']}, {r['turns']}, {r['failed_turns']}",
    )
    row("", "  backlog after drain (drain time)", lambda r: f"{r['backlog']} ({r['drain']:.1f} s)")
    row("ours", "send -> recv wake-up p50, under load", lambda r: pct(r, "wakeup", 50))
    row("ours", "send -> recv wake-up p99, under load", lambda r: pct(r, "wakeup", 99))
    row("ref", "  same probe, idle hive p50", lambda r: pct(r, "wakeup_idle", 50))
    row("ref", "  same probe, idle hive p99", lambda r: pct(r, "wakeup_idle", 99))
    row("ours", "swarm send -> recv p50 (inbox wait incl.)", lambda r: pct(r, "inbox_wait", 50))
    row("ours", "swarm send -> recv p99 (inbox wait incl.)", lambda r: pct(r, "inbox_wait", 99))
    row("ours", "turn start p50 (recv -> claude runs)", lambda r: pct(r, "turn_start", 50))
    row("ours", "turn start p99 (recv -> claude runs)", lambda r: pct(r, "turn_start", 99))
    row(
        "ref",
        "  python -c 'import anyio' (process start)",
        lambda r: fmt(r["python_start"]).strip(),
    )
    row("", "  message sent -> its turn starts p50", lambda r: pct(r, "to_turn", 50))
    row("", "  message sent -> its turn starts p99", lambda r: pct(r, "to_turn", 99))
    row("ours", "GET /api/state p50", lambda r: pct(r, "api", 50))
    row("ours", "GET /api/state p99", lambda r: pct(r, "api", 99))
    row("ours", "GET / (dashboard) p50", lambda r: pct(r, "dashboard", 50))
    row("ours", "GET / (dashboard) p99", lambda r: pct(r, "dashboard", 99))
    row("ref", "  GET /login p50 (HTTP floor)", lambda r: pct(r, "login", 50))
    row(
        "ref", "  git for-each-ref refs/tags/, every repo", lambda r: fmt(r["for_each_ref"]).strip()
    )
    row("ours", "sqlite INSERT into hive.db p50", lambda r: pct(r, "sqlite", 50))
    row("ours", "sqlite INSERT into hive.db p99", lambda r: pct(r, "sqlite", 99))
    row("ref", "  same INSERT, scratch db p50", lambda r: pct(r, "sqlite_ref", 50))
    row("ref", "  same INSERT, scratch db p99", lambda r: pct(r, "sqlite_ref", 99))
    row(
        "ours",
        "sampler run (in-process, same hive)",
        lambda r: fmt(r["sampler"]).strip(),
        f"its period: {args.sample_seconds} s",
    )
    row("ours", "daemon RSS idle / load", lambda r: f"{mib(r['rss_idle'])} / {mib(r['rss'])}")
    row(
        "ours",
        "daemon threads idle / load",
        lambda r: f"{r['threads_idle']:.0f} / {r['threads']:.0f}",
    )
    row("ours", "daemon open fds idle / load", lambda r: f"{r['fds_idle']:.0f} / {r['fds']:.0f}")
    row("ref", "  the daemon's fd limit (soft)", lambda r: f"{r['fd_limit']}")
    row(
        "ours",
        "daemon CPU idle / load+drain (1 core=100%)",
        lambda r: f"{r['daemon_cpu_idle']:.0%} / {r['daemon_cpu']:.0%}",
    )
    row(
        "ours",
        "harnesses RSS, all (per agent)",
        lambda r: f"{mib(r['harness_rss'])} ({mib(r['harness_rss'] / max(1, r['harnesses']))})",
    )
    row(
        "ours",
        "agents CPU idle / load+drain (claude incl.)",
        lambda r: f"{r['agents_cpu_idle']:.0%} / {r['agents_cpu']:.0%}",
    )
    row("ref", "  host CPU busy, all users (2 cores=100%)", lambda r: f"{r['host_busy']:.0%}")
    row("ours", "daemon stop (SIGTERM -> exit)", lambda r: fmt(r["stop"]).strip())
    row("", "  harnesses left after the stop", lambda r: f"{r['leftover']}")
    for label in LOG_PATTERNS:
        row("", f"  log: {label}", lambda r, label=label: f"{r['logs'][label]}")

    width = max(len(r[1]) for r in rows) + 7
    cols = max([len(c) for r in rows for c in r[2]] + [9]) + 2
    say("\n" + "=" * (width + cols * len(sizes) + 20))
    say(f"{'':<{width}}" + "".join(f"{'N=' + str(n):>{cols}}" for n in sizes) + "   note")
    for who, label, cells, ref in rows:
        say(
            f"  {who:<4} {label:<{width - 7}}"
            + "".join(f"{c:>{cols}}" for c in cells)
            + (f"   {ref}" if ref else "")
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="10,50,200", help="sizes N, comma-separated")
    parser.add_argument("--rate", type=float, default=1.0, help="tasks per second injected")
    parser.add_argument("--seconds", type=float, default=20.0, help="load time per size")
    parser.add_argument("--idle-seconds", type=float, default=4.0, help="idle probe per size")
    parser.add_argument("--drain", type=float, default=30.0, help="max wait for the backlog")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--lock-meta", action="store_true", help="run `nix flake lock` at each setup deploy"
    )
    parser.add_argument(
        "--tmp",
        help="where the temporary hive and the claude wrapper go (default: the system's "
        "temporary directory; a sandbox with a private /tmp needs a path it binds)",
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
        args.agents, args.rate, args.seconds = "3", 1.0, 2.0
        args.idle_seconds, args.drain = 1.0, 30.0
    if args.smoke:  # a shorter idle probe; the load as long (its turns end in it)
        args.idle_seconds = 0.5
    sizes = sorted({int(s) for s in args.agents.split(",")})
    if not sizes or sizes[0] < 1 or sizes[-1] > 999:
        raise SystemExit("--agents: sizes from 1 to 999")
    started = time.perf_counter()
    results: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="hyperhive-swarm-", dir=args.tmp) as tmp:
        root = Path(tmp)
        home = Home(root / "hive")
        claude = claude_wrapper(root / "bin")
        init_hive(home, LocalRuntime(home), "operator")
        args.sample_seconds = load_settings(home).telemetry.sample_seconds
        sandbox = sandbox_state(home)
        say(
            f"hyperhive bench/swarm.py: agents={','.join(map(str, sizes))} rate={args.rate:g}/s "
            f"seconds={args.seconds:g} sandbox: {sandbox}" + (" (--quick)" if args.quick else "")
        )
        spawn_draft(home, PROBE, "operator")  # the probe: an agent that never runs
        spawn_commit(home, PROBE, "HEAD", LocalRuntime(home), "operator")
        have = 0
        try:
            for n in sizes:
                names = [MANAGER] if have == 0 else []
                names += [worker(i) for i in range(have + 1, n + 1)]
                say(f"N={n}: deploying {len(names)} more agents …")
                took = grow(home, names, claude, args.lock_meta)
                say(f"  deployed in {took:.1f} s; starting the daemon …")
                have = n
                results[n] = {}
                run_size(root, n, args, results[n])
        finally:
            if strays := kill_strays(root):
                say(f"killed {strays} processes left running from {root}")
    report(sizes, results, args)
    say(f"\nsandbox: {sandbox}")
    note(
        f"Each size: N agents and the manager deployed, `hyperhive up`, {args.idle_seconds:g} s "
        f"idle (the idle references), then {args.rate:g} tasks/s for {args.seconds:g} s from the "
        "manager's socket to random agents; each task's turn calls whoami, list_peers, send to "
        "a peer and (every other task) send to the manager, through the real `hyperhive mcp`; "
        "those messages run turns of their own without tool calls (FAKE_CLAUDE_MCP=lazy: the "
        "MCP server starts only in turns that call a tool). Then the backlog drains (at most "
        f"{args.drain:g} s) and the daemon is stopped. p50/p99 are nearest-rank."
    )
    say(f"total wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
