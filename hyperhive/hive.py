"""What the web app and the daemon's parts share: the home, the runtime, the event bus
and a view of the build queue."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hyperhive.daemon.events import EventBus
from hyperhive.home import Home
from hyperhive.runtime.base import Runtime

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
