"""The operation table (hyperhive/wire/ops.py) is the only list of ops: the daemon answers
each with its `op_<name>` handler and refuses it on a socket whose caller the row does
not name, whatever the op. In process: the handlers are replaced by a recorder, so this
checks the dispatch alone (the ops themselves are tested over real sockets elsewhere)."""

import ast
from pathlib import Path

import pytest

from hyperhive.broker.messages import Broker
from hyperhive.daemon.ops import Ops
from hyperhive.errors import HiveError
from hyperhive.hive import Hive
from hyperhive.home import Home
from hyperhive.wire.ops import AGENT, HOST, MANAGER, OPS, TABLE, lookup, tools_for


class Recorded(Ops):
    def handler(self, name: str):
        return lambda caller, request: {"by": (name, caller)}


@pytest.fixture(scope="module")
def ops(tmp_path_factory):
    home = Home(tmp_path_factory.mktemp("ops") / "hive")  # the dispatch reads nothing of it
    home.root.mkdir()
    broker = Broker(home)
    yield Recorded(Hive(home, runtime=None), broker, None)
    broker.close()


def test_every_row_has_a_handler_and_every_handler_a_row():
    handlers = {name[3:] for name in dir(Ops) if name.startswith("op_")}
    assert handlers == set(OPS)
    assert len(TABLE) == len(OPS)  # no name twice
    for op in TABLE:
        assert op.callers and op.callers <= {AGENT, MANAGER, HOST}, op.name
        assert op.description, op.name
        assert not (op.tool and HOST in op.callers), f"{op.name}: a tool is the agents'"
        assert op.waits is None or op.waits in [a.name for a in op.args]


@pytest.mark.parametrize("op", TABLE, ids=lambda op: op.name)
def test_each_socket_takes_exactly_the_ops_its_caller_may_make(ops, op):
    sockets = {AGENT: ops.for_agent("alice"), MANAGER: ops.for_agent("manager")}
    for role, handle in sockets.items():
        name = "manager" if role == MANAGER else "alice"
        if role in op.callers:
            assert handle({"op": op.name}) == {"by": (op.name, name)}
        elif HOST in op.callers and not op.callers & {AGENT, MANAGER}:
            with pytest.raises(HiveError, match=f"unknown op '{op.name}'"):
                handle({"op": op.name})
        else:
            with pytest.raises(HiveError, match=f"{op.name} is manager-only; this socket"):
                handle({"op": op.name})
    if HOST in op.callers:
        assert ops.for_host({"op": op.name}) == {"by": (op.name, "operator")}
    else:
        with pytest.raises(HiveError, match=f"unknown op '{op.name}'"):
            ops.for_host({"op": op.name})


@pytest.mark.parametrize("bad", [None, "", "nope", ["send"], {"op": "send"}, 7])
def test_an_op_not_in_the_table_is_unknown_everywhere(ops, bad):
    assert lookup(bad) is None
    for handle in (ops.for_agent("alice"), ops.for_agent("manager"), ops.for_host):
        with pytest.raises(HiveError, match="unknown op"):
            handle({"op": bad})


def test_whoami_lists_the_tools_of_the_callers_role():
    assert tools_for(AGENT) == [op.name for op in TABLE if op.tool and AGENT in op.callers]
    assert set(tools_for(AGENT)) < set(tools_for(MANAGER))
    assert tools_for(HOST) == []
    assert not {"turn_report", "ack", "release", "give_up", "ping"} & set(tools_for(MANAGER))


def test_every_request_the_package_sends_names_a_row_with_its_arguments():
    """The clients (CLI, harness, MCP identity, notify, the socket's own ping) spell
    requests as dict literals: each names an op of the table, with arguments it has."""
    root = Path(__file__).resolve().parents[1]
    sent = []
    for path in sorted([*root.glob("hyperhive/**/*.py"), *root.glob("forge_ui/**/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Dict):
                continue
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
            op = dict(zip(keys, node.values, strict=False)).get("op")
            if isinstance(op, ast.Constant) and isinstance(op.value, str):
                sent.append((path.name, op.value, [k for k in keys if k != "op"]))
    assert {op for _, op, _ in sent} >= {"whoami", "recv", "ack", "turn_report", "deploy"}
    for where, op, args in sent:
        assert op in OPS, f"{where} sends {op!r}, which the table does not have"
        assert set(args) <= {a.name for a in OPS[op].args}, f"{where}: {op} {args}"
