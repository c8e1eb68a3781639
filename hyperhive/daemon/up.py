"""`hyperhive up`: recover, then run the build worker, the host socket and the web server
until SIGINT or SIGTERM."""

import logging
import signal
import sys
import threading

from werkzeug.serving import make_server

from forge_ui import create_app
from hyperhive.agents import init_hive
from hyperhive.daemon.hostsock import HostSocket
from hyperhive.daemon.worker import BuildWorker
from hyperhive.errors import HiveError
from hyperhive.home import Home
from hyperhive.names import check_agent_name
from hyperhive.runtime import get_runtime
from hyperhive.workflow.deploy import recover
from hyperhive.workflow.lock import build_lock, locked

log = logging.getLogger("hyperhive.daemon")


def recover_all(home: Home) -> None:
    """End builds that a crash interrupted. An agent whose build lock is held has a build
    running in another process (a CLI deploy): that one is alive, not interrupted."""
    for name in home.agent_names():
        with locked(build_lock(home.applied_dir(name)), blocking=False) as free:
            if free:
                for a in recover(home, name):
                    log.warning("%s: interrupted build marked failed", a.target)


def host_handler(worker: BuildWorker):
    def handle(request: dict) -> dict:
        op = request.get("op")
        if op == "ping":
            return {}
        if op == "deploy":
            name, approval_id = request.get("agent"), request.get("id")
            if not isinstance(approval_id, int) or isinstance(approval_id, bool):
                raise HiveError(f"deploy needs an integer id, not {approval_id!r}")
            return {"ahead": worker.submit(check_agent_name(name), approval_id)}
        raise HiveError(f"unknown op {op!r}")

    return handle


def serve(home: Home, runtime_kind: str, bind: str, port: int) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    runtime = get_runtime(runtime_kind, home)
    if init_hive(home, runtime, "operator"):
        log.info("initialized a new hive at %s with the manager agent", home.root)
    recover_all(home)
    worker = BuildWorker(home, runtime)
    sock = HostSocket(home.host_socket, host_handler(worker))
    sock.start()
    try:
        web = make_server(bind, port, create_app(home, runtime, worker.status), threaded=True)
    except OSError:
        sock.stop()
        raise
    for target in worker.resume():
        log.info("%s: resuming a build queued before the last stop", target)

    def stop(signum, _frame):
        log.info("received %s, stopping", signal.Signals(signum).name)
        threading.Thread(target=web.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "hyperhive up: home %s, runtime %s, http://%s:%d/",
        home.root,
        runtime_kind,
        bind,
        web.server_port,
    )
    sys.stderr.flush()
    web.serve_forever()
    sock.stop()
    worker.stop()
    log.info("stopped")
    return 0
