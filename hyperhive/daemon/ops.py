"""What each socket may ask, answered. The socket a request arrives on is the caller's
identity: `run/agents/<name>/agent.sock` speaks for `<name>`, `run/host.sock` for the
operator. Which ops there are and who may call each is the operation table
(hyperhive/wire/ops.py); each op is answered by the `op_<name>` method here."""

from collections.abc import Callable, Iterator

from hyperhive import spawn
from hyperhive.agents import runtime_state
from hyperhive.broker import questions
from hyperhive.broker.health import Health
from hyperhive.broker.messages import MANAGER, OPERATOR, Broker
from hyperhive.broker.stats import Stats
from hyperhive.daemon.worker import BuildWorker
from hyperhive.errors import BadInput, HiveError
from hyperhive.hive import Hive
from hyperhive.names import check_agent_name, format_target, parse_target
from hyperhive.policy import deployed_policy
from hyperhive.wire import notify
from hyperhive.wire.ops import AGENTS, HOST, ROLES, lookup, tools_for
from hyperhive.workflow import checks, comments
from hyperhive.workflow.approvals import Approvals, follows_id

Handler = Callable[[dict], dict]


def role(name: str) -> str:
    return "manager" if name == MANAGER else "agent"


def tools(name: str) -> list[str]:
    return tools_for(role(name))


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
        return deployed_policy(self.hive.home, name)

    def handler(self, name: str) -> Callable[[str, dict], dict]:
        """The `op_<name>` method answering op `name` (a test checks the table has one)."""
        return getattr(self, f"op_{name}")

    # -- agent sockets -----------------------------------------------------------------

    def for_agent(self, name: str) -> Handler:
        caller = role(name)

        def handle(request: dict) -> dict:
            op = lookup(request.get("op"))
            agents = op.callers & AGENTS if op else set()
            if not agents:  # none, or the host's: an agent's socket does not know it
                raise HiveError(f"unknown op {request.get('op')!r}")
            if caller not in agents:
                only = "/".join(r for r in ROLES if r in agents)
                raise HiveError(f"{op.name} is {only}-only; this socket belongs to {name}")
            return self.handler(op.name)(name, request)

        return handle

    def pipelined(self, name: str) -> Callable[[list[dict]], Iterator]:
        """Requests a client wrote before reading the replies (daemon/hostsock.py), answered
        in order as `for_agent(name)` would, one by one, except that a run of sends is
        stored together (Broker.send_many: their commits shared, each still answered only
        once it is stored). Yields the results (the reply's fields or the error raised) in
        pieces as they are known, a run of sends as one; a request is run only when the
        socket asks for more."""
        one = self.for_agent(name)
        send = lookup("send")
        may_send = send is not None and role(name) in send.callers

        def many(requests: list[dict]) -> Iterator:
            i = 0
            while i < len(requests):
                end = i
                while end < len(requests) and requests[end].get("op") == "send":
                    end += 1
                if end - i > 1 and may_send:
                    yield self._sends(name, requests[i:end])  # their replies in one write
                    i = end
                    continue
                try:
                    result = one(requests[i])
                except Exception as e:  # the socket replies with it, as for one request
                    result = e
                yield [result]
                i += 1

        return many

    def _sends(self, name: str, requests: list[dict]) -> list:
        sent = self.broker.send_many(name, [(r.get("to"), r.get("body")) for r in requests])
        if any(not isinstance(r, BaseException) for r in sent):
            notify.changed(self.hive.home, name, notify.MESSAGE)
        return [r if isinstance(r, BaseException) else {"id": r} for r in sent]

    def unsent(self, reply: dict) -> None:
        self.broker.requeue([m["id"] for m in reply.get("messages", [])])

    def op_whoami(self, name: str, request: dict) -> dict:
        return {"name": name, "role": role(name), "policy": self.policy(name), "tools": tools(name)}

    def op_send(self, name: str, request: dict) -> dict:
        message_id = self.broker.send(name, request.get("to"), request.get("body"))
        notify.changed(self.hive.home, name, notify.MESSAGE)
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
        target = check_agent_name(_str(request, "name"))
        spawn.init_config(self.hive.home, target, name)
        return {"name": target, "remote": f"{target}/config.git"}

    def op_request_spawn_draft(self, name: str, request: dict) -> dict:
        target = check_agent_name(_str(request, "name"))
        spawn.spawn_draft(self.hive.home, target, name)
        notify.changed(self.hive.home, target, "draft")
        return {"name": target, "remote": f"{target}/config.git"}

    def op_draft_write_state(self, name: str, request: dict) -> dict:
        target = check_agent_name(_str(request, "name"))
        content = request.get("content")
        return spawn.write_draft_state(self.hive.home, target, _str(request, "path"), content)

    def op_request_spawn(self, name: str, request: dict) -> dict:
        target = check_agent_name(_str(request, "name"))
        a = spawn.spawn(self.hive.home, target, self.hive.runtime, name)
        return {"approval": a.target}

    def op_request_spawn_commit(self, name: str, request: dict) -> dict:
        target = check_agent_name(_str(request, "name"))
        commit = _str(request, "commit_ref")
        a = spawn.spawn_commit(self.hive.home, target, commit, self.hive.runtime, name)
        return {"approval": a.target}

    def op_request_apply_commit(self, name: str, request: dict) -> dict:
        target = check_agent_name(_str(request, "name"))
        rollback = request.get("rollback")  # the MCP tool sends null when left out
        if rollback is None:
            rollback = False
        if not isinstance(rollback, bool):
            raise HiveError("`rollback` must be true or false")
        follows = follows_id(target, request.get("follows"))
        a = Approvals(self.hive.home, target).propose(
            _str(request, "commit"), name, rollback=rollback, follows=follows
        )
        return {"approval": a.target}

    def op_review_reply(self, name: str, request: dict) -> dict:
        """The manager answers one of the operator's review comments (workflow/comments)."""
        agent, approval_id = parse_target(_str(request, "approval"))
        number = request.get("comment")
        if isinstance(number, bool) or not isinstance(number, int):
            raise BadInput(f"comment must be a comment's number, not {number!r}")
        c = comments.add(
            self.hive.home, agent, approval_id, name, request.get("text"), reply_to=number
        )
        target = format_target(agent, approval_id)
        # the operator's inbox (the dashboard) shows the answer without a look at the page
        self.broker.send(
            name,
            OPERATOR,
            f"review_reply: {target}\ncomment {c.number}, a reply to comment {number} on "
            f"{c.anchor.describe()}\n\n{c.text}",
        )
        notify.changed(self.hive.home, agent, comments.ref_of(approval_id).decode())
        return {"approval": target, "comment": c.number}

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
        op = lookup(request.get("op"))
        if op is None or HOST not in op.callers:
            raise HiveError(f"unknown op {request.get('op')!r}")
        return self.handler(op.name)(OPERATOR, request)

    def op_ping(self, caller: str, request: dict) -> dict:
        return {}

    def op_changed(self, caller: str, request: dict) -> dict:
        self.hive.bus.publish("state", {"agent": request.get("agent"), "ref": request.get("ref")})
        return {}

    def op_wake(self, caller: str, request: dict) -> dict:
        """Another process wrote to hive.db."""
        self.broker.wake()
        self.hive.bus.publish("state", {"ref": "message"})
        return {}

    def op_check(self, caller: str, request: dict) -> dict:
        """(Re)check a proposal: `rerun` even when it has a result."""
        name, approval_id = request.get("agent"), request.get("id")
        if not isinstance(approval_id, int) or isinstance(approval_id, bool):
            raise HiveError(f"check needs an integer id, not {approval_id!r}")
        rerun = request.get("rerun", False) is True
        return self._checks().submit(check_agent_name(name), approval_id, rerun)

    def op_checks(self, caller: str, request: dict) -> dict:
        """What the check worker has queued and running."""
        return self._checks().status()

    def op_deploy(self, caller: str, request: dict) -> dict:
        name, approval_id = request.get("agent"), request.get("id")
        if not isinstance(approval_id, int) or isinstance(approval_id, bool):
            raise HiveError(f"deploy needs an integer id, not {approval_id!r}")
        return {"ahead": self.worker.submit(check_agent_name(name), approval_id)}
