"""`hyperhive up`: recover, then serve the forge with gunicorn (one gthread worker process,
so the web app, the event bus, the build worker and the host socket share one process)
until SIGINT or SIGTERM. The web app is made by the factory the caller passes (cli.py:
forge_ui.create_app): the daemon does not import its faces."""

import dataclasses
import logging
import resource
import signal
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from gunicorn.app.base import BaseApplication

from hyperhive import tokens
from hyperhive.agents import MANAGER, init_hive
from hyperhive.broker.messages import Broker
from hyperhive.daemon.agentsock import AgentSockets
from hyperhive.daemon.checker import CheckWorker
from hyperhive.daemon.gitsock import Address, GitSockets, connect_address, git_url
from hyperhive.daemon.hostsock import HostSocket
from hyperhive.daemon.httpworker import GuardedWorker
from hyperhive.daemon.ops import Ops
from hyperhive.daemon.sampler import Sampler
from hyperhive.daemon.scheduler import Scheduler
from hyperhive.daemon.supervisor import Supervisor
from hyperhive.daemon.worker import BuildWorker
from hyperhive.errors import HiveError
from hyperhive.gitstore import refs, worktree
from hyperhive.gitstore.receive import Quarantine
from hyperhive.gitstore.repos import open_repo, sweep_locks
from hyperhive.hive import Hive
from hyperhive.home import Home
from hyperhive.policy import deployed_policy
from hyperhive.runtime import sandbox
from hyperhive.runtime.kinds import get_runtime
from hyperhive.runtime.local import LocalRuntime
from hyperhive.settings import Http, load_settings
from hyperhive.wire import notify
from hyperhive.wire.events import EventBus
from hyperhive.workflow import retention
from hyperhive.workflow.approvals import MAIN
from hyperhive.workflow.deploy import recover
from hyperhive.workflow.lock import build_lock, locked

log = logging.getLogger("hyperhive.daemon")

THREADS = 48  # for requests; each open websocket holds one more (http.websockets of them)
GRACEFUL_SECONDS = 30  # how long a stop waits for running builds before they are killed

AppFactory = Callable[[Hive], Callable]  # the web app (a WSGI callable) of a hive


def recover_all(home: Home) -> None:
    """End builds that a crash interrupted. An agent whose build lock is held has a build
    running in another process (a CLI deploy): that one is alive, not interrupted. Drop
    the quarantines of pushes a crash cut off (only this daemon receives pushes)."""
    for objects in home.root.glob("agents/*/config/.git/objects"):
        for path in Quarantine.sweep(objects):
            log.warning("removed %s, left by a push the last stop interrupted", path)
        with open_repo(objects.parent.parent) as repo:  # a checkout cut while following main
            if worktree.finish_interrupted(repo, refs.read(repo, MAIN)):
                log.warning("%s: finished a checkout the last stop interrupted", repo.path)
    git_dirs = [
        home.meta_dir,
        *home.root.glob("applied/*.git"),
        *home.root.glob("agents/*/config/.git"),
    ]
    for git_dir in git_dirs:
        for path in sweep_locks(git_dir):
            log.warning("removed %s, a stale git lock (a write failed: a full disk?)", path)
    for name in home.agent_names():
        with locked(build_lock(home.applied_dir(name)), blocking=False) as free:
            if free:
                for a in recover(home, name):
                    log.warning("%s: interrupted build marked failed", a.target)


def prune_stamp(home: Home) -> Path:
    """Touched by every retention run: a run missed while the daemon was down is caught
    up at the next start."""
    return home.run_dir / "retention.last-run"


class Services:
    """What runs beside the web app in the worker process."""

    def __init__(
        self, home: Home, runtime_kind: str, http: Address, stopping: threading.Event | None = None
    ):
        # Every part gets the home that carries the hive's bus (wire/notify.py publishes
        # on it), the runtime too.
        home = dataclasses.replace(home, bus=EventBus())
        runtime = get_runtime(runtime_kind, home)
        self.worker = BuildWorker(home, runtime)
        # An approval written in this process is queued on the worker directly, without
        # a hook process (workflow/hooks.py).
        home = dataclasses.replace(home, deploys=self.worker.submit)
        self.hive = Hive(home, runtime, bus=home.bus, stopping=stopping or threading.Event())
        if isinstance(self.hive.runtime, LocalRuntime):  # its harnesses run on this host
            self.hive.runtime.harnesses.git_url = git_url(http)
        self.hive.builds = self.worker.status
        self.hive.broker = Broker(home, lambda name: deployed_policy(home, name))
        self.settings = load_settings(home)  # as of the start (prune reads its own)
        # the checks of proposals: a pool of their own, beside the build queue
        self.checks = CheckWorker(
            home,
            self.hive.runtime,
            self.hive.broker,
            self.settings.checks,
            building=lambda: bool(self.worker.status()["running"]),
        )
        self.hive.checks = self.checks
        self.ops = Ops(self.hive, self.hive.broker, self.worker)
        self.sock = HostSocket(home.host_socket, self.ops.for_host)
        self.agents = AgentSockets(home, self.ops)
        # containers reach the git remote through these
        self.git = GitSockets(home, http, self.hive.forwarded)
        self.watcher = threading.Thread(target=self._follow, name="agent-sockets", daemon=True)
        self.scheduler = Scheduler()
        self.sampler = Sampler(self.hive, self.hive.broker, self.settings.telemetry)
        self.supervisor = Supervisor(self.hive, self.hive.broker, self.settings.local)

    def _follow(self) -> None:
        """Agents come and go through the workflow: keep their sockets in step, and run
        each deployed agent at its deployed revision (a deploy restarts it)."""
        # a message changes no agent: skipped by the bus, so a send never wakes this thread
        with self.hive.bus.subscribe("state", skip=notify.is_message) as sub:
            while not self.hive.stopping.is_set():
                event = sub.get(timeout=1.0)
                if event is None and not sub.overflowed:
                    continue  # a lost event may have changed one
                sub.overflowed = False
                try:
                    self.agents.sync()
                    self.git.sync()
                    self.supervisor.sync()
                except Exception:
                    log.exception("updating the agent sockets failed")

    def prune(self) -> None:
        """The daily retention job. The days are read at each run, so an edit of
        hyperhive.toml applies at the next run (the time of day at the next start)."""
        home = self.hive.home
        report = retention.prune(home, load_settings(home).retention.failed_days)
        for name, error in report.errors.items():
            log.error("retention: %s not pruned: %s", name, error)
        log.info("retention: %d tags pruned", len(report.removed))
        stamp = prune_stamp(home)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.touch()

    def start(self) -> None:
        self.sock.start()
        self.agents.sync()
        self.git.sync()
        self.watcher.start()
        self.supervisor.start(wait=False)  # the forge answers while the agents start
        for target in self.worker.resume():
            log.info("%s: resuming a build queued before the last stop", target)
        self.checks.start(self.hive.bus)  # checks what was proposed while it was down
        stamp = prune_stamp(self.hive.home)
        self.scheduler.add_daily(
            "retention",
            self.settings.retention.prune_at,
            self.prune,
            datetime.fromtimestamp(stamp.stat().st_mtime) if stamp.exists() else datetime.min,
        )
        for job_id, seconds, job in [*self.sampler.jobs(), *self.supervisor.jobs()]:
            self.scheduler.add_every(job_id, seconds, job)
        self.scheduler.start()

    def stop(self) -> None:
        self.hive.stopping.set()
        self.scheduler.stop()
        self.supervisor.stop()  # the harnesses first: their recv hands messages back
        self.hive.broker.close()
        self.sock.stop()
        self.agents.stop()
        self.git.stop()
        self.checks.stop()
        self.worker.stop()


def raise_fd_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit; the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return soft


def limits(http: Http, fd_limit: int) -> Http:
    """The listener's limits; its connections take at most half the open files."""
    return dataclasses.replace(
        http, max_connections=max(16, min(http.max_connections, fd_limit // 2))
    )


class Server(BaseApplication):
    def __init__(
        self,
        home: Home,
        runtime_kind: str,
        bind: str,
        port: int,
        http: Http,
        app_factory: AppFactory,
    ):
        self.home, self.runtime_kind = home, runtime_kind
        self.app_factory = app_factory
        self.stopping = threading.Event()  # the daemon's stop flag, the Hive's `stopping`
        self.limits = http
        self.address = f"[{bind}]:{port}" if ":" in bind else f"{bind}:{port}"
        self.services: Services | None = None
        self.http: Address | None = None  # where gunicorn listens, once bound
        super().__init__()

    def load_config(self) -> None:
        for key, value in {
            "bind": [self.address],
            "workers": 1,
            # gthread, reading each request in its loop before a thread serves it
            "worker_class": GuardedWorker.with_limits(self.limits),
            "threads": THREADS + self.limits.websockets,
            "worker_connections": self.limits.max_connections,
            "keepalive": 0,  # one request per connection: each is read by the loop
            "graceful_timeout": GRACEFUL_SECONDS,
            "timeout": 0,  # a build's request (a websocket) may be open for long
            "accesslog": None,
            "errorlog": "-",
            "control_socket_disable": True,  # nothing to control from outside
            "loglevel": "info",
            "when_ready": self.when_ready,
            "post_worker_init": self.post_worker_init,
            "worker_int": self.worker_int,
            "worker_exit": self.worker_exit,
        }.items():
            self.cfg.set(key, value)

    def load(self):
        self.services = Services(self.home, self.runtime_kind, self.http, self.stopping)
        # The app first: its imports (pygments' lazy lexer table among them) are not safe
        # to run while the services' threads import the same modules.
        app = self.app_factory(self.services.hive)
        self.services.start()
        return app

    def when_ready(self, arbiter) -> None:
        # In the master, bound and before the worker forks: the worker's services (`load`)
        # know the address (`--port 0` leaves the port to the kernel) before they start.
        self.http = connect_address(arbiter.LISTENERS[0].getsockname())

    def post_worker_init(self, worker) -> None:
        # Announced only now, when the app, the host socket and the build worker are up.
        host, port = worker.sockets[0].getsockname()[:2]
        log.info(
            "hyperhive up: home %s, runtime %s, http://%s:%d/",
            self.home.root,
            self.runtime_kind,
            host,
            port,
        )
        log.info(
            "log in with the password of `hyperhive operator set-password` "
            "or the token `hyperhive operator token` prints"
        )
        # gunicorn's own SIGTERM handler only stops accepting; open websockets must end too.
        graceful = signal.getsignal(signal.SIGTERM)

        def on_term(signum, frame):
            self.stopping.set()
            graceful(signum, frame)

        signal.signal(signal.SIGTERM, on_term)

    def worker_int(self, worker) -> None:
        self.stopping.set()

    def worker_exit(self, server, worker) -> None:
        if self.services:
            self.services.stop()
        log.info("stopped")


def require_sandbox(home: Home) -> None:
    """The local runtime runs agents in their sandbox or not at all: a host where bwrap
    is missing or cannot make its namespaces stops the start, before anything runs."""
    try:
        sandbox.check()
    except sandbox.SandboxUnavailable as e:
        raise sandbox.SandboxUnavailable(
            sandbox.refusal(str(e), home.root / "hyperhive.toml")
        ) from None


def serve(home: Home, runtime_kind: str, bind: str, port: int, app_factory: AppFactory) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    settings = load_settings(home)  # a bad hyperhive.toml stops the start here, saying why
    http = limits(settings.http, raise_fd_limit())
    if runtime_kind == "local" and settings.local.sandbox:
        require_sandbox(home)
    runtime = get_runtime(runtime_kind, home)
    if init_hive(home, runtime, "operator"):
        log.info("initialized a new hive at %s with the manager agent", home.root)
    if home.close_to_others():
        log.warning("%s was open to other users: it is not anymore", home.root)
    if MANAGER in home.agent_names():
        try:
            if token_id := tokens.provision(home, MANAGER):
                path = tokens.state_file(home, MANAGER)
                log.info("issued the manager's git token #%d into %s", token_id, path)
        except HiveError as e:  # its state directory is the manager's to break: start anyway
            log.warning("%s", e)
    if home.host_socket.exists():
        HostSocket(home.host_socket, lambda r: {}).check_free()
    recover_all(home)
    Server(home, runtime_kind, bind, port, http, app_factory).run()
    return 0
