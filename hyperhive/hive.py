"""What the web app and the daemon's parts share: the home, the runtime, the event bus,
a view of the build queue, and the daemon's process-wide state (its stop flag, the
addresses its git sockets forward from)."""

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hyperhive.daemon.gitsock import Forwarded
from hyperhive.home import Home
from hyperhive.runtime.base import Runtime
from hyperhive.wire.events import EventBus

if TYPE_CHECKING:
    from hyperhive.broker.messages import Broker
    from hyperhive.daemon.checker import CheckWorker


def no_builds() -> dict:
    return {"running": {}, "queued": {}}


@dataclass
class Hive:
    home: Home
    runtime: Runtime
    bus: EventBus = field(default_factory=EventBus)
    builds: Callable[[], dict] = no_builds
    broker: "Broker | None" = None  # the daemon's, whose long-polls its sends wake
    checks: "CheckWorker | None" = None  # the daemon's checks of proposals (queued, running)
    # Set when the daemon stops: open websockets and terminals end.
    stopping: threading.Event = field(default_factory=threading.Event)
    # The daemon-side addresses of connections an agent's git socket forwards
    # (daemon/gitsock.py), refused everything but /git/ (forge_ui/git_http.py).
    forwarded: Forwarded = field(default_factory=Forwarded)

    def __post_init__(self) -> None:
        # The home this hive hands out carries its bus, so what the workflow tells
        # (wire/notify.py) reaches this hive's subscribers, not another process.
        if self.home.bus is not self.bus:
            self.home = dataclasses.replace(self.home, bus=self.bus)
