"""What each socket may ask. The socket a request arrives on is the caller's identity:
`run/agents/<name>/agent.sock` speaks for `<name>`, `run/host.sock` for the operator."""

from collections.abc import Callable

from hyperhive.agents import runtime_state
from hyperhive.broker import questions
from hyperhive.broker.health import Health
from hyperhive.broker.messages import MANAGER, OPERATOR, Broker
from hyperhive.broker.stats import Stats
from hyperhive.daemon.worker import BuildWorker
from hyperhive.errors import BadInput, HiveError
from hyperhive.hive import Hive
from hyperhive.names import check_agent_name
from hyperhive.workflow import checks, notify
from hyperhive.workflow.approvals import Approvals

AGENT_TOOLS = ["send", "recv", "whoami", "list_peers"]
MANAGER_TOOLS = [
    *AGENT_TOOLS,
    "ask_operator",
    "request_init_config",
    "request_apply_commit",
    "request_spawn",
    "request_spawn_draft",
    "request_spawn_commit",
    "draft_write_state",
    "approvals",
    "agent_history",
]
# Ops of the harness (hyperhive/harness/), not MCP tools: `whoami` does not list them and
# `hyperhive mcp` does not serve them (nor `recv`'s `lease` flag). Any process on the
# agent's socket may call them; a forged one only touches the agent's own telemetry or
# messages (an early ack is a plain recv's delivery, a stray release a repeat, a stray
# give_up a dead letter the operator can requeue).
HARNESS_OPS = ["turn_report", "ack", "release", "give_up"]

Handler = Callable[[dict], dict]


def role(name: str) -> str:
    return "manager" if name == MANAGER else "agent"


def tools(name: str) -> list[str]:
    return MANAGER_TOOLS if name == MANAGER else AGENT_TOOLS


def _str(request: dict, key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str) or not value:
        raise HiveError(f"`{key}` must be a non-empty string")
    return value


class Ops:
    def __init__(self, hive: Hive, broker: Broker, worker: BuildWorker):
        self.hive, self.broker, self.worker = hive, broker, worker
        self.stats = Stats(hive.home, broker.db)
        self.health = Health(hive.home)

    def policy(self, name: str) -> dict:
        from hyperhive.runtime.policy import deployed_policy

        return deployed_policy(self.hive.home, name)

    # -- agent sockets -----------------------------------------------------------------

    def for_agent(self, name: str) -> Handler:
        def handle(request: dict) -> dict:
            op = request.get("op")
            if op in HARNESS_OPS:
                return getattr(self, f"op_{op}")(name, request)
            if op not in MANAGER_TOOLS:
                raise HiveError(f"unknown op {op!r}")
            if op not in tools(name):
                raise HiveError(f"{op} is manager-only; this socket belongs to {name}")
            return getattr(self, f"op_{op}")(name, request)

        return handle

    def unsent(self, reply: dict) -> None:
        self.broker.requeue([m["id"] for m in reply.get("messages", [])])

    def op_whoami(self, name: str, request: dict) -> dict:
        return {"name": name, "role": role(name), "policy": self.policy(name), "tools": tools(name)}

    def op_send(self, name: str, request: dict) -> dict:
        message_id = self.broker.send(name, request.get("to"), request.get("body"))
        notify.changed(self.hive.home, name, "message")
        return {"id": message_id}

    def op_recv(self, name: str, request: dict) -> dict:
        lease = request.get("lease", False)
        if not isinstance(lease, bool):
            raise BadInput(f"lease must be true or false, not {lease!r}")
        return {"messages": self.broker.recv(name, request.get("wait_seconds"), lease)}

    def op_ack(self, name: str, request: dict) -> dict:
        """The harness has recorded the messages its leased recv returned."""
        return {"acked": self.broker.ack(name, request.get("ids"))}

    def op_release(self, name: str, request: dict) -> dict:
        """The harness starts (or lost a recv's reply): what it held unacknowledged was
        never recorded, so back to the inbox with it."""
        return {"released": self.broker.release(name)}

    def op_give_up(self, name: str, request: dict) -> dict:
        """The harness gave up on messages after their failed turns: dead letters, kept
        for the operator to see and requeue."""
        dead = self.broker.give_up(name, request.get("ids"), request.get("reason"))
        if dead:
            notify.changed(self.hive.home, name, "dead")
        return {"dead": dead}

    def op_turn_report(self, name: str, request: dict) -> dict:
        """Store one turn's telemetry (broker/stats.py). The inbox depth is the broker's,
        counted now: what still waits after the turn."""
        report = request.get("report")
        if not isinstance(report, dict):
            raise BadInput("turn_report needs the turn's `report` object")
        depth, _ = self.broker.waiting([name])[name]
        rows = self.stats.record_turn(name, {**report, "inbox_depth": depth})
        # the agent's health: a failed turn's error (one line) until a turn succeeds
        if self.health.turn(name, report["exit"], report.get("error"), report.get("exit_code")):
            notify.changed(self.hive.home, name, "health")
        return {"rows": rows}

    def op_list_peers(self, name: str, request: dict) -> dict:
        home, problems = self.hive.home, self.health.all()
        peers = [
            {
                "name": n,
                "role": role(n),
                "state": runtime_state(home, n, self.hive.runtime, problems.get(n, {}))["state"],
            }
            for n in home.agent_names()
            if n != name
        ]
        return {"peers": [*peers, {"name": OPERATOR, "role": "operator", "state": "human"}]}

    def op_ask_operator(self, name: str, request: dict) -> dict:
        qid = questions.ask(self.broker, name, request.get("question"), request.get("options"))
        notify.changed(self.hive.home, name, "question")
        return {"id": qid}

    # A config repo is reached over the git remote (`$HYPERHIVE_GIT_URL/<remote>`), the
    # same from the manager's container and from a local harness: host paths are not.

    def op_request_init_config(self, name: str, request: dict) -> dict:
        from hyperhive import spawn

        target = check_agent_name(_str(request, "name"))
        spawn.init_config(self.hive.home, target, name)
        return {"name": target, "remote": f"{target}/config.git"}

    def op_request_spawn_draft(self, name: str, request: dict) -> dict:
        from hyperhive import spawn

        target = check_agent_name(_str(request, "name"))
        spawn.spawn_draft(self.hive.home, target, name)
        notify.changed(self.hive.home, target, "draft")
        return {"name": target, "remote": f"{target}/config.git"}

    def op_draft_write_state(self, name: str, request: dict) -> dict:
        from hyperhive import spawn

        target = check_agent_name(_str(request, "name"))
        content = request.get("content")
        return spawn.write_draft_state(self.hive.home, target, _str(request, "path"), content)

    def op_request_spawn(self, name: str, request: dict) -> dict:
        from hyperhive import spawn

        target = check_agent_name(_str(request, "name"))
        a = spawn.spawn(self.hive.home, target, self.hive.runtime, name)
        return {"approval": a.target}

    def op_request_spawn_commit(self, name: str, request: dict) -> dict:
        from hyperhive import spawn

        target = check_agent_name(_str(request, "name"))
        commit = _str(request, "commit_ref")
        a = spawn.spawn_commit(self.hive.home, target, commit, self.hive.runtime, name)
        return {"approval": a.target}

    def op_request_apply_commit(self, name: str, request: dict) -> dict:
        target = check_agent_name(_str(request, "name"))
        a = Approvals(self.hive.home, target).propose(_str(request, "commit"), name)
        return {"approval": a.target}

    def op_approvals(self, name: str, request: dict) -> dict:
        home = self.hive.home
        found = [a for n in home.agent_names() for a in Approvals(home, n).all(True)]
        live = checks.live_states(self.hive.checks.status()) if self.hive.checks else {}
        return {
            "approvals": [
                {**a.to_json(), "check": checks.check_json(home, a.agent, a.id, live.get(a.target))}
                for a in found
            ]
        }

    def op_agent_history(self, name: str, request: dict) -> dict:
        live = checks.live_states(self.hive.checks.status()) if self.hive.checks else {}
        return checks.history_json(self.hive.home, check_agent_name(_str(request, "name")), live)

    # -- the host socket (the operator, the CLI) ----------------------------------------

    def _checks(self):
        if self.hive.checks is None:
            raise HiveError("this daemon runs no checks")
        return self.hive.checks

    def for_host(self, request: dict) -> dict:
        op = request.get("op")
        if op == "ping":
            return {}
        if op == "changed":
            self.hive.bus.publish(
                "state", {"agent": request.get("agent"), "ref": request.get("ref")}
            )
            return {}
        if op == "wake":  # another process wrote to hive.db
            self.broker.wake()
            self.hive.bus.publish("state", {"ref": "message"})
            return {}
        if op == "check":  # (re)check a proposal: `rerun` even when it has a result
            name, approval_id = request.get("agent"), request.get("id")
            if not isinstance(approval_id, int) or isinstance(approval_id, bool):
                raise HiveError(f"check needs an integer id, not {approval_id!r}")
            rerun = request.get("rerun", False) is True
            return self._checks().submit(check_agent_name(name), approval_id, rerun)
        if op == "checks":  # what the check worker has queued and running
            return self._checks().status()
        if op == "deploy":
            name, approval_id = request.get("agent"), request.get("id")
            if not isinstance(approval_id, int) or isinstance(approval_id, bool):
                raise HiveError(f"deploy needs an integer id, not {approval_id!r}")
            return {"ahead": self.worker.submit(check_agent_name(name), approval_id)}
        raise HiveError(f"unknown op {op!r}")
