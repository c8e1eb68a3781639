"""Refusals: a request was understood and declined. The CLI exits 1 with the message."""


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


class ConcurrentUpdate(HiveError):
    """A compare-and-swap lost: a ref was not what the engine read under its lock."""


class UnknownMessage(HiveError):
    pass
