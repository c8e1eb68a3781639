"""Tag retention: which workflow tags may go (`plan`, a pure function) and the prune run
that records them in the meta repo, deletes them and packs the refs.

The policy:
- `deployed/*` are kept forever (and so are their build logs);
- `failed/*` and `denied/*` older than `failed_days` days are deleted (0 keeps them
  forever), a failed tag together with its build log `logs/<name>/<id>.log`;
- `proposal/*`, `approved/*` and `building/*` of an approval go once its terminal tag
  (`deployed`, `failed` or `denied`) exists, and so do its checks (`checked/<id>` and
  the reruns `checked/<id>.<run>`, workflow/checks.py) with their logs: a check ages
  with the proposal it checked;
- an approval without a terminal tag is never touched, nor is any tag hyperhive did not
  write (a lightweight tag, a name outside the state machine);
- `refs/hyperhive/last-id` is never touched, so ids are not handed out twice.

A run holds a hive-wide prune lock. For each agent, under the transition lock every
transition takes, its loose tags are packed and the plan is made; one meta commit records
every tag to be removed (`meta.record_prune`); then each repo's tags go in one atomic
replacement of `packed-refs`, again under its transition lock, so a reader sees either
all of them or none of them gone. Destroyed agents' kept repos are left as they were.
No hook runs for a deletion: pruning is housekeeping, and the shipped post-receive would
take a deleted `approved/<id>` for a deploy request.
"""

import logging
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from dulwich.objects import Tag

from hyperhive.errors import BadInput, HiveError
from hyperhive.gitstore import refs
from hyperhive.gitstore.repos import open_repo
from hyperhive.gitstore.tags import read_tag
from hyperhive.home import Home
from hyperhive.wire import notify
from hyperhive.workflow import checks, meta
from hyperhive.workflow.approvals import LAST_ID_REF, parse_tag_refs
from hyperhive.workflow.lock import locked, transition_lock
from hyperhive.workflow.states import ORDER, TERMINAL, State

log = logging.getLogger("hyperhive.retention")

DAY = 86400
TAGS = refs.TAGS
AGEING = frozenset({State.FAILED, State.DENIED})  # terminal tags that expire
CHECKED = "checked/"  # the checks' tags (workflow/checks.py)


def plan(tags: Mapping[str, int], now: float, failed_days: int) -> set[str]:
    """The tags of one applied repo to delete.

    `tags` maps `<state>/<id>` to the time the tag was written (unix seconds). A failed or
    denied tag goes when it is older than `failed_days` days, exactly that old is kept;
    `failed_days` 0 keeps them forever."""
    by_id = parse_tag_refs({name.encode(): written for name, written in tags.items()})
    doomed = set()
    for approval_id, states in by_id.items():
        if not TERMINAL & states.keys():
            continue  # pending, approved or building: untouched
        for state, written in states.items():
            expired = failed_days > 0 and now - written > failed_days * DAY
            if state not in TERMINAL or (state in AGEING and expired):
                doomed.add(f"{state}/{approval_id}")
    for name in tags:  # a check goes with its approval's proposal: once it ended
        check = checks.parse_name(name.removeprefix(CHECKED)) if name.startswith(CHECKED) else None
        if check and TERMINAL & by_id.get(check[0], {}).keys():
            doomed.add(name)
    return doomed


def tag_id(tag: str) -> int:
    """The approval id of a workflow tag name (`<state>/<id>`, `checked/<id>[.<run>]`)."""
    return int(tag.rpartition("/")[2].partition(".")[0])


@dataclass
class PruneReport:
    failed_days: int
    dry_run: bool
    removed: list[meta.PrunedTag] = field(default_factory=list)  # or would remove
    logs: list[Path] = field(default_factory=list)  # build logs removed (or would be)
    record: str | None = None  # the meta commit recording the run
    errors: dict[str, str] = field(default_factory=dict)  # agent -> why it was skipped

    def to_json(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "failed_days": self.failed_days,
            "removed": [t.listed() for t in self.removed],
            "logs": [str(p) for p in self.logs],
            "record": self.record,
            "errors": [{"agent": a, "error": e} for a, e in self.errors.items()],
        }


def prune_lock(home: Home) -> Path:
    """Held for a whole run: the daemon's job and `hyperhive prune` never interleave."""
    return home.meta_dir / "hyperhive-prune.lock"


def _plan_repo(
    home: Home, name: str, failed_days: int, now: float, dry_run: bool
) -> dict[bytes, tuple[bytes, meta.PrunedTag]]:
    """Pack the repo's tags (unless a dry run) and pick what goes: ref -> (its sha, its
    record line)."""
    directory = home.applied_dir(name)
    with (
        open_repo(directory) as repo,
        nullcontext() if dry_run else locked(transition_lock(directory)),
    ):
        if not dry_run:
            refs.pack(repo, TAGS)
        tags, objects = {}, {}
        for rest, sha in refs.under(repo, TAGS).items():
            obj = repo[sha]
            if isinstance(obj, Tag):  # lightweight tags were not written by hyperhive
                tags[rest.decode()] = (sha, read_tag(repo, TAGS + rest, sha))
                objects[sha] = obj
        doomed = plan({t: info.time for t, (_, info) in tags.items()}, now, failed_days)
        last = refs.read(repo, LAST_ID_REF)
        counted = int(repo[last].data) if last else 0
        if doomed and (highest := max(tag_id(t) for t in doomed)) > counted:
            raise HiveError(
                f"refs/hyperhive/last-id of {name} ({counted}) is below approval {highest}: "
                "deleting its tags could let that id be handed out again; nothing pruned"
            )
        picked = {}
        for t in doomed:
            sha, info = tags[t]
            # The whole tag object goes into the record: who, when and why outlive the tag.
            raw = objects[sha].as_raw_string()
            kept = meta.PrunedTag(name, t, info.target, info.time, sha=sha.decode(), raw=raw)
            picked[TAGS + t.encode()] = (sha, kept)
        return picked


def _order(t: meta.PrunedTag) -> tuple:
    state, _, rest = t.tag.partition("/")
    if state == CHECKED.rstrip("/"):  # after the proposal, in run order
        return t.agent, tag_id(t.tag), 0.5, checks.parse_name(rest)[1]
    return t.agent, tag_id(t.tag), ORDER.index(State(state)), 0


def _build_logs(home: Home, tags: list[meta.PrunedTag]) -> list[Path]:
    """The build logs that go with the failed tags in `tags` (denied ones never built)."""
    paths = []
    for t in tags:
        state, _, rest = t.tag.partition("/")
        if state == CHECKED.rstrip("/"):  # a check's log goes with its tag
            path = home.check_log(t.agent, *checks.parse_name(rest))
        elif state == State.FAILED:
            path = home.build_log(t.agent, int(rest))
        else:
            continue
        if path.exists():
            paths.append(path)
    return paths


def prune(
    home: Home, failed_days: int, dry_run: bool = False, now: float | None = None
) -> PruneReport:
    """Apply the policy to every agent's applied repo (see the module's docstring). An
    agent whose repo cannot be pruned is skipped and named in `errors` (logged only if
    unexpected: the caller reports them); the others are pruned all the same."""
    if failed_days < 0:
        raise BadInput(f"failed days must be 0 (keep forever) or more, not {failed_days}")
    home.require()
    now = time.time() if now is None else now
    report = PruneReport(failed_days, dry_run)
    with nullcontext() if dry_run else locked(prune_lock(home)):
        plans = {}
        for name in home.agent_names():
            try:
                plans[name] = _plan_repo(home, name, failed_days, now, dry_run)
            except HiveError as e:  # a refusal: reported, the caller says it
                report.errors[name] = str(e)
            except Exception as e:
                log.exception("%s: not pruned", name)
                report.errors[name] = f"{type(e).__name__}: {e}"
        planned = sorted((t for p in plans.values() for _, t in p.values()), key=_order)
        if dry_run:
            report.removed, report.logs = planned, _build_logs(home, planned)
            return report
        if not planned:
            return report
        report.record = meta.record_prune(home, planned, failed_days).decode()
        for name, doomed in plans.items():
            if not doomed:
                continue
            directory = home.applied_dir(name)
            try:
                with open_repo(directory) as repo, locked(transition_lock(directory)):
                    refs.pack(repo, TAGS, {ref: sha for ref, (sha, _) in doomed.items()})
            except HiveError as e:
                report.errors[name] = str(e)
                continue
            except Exception as e:
                log.exception("%s: tags not deleted", name)
                report.errors[name] = f"{type(e).__name__}: {e}"
                continue
            gone = sorted((t for _, t in doomed.values()), key=_order)
            report.removed += gone
            for path in _build_logs(home, gone):
                try:
                    path.unlink()
                    report.logs.append(path)
                except OSError as e:
                    log.warning("%s: build log %s not removed: %s", name, path, e)
            log.info("%s: pruned %d tags", name, len(gone))
            notify.changed(home, name, TAGS.decode())
    return report
