"""Every HiveError, and the HTTP status each answers with (`STATUS`, the one table: the
forge's error handler reads it). A refusal (a request understood and declined) is a 4xx;
a failure of the hive or its host (a runtime command, a missing sandbox, a full disk) is
a 5xx. The CLI exits 1 with the message either way."""

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


class NotARepository(HiveError):
    """A directory that should hold one of the hive's git repositories does not."""


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


class UnknownQuestion(UnknownApproval):
    pass


class UnknownToken(HiveError):
    pass


class UnknownAccount(HiveError):
    pass


class AlreadyDestroyed(IllegalTransition):
    pass


class CheckNotPassed(IllegalTransition):
    """Approving a proposal whose check failed or has not finished, without `force`
    (workflow/checks.py)."""


class PolicyRefused(HiveError):
    """A message the sender's deployed policy does not allow."""


class PolicyError(HiveError):
    """A deployed policy file that cannot be read: sends are refused, never unrestricted."""


class PolicyUnreadable(HiveError):
    """The harness cannot read the policy it runs under (in the agent's container)."""


class RuntimeCommandError(HiveError):
    """A runtime command outside a build (start, stop, destroy) failed: which one, how."""


class SandboxUnavailable(HiveError):
    """bwrap is missing or cannot make its namespaces on this host."""


class UnsupportedClaude(HiveError):
    pass


class ClaudeNotRunnable(UnsupportedClaude):
    """`claude --version` could not run at all (not installed yet, not executable)."""


class HistoryTooLarge(HiveError):
    """A commit whose history, new to the repo it is copied into, packs to more than
    `git.max_push_bytes`: what a push of it would have been refused for."""


class GitFailed(HiveError):
    """The git CLI, which copies long histories (gitstore/gitcli.py), is missing or
    failed: which command, and the last of what it said."""


class ShuttingDown(HiveError):
    """The daemon is stopping: what was asked resumes (or can be asked again) after."""


STATUS: dict[type[HiveError], int] = {  # the first class that matches wins
    BadSettings: 500,  # hyperhive.toml is broken: no request can fix that
    InvalidName: 400,
    UnsafeTree: 400,
    BadInput: 400,
    PolicyRefused: 403,
    UnknownAgent: 404,
    UnknownApproval: 404,  # UnknownQuestion too
    UnknownCommit: 404,
    UnknownMessage: 404,
    UnknownToken: 404,
    UnknownAccount: 404,
    AlreadyDecided: 409,
    IllegalTransition: 409,  # AlreadyDestroyed, CheckNotPassed too
    NoNewChanges: 409,  # Gerrit's "no new changes"
    RollbackNotSaid: 409,
    AgentExists: 409,
    ConcurrentUpdate: 409,
    NotARepository: 500,  # the hive's own directories are broken
    PolicyError: 500,  # a deployed policy the hive wrote cannot be read
    RuntimeCommandError: 500,
    NotInitialized: 503,
    ShuttingDown: 503,
    SandboxUnavailable: 503,  # the host lacks bwrap: the operator installs it
    UnsupportedClaude: 503,  # ClaudeNotRunnable too
    PolicyUnreadable: 503,
    HistoryTooLarge: 413,  # Content Too Large: as a push of that history would be
    GitFailed: 500,
    DiskFull: 507,  # WebDAV's Insufficient Storage: the request may succeed once space is freed
}
REFUSED = 400  # a bare HiveError: a refusal no subclass names (a test keeps subclasses listed)


def status_of(error: HiveError) -> int:
    return next((code for cls, code in STATUS.items() if isinstance(error, cls)), REFUSED)
