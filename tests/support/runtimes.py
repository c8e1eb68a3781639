"""Stand-in runtimes: what the supervisor and the health code ask of a runtime, recorded
instead of done."""

from hyperhive.runtime import record


class StandIn:
    """A runtime that records what the supervisor asks of it."""

    def __init__(self, supervised: bool):
        self.supervised = supervised
        self.states: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []
        self.on_exit = None

    def watch(self, on_exit):
        self.on_exit = on_exit

    def start(self, name, emit=None):
        self.calls.append(("start", name))

    def stop(self, name, emit=None):
        self.calls.append(("stop", name))

    def status(self, name):
        return {"state": self.states.get(name, "up"), "revision": "r"}

    def log_tail(self, name, lines=40):
        return [f"{name} line {i}" for i in range(3)]


def set_deployed(home, name, rev):
    record.revision_file(home, name).write_text(rev + "\n")
