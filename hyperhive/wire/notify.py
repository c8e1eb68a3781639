"""Telling the daemon that the workflow changed, so the forge updates live.

Inside the daemon the home carries the hive's event bus (`Home.bus`, set by `Hive`) and
events are published on it directly. Any other process (the CLI, a hook's `hyperhive
deploy`) sends a best-effort `changed` request over `run/host.sock`; with no daemon
running there is nobody to tell.
"""

import logging

from hyperhive.errors import HiveError
from hyperhive.home import Home
from hyperhive.wire.protocol import DaemonUnavailable, call

log = logging.getLogger("hyperhive.notify")

MESSAGE = "message"  # the `ref` of a `state` event that says only that messages were sent


def is_message(topic: str, data: object) -> bool:
    """A `state` event that says only that messages were sent: what a subscriber that
    follows agents and proposals skips (`EventBus.subscribe(skip=…)`); one comes per send."""
    return topic == "state" and isinstance(data, dict) and data.get("ref") == MESSAGE


def changed(home: Home, name: str, ref: str) -> None:
    """A tag was written in `name`'s applied repo."""
    if home.bus is not None:
        home.bus.publish("state", {"agent": name, "ref": ref})
        return
    try:
        call(home.host_socket, {"op": "changed", "agent": name, "ref": ref}, timeout=2)
    except (DaemonUnavailable, HiveError, OSError) as e:
        log.debug("no daemon told of %s %s: %s", name, ref, e)


def wrote_messages(home: Home) -> None:
    """Another process wrote to hive.db: wake the daemon's waiting `recv`s."""
    try:
        call(home.host_socket, {"op": "wake"}, timeout=2)
    except (DaemonUnavailable, HiveError, OSError) as e:
        log.debug("no daemon woken: %s", e)


def build_line(home: Home, name: str, approval_id: int, line: str) -> None:
    """A build running in the daemon printed a line (builds elsewhere are followed
    through their log file)."""
    if home.bus is not None:
        home.bus.publish(f"log:{name}:{approval_id}", line)


def check_line(home: Home, name: str, approval_id: int, line: str) -> None:
    """A check running in the daemon printed a line (`check:<name>:<id>`; the review page
    follows the log file, so checks elsewhere are followed too)."""
    if home.bus is not None:
        home.bus.publish(f"check:{name}:{approval_id}", line)


def stats_recorded(home: Home, agent: str) -> None:
    """Telemetry rows were written for `agent` ("" = hive-wide): charts redraw. Only the
    daemon records telemetry, so there is no other process to tell."""
    if home.bus is not None:
        home.bus.publish("stats", {"agent": agent})
