"""What a push to an agent's config repo over the git remote may do (the receive side is
hyperhive.gitstore.receive; forge_ui/git_http.py decides who may push at all).

- `refs/for/main`: the pushed commit becomes `proposal/<id>` in the agent's applied repo
  (Gerrit's pattern); the client is told `proposal NAME#ID: <review URL>`; the ref itself
  is not stored.
- `refs/heads/main`: fast-forward only (the manager's working branch). The config
  checkout follows main, as with git's `receive.denyCurrentBranch=updateInstead`: a
  checkout with uncommitted changes refuses the push rather than lose them.
- Anything else — another ref, a deletion, a force-push — is refused.
- Push options: `-o reason=TEXT` is the proposal's reason (as `hyperhive propose
  --reason` records it). Any other option is refused, as Gerrit does, rather than ignored:
  a typo must not drop what the pusher meant to say; so is a reason without a push to
  refs/for/main, or one given twice.

The repo's own `hooks/pre-receive` (git's contract) runs after these rules pass: that is
where an operator adds checks of their own.
"""

import logging
import os
from collections.abc import Callable

from dulwich import porcelain
from dulwich.object_store import DiskObjectStore
from dulwich.objects import Commit
from dulwich.repo import Repo

from hyperhive.errors import ConcurrentUpdate, HiveError
from hyperhive.gitstore import refs
from hyperhive.gitstore.receive import Command, Refused, is_ancestor, unsafe_path
from hyperhive.gitstore.repos import open_repo
from hyperhive.home import Home
from hyperhive.workflow.approvals import MAIN, Approval, Approvals
from hyperhive.workflow.lock import locked

log = logging.getLogger("hyperhive.git")

FOR_MAIN = b"refs/for/main"
REASON = "reason"
OPTIONS_HELP = "the option this remote knows is reason=TEXT (why, recorded in the proposal)"


def push_lock(home: Home, name: str):
    """Held around moving main and its checkout: two pushes never interleave there."""
    return home.config_dir(name) / ".git" / "hyperhive-push.lock"


def short(sha: bytes) -> str:
    return sha.decode()[:12]


class ConfigPush:
    """The rules of one push by `actor` to agent `name`'s config repo."""

    def __init__(self, home: Home, name: str, actor: str, review_url: Callable[[Approval], str]):
        self.home = home
        self.name = name
        self.actor = actor
        self.review_url = review_url
        self.config = home.config_dir(name)
        self.reason: str | None = None  # -o reason=…

    def hook_env(self) -> dict[str, str]:
        return {
            "HYPERHIVE_HOME": str(self.home.root),
            "HYPERHIVE_AGENT": self.name,
            "HYPERHIVE_ACTOR": self.actor,
        }

    # -- checks: nothing is written yet ----------------------------------------------------

    def check_options(self, options: list[str], commands: list[Command]) -> None:
        for option in options:
            key, eq, value = option.partition("=")
            shown = option if len(option) <= 60 else option[:60] + "…"
            if key != REASON or not eq:
                raise Refused(
                    "unknown push option", f"push refused: push option {shown!r}: {OPTIONS_HELP}"
                )
            if not value.strip():
                raise Refused(
                    "empty reason", "push refused: push option reason= needs a text: reason=TEXT"
                )
            if self.reason is not None:
                raise Refused(
                    "reason given twice", "push refused: push option reason= is given twice"
                )
            self.reason = value
        if self.reason is not None and not any(c.ref == FOR_MAIN for c in commands):
            raise Refused(
                "reason without proposal",
                "push refused: push option reason= is a proposal's: push to refs/for/main with it",
            )

    def check(self, command: Command, objects: DiskObjectStore) -> None:
        ref = command.ref.decode(errors="replace")
        if self.home.is_destroyed(self.name):
            raise Refused("agent destroyed", f"agent {self.name} was destroyed: nothing to push to")
        if command.ref not in (FOR_MAIN, MAIN):
            raise Refused(
                "only refs/for/main and main",
                f"{ref}: refused: push to refs/for/main (a proposal) or refs/heads/main "
                "(fast-forward)",
            )
        if command.deleting:
            raise Refused("deletion refused", f"{ref}: deleting it is refused")
        commit = objects[command.new]
        if not isinstance(commit, Commit):
            raise Refused("not a commit", f"{ref}: {short(command.new)} is not a commit")
        if bad := unsafe_path(objects, commit):
            raise Refused(
                "unsafe path",
                f"{ref}: {short(command.new)} has a path git refuses to check out: {bad!r}",
            )
        if command.ref == FOR_MAIN:
            if not (self.home.applied_dir(self.name) / "HEAD").is_file():
                raise Refused(
                    "draft",
                    f"{self.name} is a draft: it has no proposals until spawn_commit submits it",
                )
        else:
            self._check_main(command, objects)

    def _check_main(self, command: Command, objects: DiskObjectStore) -> None:
        with open_repo(self.config) as repo:
            current = refs.read(repo, MAIN)
            if current and not is_ancestor(objects, current, command.new):
                raise Refused(
                    "non-fast-forward",
                    f"refs/heads/main: force-push refused: {short(command.new)} does not "
                    f"contain {short(current)}; fetch, rebase onto it and push again",
                )
            if command.old != (current or refs.ZERO):
                raise Refused(
                    "fetch first",
                    f"refs/heads/main moved to {short(current or refs.ZERO)}: fetch and push again",
                )
            self._check_checkout(repo)

    def _check_checkout(self, repo: Repo) -> None:
        if not self._follows_main(repo):
            return
        status = porcelain.status(repo)
        changed = [p for paths in status.staged.values() for p in paths]
        changed += [*status.unstaged, *status.untracked]
        if changed:
            names = ", ".join(os.fsdecode(p) for p in changed[:5])
            raise Refused(
                "checkout has changes",
                f"refs/heads/main: the config checkout {self.config} has uncommitted changes "
                f"({names}): commit or discard them there first",
            )

    @staticmethod
    def _follows_main(repo: Repo) -> bool:
        """Whether the checkout has main checked out (then it moves with main)."""
        chain, _ = repo.refs.follow(b"HEAD")
        return chain[-1] == MAIN

    # -- applying: the pushed objects are in the repo ----------------------------------

    def apply(self, commands: list[Command], say: Callable[[str], None]) -> dict[bytes, Refused]:
        failed: dict[bytes, Refused] = {}
        for command in sorted(commands, key=lambda c: c.ref != MAIN):  # main first
            try:
                if command.ref == MAIN:
                    self._move_main(command, say)
                else:
                    approval = Approvals(self.home, self.name).propose(
                        command.new.decode(), self.actor, self.reason
                    )
                    say(f"proposal {approval.target}: {self.review_url(approval)}")
            except Refused as r:
                failed[command.ref] = r
            except HiveError as e:
                failed[command.ref] = Refused("refused", f"{command.ref.decode()}: {e}")
        return failed

    def _move_main(self, command: Command, say: Callable[[str], None]) -> None:
        with locked(push_lock(self.home, self.name)), open_repo(self.config) as repo:
            self._check_checkout(repo)
            old = None if command.old == refs.ZERO else command.old
            try:
                refs.cas(repo, MAIN, old, command.new)
            except ConcurrentUpdate:
                raise Refused(
                    "fetch first", "refs/heads/main moved: fetch and push again"
                ) from None
            if not self._follows_main(repo):
                return
            try:  # index and files follow main, as a checkout of the pushed commit would
                porcelain.reset(repo, "hard", command.new)
            except Exception as e:  # main has moved: say so rather than fail the push
                log.exception("%s: the config checkout could not follow main", self.name)
                say(f"warning: main moved but the config checkout {self.config} did not: {e}")
