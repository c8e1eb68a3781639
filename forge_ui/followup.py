"""A follow-up proposal on its review page: which approval it follows (`Follows:`), which
later ones follow it, and the interdiff, the change since the followed proposal's commit
(`?diff=interdiff`), as Gerrit compares patch sets."""

from dataclasses import dataclass, field

from hyperhive.errors import HiveError
from hyperhive.workflow import comments
from hyperhive.workflow.approvals import Approval, Approvals

INTERDIFF = "interdiff"


@dataclass(frozen=True)
class FollowUp:
    follows_id: int | None = None
    follows: Approval | None = None  # None: unknown (retention pruned it and its record)
    commit_kept: bool = False  # the followed commit is still in the applied repo
    followed_by: list[Approval] = field(default_factory=list)
    interdiff: bool = False  # the page shows the interdiff
    comments: int = 0  # of the followed approval's conversation

    def old(self, base: str | None) -> str | None:
        """The commit the page's diff starts from."""
        return self.follows.commit if self.interdiff else base


def of(approvals: Approvals, a: Approval, mode: str | None) -> FollowUp:
    followed_by = [b for b in approvals.all() if b.follows == a.id and b.id != a.id and b.states]
    if a.follows is None:
        return FollowUp(followed_by=followed_by)
    try:
        follows = approvals.get(a.follows, with_pruned=True)
    except HiveError:
        return FollowUp(a.follows, followed_by=followed_by)
    with approvals.repo() as repo:
        kept = follows.commit.encode() in repo.object_store
    said = len(comments.read(approvals.home, a.agent, a.follows).comments)
    return FollowUp(a.follows, follows, kept, followed_by, kept and mode == INTERDIFF, said)
