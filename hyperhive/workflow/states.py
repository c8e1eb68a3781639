"""The tag state machine of DESIGN.md: which tag may follow which."""

from enum import StrEnum


class State(StrEnum):
    PROPOSAL = "proposal"
    APPROVED = "approved"
    DENIED = "denied"
    BUILDING = "building"
    DEPLOYED = "deployed"
    FAILED = "failed"


# The tag each state requires to exist first.
PREDECESSOR = {
    State.APPROVED: State.PROPOSAL,
    State.DENIED: State.PROPOSAL,
    State.BUILDING: State.APPROVED,
    State.DEPLOYED: State.BUILDING,
    State.FAILED: State.BUILDING,
}

# Tags that exclude each other: at most one of a pair can ever exist for an id.
COMPETITOR = {
    State.APPROVED: State.DENIED,
    State.DENIED: State.APPROVED,
    State.DEPLOYED: State.FAILED,
    State.FAILED: State.DEPLOYED,
}

TERMINAL = frozenset({State.DENIED, State.DEPLOYED, State.FAILED})
DECISIONS = frozenset({State.APPROVED, State.DENIED})

# From least to most advanced: an approval's current state is the last one it has.
ORDER = [State.PROPOSAL, State.APPROVED, State.DENIED, State.BUILDING, State.DEPLOYED, State.FAILED]


def current(states: set[State]) -> State:
    return max(states, key=ORDER.index)


def tag_ref(state: State, approval_id: int) -> bytes:
    return f"refs/tags/{state}/{approval_id}".encode()
