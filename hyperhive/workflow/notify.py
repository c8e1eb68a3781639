"""Telling the daemon that the workflow changed, so the forge updates live.

Inside the daemon the bus is registered here and events are published directly. Any
other process (the CLI, a hook's `hyperhive deploy`) sends a best-effort `changed`
request over `run/host.sock`; with no daemon running there is nobody to tell.
"""

import logging

from hyperhive.daemon import hostsock
from hyperhive.errors import HiveError
from hyperhive.home import Home

log = logging.getLogger("hyperhive.notify")

# Set by the daemon process to its EventBus.publish; None everywhere else.
_publish = None


def set_publisher(publish) -> None:
    global _publish
    _publish = publish


def changed(home: Home, name: str, ref: str) -> None:
    """A tag was written in `name`'s applied repo."""
    if _publish is not None:
        _publish("state", {"agent": name, "ref": ref})
        return
    try:
        hostsock.call(home.host_socket, {"op": "changed", "agent": name, "ref": ref}, timeout=2)
    except (hostsock.DaemonUnavailable, HiveError, OSError) as e:
        log.debug("no daemon told of %s %s: %s", name, ref, e)


def wrote_messages(home: Home) -> None:
    """Another process wrote to hive.db: wake the daemon's waiting `recv`s."""
    try:
        hostsock.call(home.host_socket, {"op": "wake"}, timeout=2)
    except (hostsock.DaemonUnavailable, HiveError, OSError) as e:
        log.debug("no daemon woken: %s", e)


def build_line(name: str, approval_id: int, line: str) -> None:
    """A build running in the daemon printed a line (builds elsewhere are followed
    through their log file)."""
    if _publish is not None:
        _publish(f"log:{name}:{approval_id}", line)


def check_line(name: str, approval_id: int, line: str) -> None:
    """A check running in the daemon printed a line (`check:<name>:<id>`; the review page
    follows the log file, so checks elsewhere are followed too)."""
    if _publish is not None:
        _publish(f"check:{name}:{approval_id}", line)


def stats_recorded(agent: str) -> None:
    """Telemetry rows were written for `agent` ("" = hive-wide): charts redraw. Only the
    daemon records telemetry, so there is no other process to tell."""
    if _publish is not None:
        _publish("stats", {"agent": agent})
