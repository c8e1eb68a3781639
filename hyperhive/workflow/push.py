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
  --reason` records it), `-o follows=ID` the approval it answers (`--follows`);
  `-o rollback` says a proposal of an ancestor of the deployed commit means to go back
  (`propose --rollback`). Any other option is refused, as Gerrit does, rather than
  ignored: a typo must not drop what the pusher meant to say; so is any of them without
  a push to refs/for/main, or a reason or follows given twice.

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

from hyperhive.errors import ConcurrentUpdate, HiveError, disk_full
from hyperhive.gitstore import refs, worktree
from hyperhive.gitstore.gitcli import is_ancestor
from hyperhive.gitstore.receive import Command, Refused
from hyperhive.gitstore.repos import open_repo
from hyperhive.gitstore.treecheck import unsafe_tree
from hyperhive.home import Home
from hyperhive.workflow.approvals import MAIN, Approval, Approvals, follows_id
from hyperhive.workflow.lock import locked

log = logging.getLogger("hyperhive.git")

FOR_MAIN = b"refs/for/main"
REASON = "reason"
FOLLOWS = "follows"
ROLLBACK = "rollback"  # -o rollback: the proposal goes back to an ancestor of the deployed
OPTIONS_HELP = (
    "the options this remote knows are reason=TEXT (why, recorded in the proposal), "
    "follows=ID (the approval it answers) and rollback (the proposal goes back to an "
    "earlier commit)"
)


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
        self.follows: int | None = None  # -o follows=ID
        self.rollback = False  # -o rollback

    def hook_env(self) -> dict[str, str]:
        return {
            "HYPERHIVE_HOME": str(self.home.root),
            "HYPERHIVE_AGENT": self.name,
            "HYPERHIVE_ACTOR": self.actor,
        }

    # -- checks: nothing is written yet ----------------------------------------------------

    def check_options(self, options: list[str], commands: list[Command]) -> None:
        given: dict[str, str] = {}
        for option in options:
            key, eq, value = option.partition("=")
            shown = option if len(option) <= 60 else option[:60] + "…"
            if option == ROLLBACK:
                self.rollback = True
                continue
            if key not in (REASON, FOLLOWS) or not eq:
                raise Refused(
                    "unknown push option", f"push refused: push option {shown!r}: {OPTIONS_HELP}"
                )
            if not value.strip():
                what = "a text: reason=TEXT" if key == REASON else "an id: follows=ID"
                raise Refused(f"empty {key}", f"push refused: push option {key}= needs {what}")
            if key in given:
                raise Refused(
                    f"{key} given twice", f"push refused: push option {key}= is given twice"
                )
            given[key] = value
        if (given or self.rollback) and not any(c.ref == FOR_MAIN for c in commands):
            key = next(iter(given)) if given else ROLLBACK
            said = ROLLBACK if key == ROLLBACK else f"{key}="
            raise Refused(
                f"{key} without proposal",
                f"push refused: push option {said} is a proposal's: push to refs/for/main with it",
            )
        self.reason = given.get(REASON)
        if FOLLOWS in given:
            try:
                self.follows = follows_id(self.name, given[FOLLOWS])
            except HiveError as e:
                raise Refused("bad follows", f"push refused: push option follows=: {e}") from None

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
        if bad := unsafe_tree(objects, commit.tree):
            raise Refused(
                "unsafe tree", f"{ref}: {short(command.new)} cannot be checked out safely: {bad}"
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
            with locked(push_lock(self.home, self.name), blocking=False) as free:
                if free and self._follows_main(repo):  # a switch a crash cut: finish it
                    worktree.finish_interrupted(repo, current)
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
        """All or nothing, under the push lock: main moves first, with its checkout; if it
        cannot, no proposal is made; if the proposal then fails, main and its checkout move
        back. Two racing `git push --atomic` of main and refs/for/main: one wins whole."""
        main = next((c for c in commands if c.ref == MAIN), None)
        proposal = next((c for c in commands if c.ref == FOR_MAIN), None)
        with locked(push_lock(self.home, self.name)):
            if main is not None:
                try:
                    self._move_main(main)
                except Refused as r:
                    return {main.ref: r}
            if proposal is None:
                return {}
            try:
                approval = Approvals(self.home, self.name).propose(
                    proposal.new.decode(),
                    self.actor,
                    self.reason,
                    rollback=self.rollback,
                    follows=self.follows,
                )
            except (HiveError, OSError) as e:
                if main is not None:
                    self._move_back(main)
                if isinstance(e, OSError) and (e := disk_full(e)) is None:
                    raise
                return {proposal.ref: Refused("refused", f"{proposal.ref.decode()}: {e}")}
        say(f"proposal {approval.target}: {self.review_url(approval)}")
        return {}

    def _move_main(self, command: Command) -> None:
        """main from command.old to command.new with the checkout (when it has main checked
        out): the files first, then the ref; if either fails, neither has moved."""
        old = None if command.old == refs.ZERO else command.old
        with open_repo(self.config) as repo:
            follows = self._follows_main(repo)
            if follows:
                worktree.finish_interrupted(repo, refs.read(repo, MAIN))  # a crash mid-switch
                self._check_checkout(repo)
            if refs.read(repo, MAIN) != old:
                raise Refused("fetch first", "refs/heads/main moved: fetch and push again")
            if follows:
                try:
                    worktree.switch(repo, old, command.new)
                except (OSError, HiveError) as e:
                    log.exception("%s: the config checkout could not follow main", self.name)
                    worktree.finish_interrupted(repo, old)  # back to what it was
                    raise Refused(
                        "checkout failed",
                        f"refs/heads/main: the config checkout {self.config} cannot take "
                        f"{short(command.new)} ({e}): main did not move",
                    ) from None
            try:
                refs.cas(repo, MAIN, old, command.new)
            except ConcurrentUpdate:
                if follows:
                    worktree.switch(repo, command.new, old)
                raise Refused(
                    "fetch first", "refs/heads/main moved: fetch and push again"
                ) from None

    def _move_back(self, command: Command) -> None:
        """Undo `_move_main` (a later ref of the same push failed)."""
        old = None if command.old == refs.ZERO else command.old
        with open_repo(self.config) as repo:
            try:
                if old is None:
                    refs.delete(repo, MAIN, command.new)
                else:
                    refs.cas(repo, MAIN, command.new, old)
                if self._follows_main(repo):
                    worktree.switch(repo, command.new, old)
            except (OSError, HiveError):
                log.exception("%s: main could not move back to %s", self.name, old)
