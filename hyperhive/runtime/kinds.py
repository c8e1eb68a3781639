"""The runtimes by name (`--runtime`)."""

from hyperhive.errors import HiveError
from hyperhive.home import Home
from hyperhive.runtime.base import Runtime
from hyperhive.runtime.local import LocalRuntime
from hyperhive.runtime.nixos_container import NixosContainerRuntime

RUNTIMES = {"local": LocalRuntime, "nixos-container": NixosContainerRuntime}


def get_runtime(kind: str, home: Home) -> Runtime:
    if kind not in RUNTIMES:
        raise HiveError(f"unknown runtime {kind!r}: choose one of {', '.join(sorted(RUNTIMES))}")
    return RUNTIMES[kind](home)
