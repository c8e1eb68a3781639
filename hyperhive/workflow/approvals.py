"""Approvals of one agent, derived from the tags of `applied/<name>.git` and nothing else
(the history views add the meta repo's records of tags that retention removed)."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TypeVar

from dulwich.objects import Blob
from dulwich.repo import Repo

from hyperhive.errors import (
    AlreadyDecided,
    BadInput,
    IllegalTransition,
    NoNewChanges,
    NotARepository,
    RollbackNotSaid,
    UnknownAgent,
    UnknownApproval,
    UnknownCommit,
    UnsafeTree,
)
from hyperhive.gitstore import refs
from hyperhive.gitstore.cache import LRU
from hyperhive.gitstore.gitcli import is_ancestor
from hyperhive.gitstore.refs import MAIN
from hyperhive.gitstore.repos import LazyRepo, copy_commit, open_repo, resolve_commit
from hyperhive.gitstore.tags import TagInfo, read_tag, write_tag
from hyperhive.gitstore.treecheck import unsafe_tree
from hyperhive.home import Home
from hyperhive.names import format_target
from hyperhive.settings import load_settings
from hyperhive.wire import notify
from hyperhive.workflow import hooks, meta
from hyperhive.workflow.lock import locked, transition_lock
from hyperhive.workflow.states import (
    COMPETITOR,
    DECISIONS,
    ORDER,
    PREDECESSOR,
    TERMINAL,
    State,
    current,
    tag_ref,
)

# Highest id ever handed out, as a blob, so ids are not reused after tags are pruned.
LAST_ID_REF = b"refs/hyperhive/last-id"
AHEAD_WALK = 5000  # commits a pushed proposal may be ahead of HEAD for propose's warning


def when(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@dataclass(frozen=True)
class Approval:
    agent: str
    id: int
    # Every state's tag: the tags that exist and (with_pruned) those a prune record kept.
    states: dict[State, TagInfo]
    # Tags retention removed, from the meta repo's prune records (read with_pruned only).
    pruned: dict[State, meta.PrunedTag] = field(default_factory=dict)
    commit_subject: str = ""  # the commit's own subject, read when the proposal is pruned

    @property
    def target(self) -> str:
        return format_target(self.agent, self.id)

    @property
    def live(self) -> set[State]:
        """The states whose tags still exist."""
        return set(self.states) - set(self.pruned)

    @cached_property
    def state(self) -> State:
        return current(set(self.states) | set(self.pruned))

    @property
    def commit(self) -> str:
        if self.states:
            return next(iter(self.states.values())).target
        return next(iter(self.pruned.values())).commit

    @property
    def subject(self) -> str:
        proposal = self.states.get(State.PROPOSAL)
        return proposal.trailers.get("Subject", "") if proposal else self.commit_subject

    @property
    def follows(self) -> int | None:
        """The id of the approval this one follows up (its proposal's `Follows:`)."""
        proposal = self.states.get(State.PROPOSAL)
        value = proposal.trailers.get("Follows", "") if proposal else ""
        raw = value.rpartition("#")[2]
        return int(raw) if raw.isdigit() else None

    @property
    def pruned_on(self) -> int | None:
        """When retention removed its last tag; None while any tag is left."""
        return None if self.live else max(t.pruned for t in self.pruned.values())

    def history(self) -> list[tuple[State, TagInfo]]:
        """The states it went through, in state-machine order."""
        return sorted(self.states.items(), key=lambda kv: ORDER.index(kv[0]))

    def pruned_history(self) -> list[tuple[State, meta.PrunedTag]]:
        """The states whose tags retention removed and whose record kept no copy of them
        (records written before they did), in state-machine order."""
        lost = ((s, t) for s, t in self.pruned.items() if s not in self.states)
        return sorted(lost, key=lambda kv: ORDER.index(kv[0]))

    def describe(self, state: State) -> str:
        tag = self.states[state]
        return f"{state} by {tag.actor} at {when(tag.time)}"

    def to_json(self) -> dict:
        """The approval as JSON (a new dict each call; what it holds is shared: an
        Approval never changes, and the dashboard asks for every pending one's)."""
        return dict(self._json)

    @cached_property
    def _json(self) -> dict:
        return {
            "agent": self.agent,
            "id": self.id,
            "target": self.target,
            "commit": self.commit,
            "state": str(self.state),
            "subject": self.subject,
            "pruned_on": self.pruned_on,
            "pruned": [{"state": str(s), **t.to_json()} for s, t in self.pruned_history()],
            "states": [
                {
                    "state": str(s),
                    "actor": t.actor,
                    "time": t.time,
                    "tag": t.ref,
                    "trailers": t.trailers,
                    "body": t.body,
                    "pruned_on": self.pruned[s].pruned if s in self.pruned else None,
                }
                for s, t in self.history()
            ],
        }


def history_json(home: Home, name: str) -> dict:
    """Every approval of an agent with the hook runs of its tags: the one shape of
    `hyperhive history --json`, the API and the manager's `agent_history`."""
    runs = hooks.runs(home, name)
    return {
        "agent": name,
        "approvals": [
            {**a.to_json(), "hooks": [vars(r) for r in runs if hooks.concerns(r, a.id)]}
            for a in Approvals(home, name).all(with_pruned=True)
        ],
    }


T = TypeVar("T")


def follows_id(name: str, value: object) -> int | None:
    """The id a follow-up names (`NAME#ID`, `#ID` or `ID` of agent `name`), None for none."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise BadInput(f"follows must be NAME#ID or an id, not {value!r}")
    other, sep, raw = text.rpartition("#")
    if sep and other and other != name:
        raise BadInput(f"a proposal of {name} follows up one of {name}, not {text!r}")
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) < 2**63:
        raise BadInput(f"follows must be NAME#ID or an id, e.g. {name}#3, not {text!r}")
    return int(raw)


def refuse_unsafe(repo: Repo, sha: bytes) -> None:
    """A commit whose tree a checkout could turn into writes outside it is never proposed."""
    if bad := unsafe_tree(repo.object_store, repo[sha].tree):
        raise UnsafeTree(f"commit {sha.decode()[:12]} cannot be checked out safely: {bad}")


def parse_tag_refs(tag_refs: Mapping[bytes, T]) -> dict[int, dict[State, T]]:
    """Group `<state>/<id>` tag refs by id; tags outside the state machine are ignored."""
    by_id: dict[int, dict[State, T]] = {}
    for name, sha in tag_refs.items():
        state, _, raw_id = name.decode(errors="replace").partition("/")
        if raw_id.isdigit() and state in State.__members__.values():
            by_id.setdefault(int(raw_id), {})[State(state)] = sha
    return by_id


# Approvals built from a listing of an applied repo's tags, by repo, while that listing
# is the current one.
_built: LRU[Path, tuple[dict, dict[int, Approval]]] = LRU(1024)
# What a read view derives from every approval (derived(fn)), by repo and function, while
# the approvals it was derived from are the current ones.
_derived: LRU[tuple[Path, Callable], tuple[dict, object]] = LRU(4096)


class Approvals:
    """The approvals of one agent. Every write happens under the repo's transition lock."""

    def __init__(self, home: Home, name: str):
        self.home = home
        self.name = home.require_agent(name)
        self.dir = home.applied_dir(name)

    def repo(self) -> Repo:
        """The applied repo, opened: the caller closes it (`with approvals.repo() as r`)."""
        return open_repo(self.dir)

    def _tag_shas(self, repo: Repo | None = None) -> dict[int, dict[State, bytes]]:
        """The tags read now (the packed ones grouped once per packed-refs file), for a
        write under the transition lock. The inner dicts are shared: never change them."""
        return refs.grouped(self.dir if repo is None else repo, refs.TAGS, parse_tag_refs)

    def _id_shas(self, approval_id: int, repo: Repo | None = None) -> dict[State, bytes]:
        """The tags of one approval read now: one ref per state, whatever the number of
        tags."""
        found = {
            s: refs.read(self.dir if repo is None else repo, tag_ref(s, approval_id)) for s in State
        }
        return {s: sha for s, sha in found.items() if sha is not None}

    def _listed(self) -> dict[int, dict[State, bytes]]:
        """The tags for the read views (shared: never change it)."""
        return refs.listing(self.dir, b"refs/tags/", parse_tag_refs)

    def _approvals(self) -> dict[int, Approval]:
        """Every approval by id for the read views, built once per listing of the tags
        (shared: never change it; an Approval is frozen)."""
        listed = self._listed()
        cached = _built.get(self.dir)
        if cached is not None and cached[0] is listed:
            return cached[1]
        with LazyRepo(self.dir) as reader:  # opened only for tags no cache holds
            built = {i: self._load(i, shas, reader) for i, shas in listed.items()}
        _built.put(self.dir, (listed, built))
        return built

    def derived(self, derive: Callable[[dict[int, Approval]], T]) -> T:
        """`derive(every approval by id)`, computed once per listing of the tags (the
        dashboard sums up each agent's approvals at every load; shared: never change it).
        `derive` is a module-level function: it is part of the cache's key."""
        built = self._approvals()
        key = (self.dir, derive)
        cached = _derived.get(key)
        if cached is not None and cached[0] is built:
            return cached[1]  # type: ignore[return-value]
        value = derive(built)
        _derived.put(key, (built, value))
        return value

    def _load(
        self, approval_id: int, shas: dict[State, bytes], repo: Repo | Callable[[], Repo]
    ) -> Approval:
        infos = {s: read_tag(repo, tag_ref(s, approval_id), sha) for s, sha in shas.items()}
        return Approval(self.name, approval_id, infos)

    def get(self, approval_id: int, with_pruned: bool = False) -> Approval:
        """One approval; `with_pruned` adds what retention removed of it (and finds an
        approval whose tags are all gone)."""
        if not with_pruned:  # its own refs only: as fast with 10 tags as with 10,000
            shas = self._id_shas(approval_id)
            if not shas:
                raise UnknownApproval(f"unknown approval {format_target(self.name, approval_id)}")
            with LazyRepo(self.dir) as reader:
                return self._load(approval_id, shas, reader)
        found = {approval_id: a} if (a := self._approvals().get(approval_id)) else {}
        if with_pruned:
            found = self._with_pruned(found, approval_id)
        if approval_id not in found:
            raise UnknownApproval(f"unknown approval {format_target(self.name, approval_id)}")
        return found[approval_id]

    def all(self, pending_only: bool = False, with_pruned: bool = False) -> list[Approval]:
        """Every approval by id; `with_pruned` (the history views) adds what retention
        removed, including approvals none of whose tags is left."""
        found = {
            i: a
            for i, a in self._approvals().items()
            if not pending_only or set(a.states) == {State.PROPOSAL}
        }
        if with_pruned and not pending_only:
            found = self._with_pruned(found)
        return [found[i] for i in sorted(found)]

    def _with_pruned(
        self, found: dict[int, Approval], only: int | None = None
    ) -> dict[int, Approval]:
        """Merge the prune records into `found`. A recorded tag that still exists (a
        crash kept it from being deleted) is the tag, not a pruned one."""
        recorded = meta.pruned_tags(self.home, self.name)
        by_id = parse_tag_refs({tag.encode(): pruned for tag, pruned in recorded.items()})
        merged = dict(found)
        with LazyRepo(self.dir) as reader:  # opened only for a pruned proposal's subject
            for i, tags in by_id.items():
                if only is not None and i != only:
                    continue
                approval = found.get(i) or Approval(self.name, i, {})
                gone = {s: t for s, t in tags.items() if s not in approval.states}
                if not gone:
                    continue
                kept = {s: info for s, t in gone.items() if (info := t.info()) is not None}
                approval = replace(approval, states={**approval.states, **kept}, pruned=gone)
                subject = ""
                if State.PROPOSAL not in approval.states:
                    try:
                        message = reader()[approval.commit.encode()].message
                        subject = message.decode(errors="replace").split("\n", 1)[0]
                    except (KeyError, ValueError, AttributeError):
                        pass  # the commit itself is gone (a `git gc` after its tags were)
                merged[i] = replace(approval, commit_subject=subject)
        return merged

    def states(self) -> dict[int, set[State]]:
        """Each id's states, from the ref names alone (no tag object is read), as they are
        now."""
        return {i: set(shas) for i, shas in self._tag_shas().items()}

    def last_deployed(self) -> tuple[int, TagInfo] | None:
        """The approval deployed last (by its tag's time, then id) and that tag, read now."""
        deployed = {
            i: s[State.DEPLOYED] for i, s in self._tag_shas().items() if State.DEPLOYED in s
        }
        if not deployed:
            return None
        with LazyRepo(self.dir) as reader:
            infos = {
                i: read_tag(reader, tag_ref(State.DEPLOYED, i), sha) for i, sha in deployed.items()
            }
        last = max(infos, key=lambda i: (infos[i].time, i))
        return last, infos[last]

    def tags_in(self, state: State) -> dict[int, TagInfo]:
        """The tag of every approval that reached `state`, by id."""
        return {i: a.states[state] for i, a in self._approvals().items() if state in a.states}

    def deployed_commit(self) -> str | None:
        sha = refs.listing(self.dir, b"refs/heads/", dict).get(b"main")
        return sha.decode() if sha else None

    def pending_ahead_of_head(self) -> list[Approval]:
        """The pending proposals whose commit is a descendant of the config checkout's
        HEAD (a push to refs/for/main that the checkout never got): proposing HEAD then
        is most likely a mistake."""
        with open_repo(self.home.config_dir(self.name)) as config:
            try:
                head = config.head()
            except KeyError:
                return []
            ahead = []
            for a in self.all(pending_only=True):
                sha = a.commit.encode()
                if sha == head or sha not in config:
                    continue
                # Walk back from the proposal at most AHEAD_WALK commits looking for HEAD.
                walker = config.get_walker(include=[sha], max_entries=AHEAD_WALK)
                if any(entry.commit.id == head for entry in walker):
                    ahead.append(a)
            return ahead

    @staticmethod
    def _deployed(repo: Repo) -> str | None:
        sha = refs.read(repo, MAIN)
        return sha.decode() if sha else None

    # -- writes ------------------------------------------------------------------------

    def _next_id(self, repo: Repo) -> int:
        last = refs.read(repo, LAST_ID_REF)
        counted = int(repo[last].data) if last else 0
        seen = max(self._tag_shas(repo), default=0)
        new_id = max(counted, seen) + 1
        blob = Blob.from_string(f"{new_id}\n".encode())
        repo.object_store.add_object(blob)
        refs.cas(repo, LAST_ID_REF, last, blob.id)
        return new_id

    def propose(
        self,
        commit_spec: str,
        actor: str,
        reason: str | None = None,
        *,
        rollback: bool = False,
        follows: int | None = None,
    ) -> Approval:
        """Propose a commit of the agent's config repo (or one already in the applied repo,
        such as an earlier deployed commit for a rollback). A commit with nothing new to
        review is refused (`NoNewChanges`); one that rolls back must say so (`rollback`),
        and its proposal names the deploy it returns to (`Rollback: NAME#ID`). `follows`:
        the id of the approval this one answers (its review comments, its denial),
        recorded as `Follows: NAME#ID`."""
        if self.home.is_destroyed(self.name):
            raise UnknownAgent(
                f"agent {self.name!r} was destroyed (its repos are kept): nothing to deploy to"
            )
        if follows is not None:
            self.get(follows, with_pruned=True)  # UnknownApproval names it
        config = self.home.config_dir(self.name)
        max_bytes = load_settings(self.home).git.max_push_bytes  # a push of it is held to it
        # The copy happens under the lock too: two processes writing the same loose object
        # at once make dulwich's lock file collide (FileLocked) in one of them.
        with self.repo() as repo, locked(transition_lock(self.dir)):
            try:
                with open_repo(config) as source:
                    sha = resolve_commit(source, commit_spec)
                    refuse_unsafe(source, sha)
                    copy_commit(source, repo, sha, max_bytes=max_bytes)
            except (UnknownCommit, NotARepository):
                try:
                    sha = resolve_commit(repo, commit_spec)
                    refuse_unsafe(repo, sha)
                except UnknownCommit:
                    raise UnknownCommit(
                        f"unknown commit {commit_spec!r}: not in {config} nor in {self.dir}"
                    ) from None
            subject = repo[sha].message.decode(errors="replace").split("\n", 1)[0]
            returns_to = self._check_new(repo, sha, rollback)
            approval_id = self._next_id(repo)
            ref = tag_ref(State.PROPOSAL, approval_id)
            tag = write_tag(
                repo,
                ref,
                sha,
                actor,
                f"proposal {format_target(self.name, approval_id)}",
                {
                    "Subject": subject,
                    "Reason": reason,
                    "Base": self._deployed(repo),
                    "Rollback": returns_to,
                    "Follows": format_target(self.name, follows) if follows else None,
                },
            )
            if tag is None:  # only a writer bypassing the lock and the id counter gets here
                raise IllegalTransition(f"cannot propose: {ref.decode()} already exists")
            refs.pack_if_many(repo)
        self._written(tag, ref)
        return self.get(approval_id)

    def _check_new(self, repo: Repo, sha: bytes, rollback: bool) -> str | None:
        """Refuse a proposal with nothing new (its tree is the deployed commit's or that of
        an approval still on its way) and a rollback not said to be one; for a rollback,
        the approval that deployed the commit (`NAME#ID`, or `-` if none did). Under the
        transition lock."""
        tree = repo[sha].tree
        deployed = refs.read(repo, MAIN)
        if deployed is not None and repo[deployed].tree == tree:
            raise NoNewChanges(
                f"no new changes: {sha.decode()[:12]} has the tree of the deployed commit "
                f"{deployed.decode()[:12]}"
            )
        tags = self._tag_shas(repo)
        for i, shas in sorted(tags.items()):
            if TERMINAL & shas.keys() or State.PROPOSAL not in shas:
                continue
            target = read_tag(repo, tag_ref(State.PROPOSAL, i), shas[State.PROPOSAL]).target
            if repo[target.encode()].tree == tree:
                raise NoNewChanges(
                    f"no new changes: {sha.decode()[:12]} has the tree of "
                    f"{format_target(self.name, i)} ({target[:12]}, {current(set(shas))})"
                )
        # A fast-forward (the usual proposal) cannot roll back: its walk stops at the
        # deployed commit, where the other would walk the whole history.
        back = (
            deployed is not None
            and not is_ancestor(repo.object_store, deployed, sha)
            and is_ancestor(repo.object_store, sha, deployed)
        )
        if back and not rollback:
            raise RollbackNotSaid(
                f"{sha.decode()[:12]} is an ancestor of the deployed commit "
                f"{deployed.decode()[:12]}: proposing it rolls back; say so with --rollback "
                "(a push: -o rollback)"
            )
        if rollback and not back:
            raise RollbackNotSaid(
                f"{sha.decode()[:12]} is not an ancestor of the deployed commit: not a rollback"
            )
        if not back:
            return None
        deploys = [
            (read_tag(repo, tag_ref(State.DEPLOYED, i), shas[State.DEPLOYED]), i)
            for i, shas in tags.items()
            if State.DEPLOYED in shas
        ]
        found = [(t.time, i) for t, i in deploys if t.target == sha.decode()]
        return format_target(self.name, max(found)[1]) if found else "-"

    def _written(self, tag: bytes, ref: bytes) -> None:
        notify.changed(self.home, self.name, ref.decode())
        hooks.run_post_receive(self.home, self.name, [(refs.ZERO, tag, ref)])

    def approve(self, approval_id: int, actor: str) -> Approval:
        return self.transition(approval_id, State.APPROVED, actor)

    def deny(self, approval_id: int, actor: str, reason: str) -> Approval:
        if not reason or not reason.strip():
            raise BadInput("a denial needs a reason (--reason TEXT)")
        return self.transition(approval_id, State.DENIED, actor, {"Reason": reason})

    def transition(
        self,
        approval_id: int,
        state: State,
        actor: str,
        trailers: dict[str, str] | None = None,
        body: str = "",
        then: Callable[[Repo, Approval], None] | None = None,
    ) -> Approval:
        """Write `state`'s tag for an approval if the state machine allows it.

        `then` runs under the same lock right after the tag is written (a deploy moves
        main there). The post-receive hook runs after the lock is released, since the
        shipped one starts a deploy that takes the lock itself.
        """
        target = format_target(self.name, approval_id)
        if state not in PREDECESSOR:
            raise IllegalTransition(f"{state} is not a transition of {target}: use propose")
        with self.repo() as repo, locked(transition_lock(self.dir)):
            shas = self._id_shas(approval_id, repo)
            if not shas:
                raise UnknownApproval(f"unknown approval {target}")
            before = self._load(approval_id, shas, repo)
            if state in DECISIONS and (decided := DECISIONS & set(shas)):
                raise AlreadyDecided(f"{target} was already {before.describe(next(iter(decided)))}")
            if state in shas or COMPETITOR.get(state) in shas:
                raise IllegalTransition(
                    f"cannot mark {target} {state}: it is already {before.describe(before.state)}"
                )
            if PREDECESSOR[state] not in shas:
                raise IllegalTransition(
                    f"cannot mark {target} {state}: it is {before.state}, not {PREDECESSOR[state]}"
                )
            ref = tag_ref(state, approval_id)
            tag = write_tag(
                repo, ref, before.commit.encode(), actor, f"{state} {target}", trailers or {}, body
            )
            if tag is None:  # only a writer bypassing the lock can get here
                raise IllegalTransition(f"cannot mark {target} {state}: {ref.decode()} exists")
            after = self._load(approval_id, {**shas, state: tag}, repo)
            if then:
                then(repo, after)
            refs.pack_if_many(repo)  # tags are written once: packing them loses nothing
        self._written(tag, ref)
        return after
