"""What every runtime offers. Build output goes to `emit` one line at a time, as produced."""

from collections.abc import Callable
from typing import Protocol

Emit = Callable[[str], None]


class BuildError(Exception):
    """The build of an agent's config failed; the message says why in one line."""


class Runtime(Protocol):
    def create(self, name: str) -> None:
        """Prepare a new agent (directories, container definition)."""

    def update(self, name: str, rev: str, emit: Emit) -> None:
        """Build the agent's config at `rev` and switch to it; raise BuildError on failure."""

    def status(self, name: str) -> dict:
        """`{"state": ..., "revision": ...}` as the runtime sees the agent now."""
