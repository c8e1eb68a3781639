"""The tools, as the model sees them: name, description, typed parameters, all from the
operation table (hyperhive/wire/ops.py: the ops with `tool=True`).

Each tool forwards `{"op": <tool name>, **arguments}` to the daemon and returns its reply.
The server registers the ones the daemon's `whoami` lists for the caller.
"""

import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated

from pydantic import Field

from hyperhive.wire.ops import MAX_WAIT, OPS, TABLE, Op

# forward(request, timeout_seconds) -> the reply as JSON text
Forward = Callable[[dict, float], Awaitable[str]]

RECV_MARGIN = 30.0  # the socket read outlasts the wait by this much
CALL_TIMEOUT = 120.0  # every other op (a spawn writes repos; nothing here builds)

DESCRIPTIONS = {op.name: op.description for op in TABLE if op.tool}


def recv_timeout(wait_seconds: float | None) -> float:
    """How long the socket read may take for a recv: longer than the daemon may wait."""
    wait = wait_seconds if wait_seconds and wait_seconds > 0 else 0.0
    return min(wait, MAX_WAIT) + RECV_MARGIN


def signature(op: Op) -> inspect.Signature:
    """The tool's signature, which the MCP server turns into its input schema: one
    keyword per argument the model sees, typed and described; an optional one is None."""
    params = [
        inspect.Parameter(
            a.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if a.required else None,
            annotation=Annotated[a.type, Field(description=a.description)],
        )
        for a in op.args
        if a.tool
    ]
    return inspect.Signature(params, return_annotation=str)


def tool_function(op: Op, forward: Forward) -> Callable:
    """The async function of one tool: its signature is the tool's input schema."""
    sig = signature(op)

    async def tool(**arguments) -> str:
        bound = sig.bind(**arguments)
        bound.apply_defaults()
        request = {"op": op.name, **bound.arguments}
        wait = bound.arguments.get(op.waits) if op.waits else None
        timeout = recv_timeout(wait) if op.waits else CALL_TIMEOUT
        return await forward(request, timeout)

    tool.__name__ = tool.__qualname__ = op.name
    tool.__doc__ = op.description
    tool.__signature__ = sig
    return tool


def tool_functions(forward: Forward) -> dict[str, Callable]:
    """One async function per tool of the operation table."""
    return {name: tool_function(op, forward) for name, op in OPS.items() if op.tool}
