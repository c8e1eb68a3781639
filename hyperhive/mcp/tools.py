"""The tools, as the model sees them: name, description, typed parameters, all from the
operation table (hyperhive/wire/ops.py: the ops with `tool=True`).

Each tool forwards `{"op": <tool name>, **arguments}` to the daemon and returns its reply.
The server registers the ones the daemon's `whoami` lists for the caller. The input
schemas are JSON Schema built here from the table's Python types (str, int, float, bool,
dict, `list[X]`, `X | None`), and a call's arguments are checked against the same types,
so the daemon gets what the schema promised (an int where a number is asked is sent as a
float, as JSON Schema's "number" allows).
"""

import types
import typing

from hyperhive.wire.ops import MAX_WAIT, OPS, TABLE, Op

RECV_MARGIN = 30.0  # the socket read outlasts the wait by this much
CALL_TIMEOUT = 120.0  # every other op (a spawn writes repos; nothing here builds)

DESCRIPTIONS = {op.name: op.description for op in TABLE if op.tool}
JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object"}


class ToolError(Exception):
    """A tool call that failed: its message goes back to the model as the tool's error."""


def recv_timeout(wait_seconds: float | None) -> float:
    """How long the socket read may take for a recv: longer than the daemon may wait."""
    wait = wait_seconds if wait_seconds and wait_seconds > 0 else 0.0
    return min(wait, MAX_WAIT) + RECV_MARGIN


def _optional(t: object) -> tuple[object, bool]:
    """(the type, whether null is allowed): `X | None` is (X, True)."""
    if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union:
        inner = [a for a in typing.get_args(t) if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"an argument's type is one type or one type | None, not {t}")
        return inner[0], True
    return t, False


def type_schema(t: object) -> dict:
    """The JSON Schema of one of the table's argument types."""
    t, nullable = _optional(t)
    if typing.get_origin(t) is list:
        (item,) = typing.get_args(t)
        schema = {"type": "array", "items": type_schema(item)}
    elif t in JSON_TYPES:
        schema = {"type": JSON_TYPES[t]}
    else:
        raise TypeError(f"no JSON Schema for the argument type {t}")
    return {"anyOf": [schema, {"type": "null"}]} if nullable else schema


def input_schema(op: Op) -> dict:
    """The tool's input schema: one property per argument the model sees, described in
    the table's words; the required ones listed, an optional one defaulting to null."""
    properties, required = {}, []
    for a in op.args:
        if not a.tool:
            continue
        prop = {**type_schema(a.type), "description": a.description}
        if a.required:
            required.append(a.name)
        else:
            prop["default"] = None
        properties[a.name] = prop
    schema: dict = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def tool_entry(op: Op) -> dict:
    """The tool as `tools/list` describes it."""
    entry = {"name": op.name, "description": op.description, "inputSchema": input_schema(op)}
    if op.read_only:
        entry["annotations"] = {"readOnlyHint": True}
    return entry


def _value(t: object, value: object, where: str) -> object:
    """`value` checked against the table's type `t` (an int accepted as a float)."""
    t, nullable = _optional(t)
    if value is None:
        if nullable:
            return None
        raise ToolError(f"{where}: null is not allowed")
    if typing.get_origin(t) is list:
        if not isinstance(value, list):
            raise ToolError(f"{where}: an array is expected")
        (item,) = typing.get_args(t)
        return [_value(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and t is not bool:
        raise ToolError(f"{where}: {JSON_TYPES[t]} expected, not a boolean")
    if not isinstance(value, t):  # type: ignore[arg-type]
        raise ToolError(f"{where}: {JSON_TYPES[t]} expected, not {type(value).__name__}")
    return value


def request(op: Op, arguments: object) -> tuple[dict, float]:
    """The daemon request of a call of `op` with the model's `arguments`, and how long its
    reply may take; ToolError naming what is wrong with the arguments."""
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise ToolError(f"{op.name}: the arguments are not an object")
    seen = {a.name: a for a in op.args if a.tool}
    unknown = sorted(set(arguments) - set(seen))
    if unknown:
        raise ToolError(f"{op.name}: unknown argument(s) {', '.join(unknown)}")
    req: dict = {"op": op.name}
    for name, a in seen.items():
        if name in arguments:
            req[name] = _value(a.type, arguments[name], f"{op.name}: argument {name}")
        elif a.required:
            raise ToolError(f"{op.name}: missing the required argument {name}")
        else:
            req[name] = None
    timeout = recv_timeout(req.get(op.waits)) if op.waits else CALL_TIMEOUT
    return req, timeout


def tool_ops() -> dict[str, Op]:
    """Every tool of the operation table, by name, in the table's order."""
    return {name: op for name, op in OPS.items() if op.tool}
