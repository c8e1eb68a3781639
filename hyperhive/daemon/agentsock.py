"""One socket per agent, `run/agents/<name>/agent.sock` (mode 0600): created for every agent
the hive has, removed when the agent goes away, and owned like the agent's state so the
harness of a user-namespaced container (its `agent` user) can connect."""

import logging
import threading

from hyperhive.daemon.hostsock import HostSocket
from hyperhive.daemon.ops import Ops
from hyperhive.home import Home
from hyperhive.runtime.ownership import give, state_owner

log = logging.getLogger("hyperhive.daemon")


class AgentSockets:
    def __init__(self, home: Home, ops: Ops):
        self.home, self.ops = home, ops
        self.lock = threading.Lock()
        self.open: dict[str, HostSocket] = {}

    def sync(self) -> None:
        """Open a socket for every agent that has none; close those of agents gone; keep
        each owned like its agent's state (a deploy may have chowned that)."""
        with self.lock:
            wanted = set(self.home.agent_names())
            for name in sorted(set(self.open) & wanted):
                give(self.open[name].path, state_owner(self.home, name))
            for name in sorted(wanted - set(self.open)):
                sock = HostSocket(
                    self.home.agent_socket(name),
                    self.ops.for_agent(name),
                    mode=0o600,
                    unsent=self.ops.unsent,
                )
                sock.start()
                give(sock.path, state_owner(self.home, name))
                self.open[name] = sock
                log.info("%s: listening on %s", name, sock.path)
            for name in sorted(set(self.open) - wanted):
                self.open.pop(name).stop()
                log.info("%s: socket removed", name)

    def stop(self) -> None:
        with self.lock:
            for sock in self.open.values():
                sock.stop()
            self.open.clear()
