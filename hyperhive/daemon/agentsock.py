"""One socket per agent, `run/agents/<name>/agent.sock` (mode 0600): created for every agent
the hive has, removed when the agent goes away, and owned like the agent's state so the
harness of a user-namespaced container (its `agent` user) can connect."""

import logging
import threading
from typing import TYPE_CHECKING, Generic, TypeVar

from hyperhive.daemon.hostsock import AGENT_CONNECTIONS, HostSocket
from hyperhive.home import Home
from hyperhive.runtime.ownership import give, state_owner

if TYPE_CHECKING:  # gitsock (which the web app imports) builds on this module, not on ops
    from hyperhive.daemon.ops import Ops

log = logging.getLogger("hyperhive.daemon")

S = TypeVar("S")


class PerAgentSockets(Generic[S]):
    """A socket (anything with `path` and `stop()`) for every agent the hive has, in step
    with the agents; subclasses say how one is started."""

    kind = "socket"  # in the log line of a removal

    def __init__(self, home: Home):
        self.home = home
        self.lock = threading.Lock()
        self.open: dict[str, S] = {}

    def _start(self, name: str, owner: tuple[int, int] | None) -> S:
        """A listening socket for agent `name`, owned by `owner` (from `state_owner`)."""
        raise NotImplementedError

    def sync(self) -> None:
        """Open a socket for every agent that has none, close those of agents gone, and
        keep each one owned like its agent's state (a deploy may have chowned that)."""
        with self.lock:
            wanted = set(self.home.agent_names())
            for name in sorted(set(self.open) - wanted):
                self.open.pop(name).stop()
                log.info("%s: %s removed", name, self.kind)
            for name in sorted(wanted):
                owner = state_owner(self.home, name)
                if name in self.open:
                    give(self.open[name].path, owner)
                else:
                    self.open[name] = self._start(name, owner)

    def stop(self) -> None:
        with self.lock:
            for sock in self.open.values():
                sock.stop()
            self.open.clear()


class AgentSockets(PerAgentSockets[HostSocket]):
    def __init__(self, home: Home, ops: "Ops"):
        super().__init__(home)
        self.ops = ops

    def _start(self, name: str, owner: tuple[int, int] | None) -> HostSocket:
        sock = HostSocket(
            self.home.agent_socket(name),
            self.ops.for_agent(name),
            mode=0o600,
            unsent=self.ops.unsent,
            max_connections=AGENT_CONNECTIONS,
            many=self.ops.pipelined(name),  # a client's pipelined sends share a commit
        )
        sock.start()
        give(sock.path, owner)
        log.info("%s: listening on %s", name, sock.path)
        return sock
