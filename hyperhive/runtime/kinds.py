"""The runtimes by name (`--runtime`). A backend's module is imported only when that
runtime is asked for: naming them (the CLI's `--runtime` choices) loads none."""

from hyperhive.errors import HiveError
from hyperhive.home import Home
from hyperhive.runtime.base import Runtime

RUNTIMES = ("local", "nixos-container")


def runtime_class(kind: str) -> type[Runtime]:
    """The runtime named `kind`; HiveError naming the choices if there is none."""
    if kind == "local":
        from hyperhive.runtime.local import LocalRuntime

        return LocalRuntime
    if kind == "nixos-container":
        from hyperhive.runtime.nixos_container import NixosContainerRuntime

        return NixosContainerRuntime
    raise HiveError(f"unknown runtime {kind!r}: choose one of {', '.join(sorted(RUNTIMES))}")


def get_runtime(kind: str, home: Home) -> Runtime:
    return runtime_class(kind)(home)
