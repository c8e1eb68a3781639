"""Who the caller is: the daemon's `whoami` reply for the socket (the socket IS the
identity), asked before the server reads anything, so a missing daemon is reported at
once."""

from pathlib import Path

from hyperhive.errors import HiveError
from hyperhive.wire.protocol import DaemonUnavailable, call

WHOAMI_TIMEOUT = 10.0


def whoami(path: Path) -> dict:
    """Ask the daemon who this socket speaks for; HiveError (one line) if it can't say."""
    try:
        reply = call(path, {"op": "whoami"}, timeout=WHOAMI_TIMEOUT)
    except DaemonUnavailable as e:
        raise HiveError(f"no hive daemon answers on {path}: {e}") from None
    except HiveError as e:
        raise HiveError(f"the hive daemon refused whoami on {path}: {e}") from None
    except (OSError, ValueError) as e:  # permissions, a timeout, a garbled reply
        raise HiveError(f"cannot ask the hive daemon on {path}: {e}") from None
    tools = reply.get("tools")
    if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
        raise HiveError(f"the hive daemon on {path} sent no tool list in its whoami reply")
    return reply
