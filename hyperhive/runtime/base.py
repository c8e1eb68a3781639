"""What every runtime offers. Build output goes to `emit` one line at a time, as produced."""

from collections.abc import Callable
from typing import Protocol

Emit = Callable[[str], None]


class BuildError(Exception):
    """The build of an agent's config failed; the message says why in one line."""


class Runtime(Protocol):
    def create(self, name: str) -> None:
        """Prepare a new agent (directories, container definition). Idempotent.

        Called when the agent's applied repo is created (`agent create`, `spawn`,
        `spawn_commit`), before its first config is even approved: nothing may run yet.
        What needs a deployed config (a container built from `meta#<name>`) is created
        by the first `update` at the latest: an agent exists in the runtime from its
        first successful deploy on."""

    def update(self, name: str, rev: str, emit: Emit) -> None:
        """Build the agent's config at `rev` and switch to it; raise BuildError on failure.
        Must refuse (BuildError) an agent marked destroyed (`Home.is_destroyed`)."""

    def destroy(self, name: str) -> None:
        """Stop the agent and remove what the runtime made for it (container, deployed
        checkout, deployed policy). Never touches its state directory or its repos.
        Idempotent: destroying an agent that was never deployed does nothing."""

    def status(self, name: str) -> dict:
        """`{"state": ..., "revision": ...}` as the runtime sees the agent now."""
