"""Refusals: a request was understood and declined. The CLI exits 1 with the message."""

import errno


class HiveError(Exception):
    """Base of every refusal; the message is one line that says what happened."""


class InvalidName(HiveError):
    pass


class BadInput(HiveError):
    """A malformed or incomplete request (a missing reason, a body that is not JSON)."""


class BadSettings(BadInput):
    """The hive's own settings (hyperhive.toml, HYPERHIVE_* overrides) are broken: the
    operator's to fix, not the fault of the request that needed them."""


class NotInitialized(HiveError):
    pass


class UnknownAgent(HiveError):
    pass


class AgentExists(HiveError):
    pass


class UnknownCommit(HiveError):
    pass


class UnknownApproval(HiveError):
    pass


class AlreadyDecided(HiveError):
    pass


class IllegalTransition(HiveError):
    pass


class NoNewChanges(HiveError):
    """A proposal whose tree is the deployed one's or a pending proposal's (Gerrit's
    "no new changes"): there is nothing to review."""


class RollbackNotSaid(HiveError):
    """A proposal of an ancestor of the deployed commit, without saying it rolls back
    (`--rollback`, `-o rollback`); or saying so of a commit that does not."""


class ConcurrentUpdate(HiveError):
    """A compare-and-swap lost: a ref was not what the engine read under its lock."""


class UnsafeTree(HiveError):
    """A commit whose tree cannot be checked out safely (gitstore/treecheck.py)."""


class DiskFull(HiveError):
    """The disk (or the quota) holding the hive is full: what needed the space failed
    whole (no half-written object is kept), and the operator has to free some."""


def disk_full(e: BaseException) -> DiskFull | None:
    """A DiskFull for an OSError that says the disk is full (ENOSPC, EDQUOT), else None."""
    if not isinstance(e, OSError) or e.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    where = f" writing {e.filename}" if e.filename else ""
    return DiskFull(f"the hive's disk is full ({e.strerror}{where}): free space and try again")


class UnknownMessage(HiveError):
    pass
