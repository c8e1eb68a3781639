"""Checks of proposals: what a deploy would evaluate and build, run before the operator
decides, its result recorded in git beside the approval's tags.

A check runs the runtime's `check` (runtime/base.py: evaluation, the policy's checks and,
with nixos-container, the build of the system, never a switch) under a time limit, its
output streamed to `logs/<name>/check-<id>[.<run>].log` (bounded as a build log is).
Its result is an annotated tag in the applied repo, pointing at the proposal's commit:

    refs/tags/checked/<id>         the first check of approval <id>
    refs/tags/checked/<id>.<run>   a rerun (`hyperhive check NAME#ID`): run 2, 3, …

with the trailers `Result: passed|failed`, `Duration`, `Check-Log`, `Policy-Digest`
(sha256 of the evaluated policy as canonical JSON), `Runtime`, `Reason` (a failure), and
as body the evaluated policy (`policy: {json}`) or the log's last lines (`| line`). Tags,
not notes: every other fact of the workflow is a tag, they are written with the same
compare-and-swap under the same lock, `git show checked/5` reads alone, and retention
already knows how to record and delete tags (a check goes when its approval's proposal
tag goes: once the approval ended). They are outside the state machine (`parse_tag_refs`
ignores them): a check never moves an approval, and an approval decided while its check
runs still gets the check's result recorded. A destroyed agent's check is dropped.

Approving needs a passed latest check, or `force` ("approve anyway"), recorded in the
`approved/<id>` tag as `Check: passed` or `Check: failed, overridden` /
`Check: unfinished, overridden` (`gate`, `approve`).
"""

import hashlib
import json
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hyperhive.errors import CheckNotPassed, IllegalTransition
from hyperhive.gitstore import refs
from hyperhive.gitstore.cache import LRU
from hyperhive.gitstore.repos import LazyRepo
from hyperhive.gitstore.tags import read_tag, write_tag
from hyperhive.home import Home
from hyperhive.names import ENGINE, MANAGER, format_target
from hyperhive.runtime import stream
from hyperhive.runtime.base import BuildError, Runtime
from hyperhive.wire import notify
from hyperhive.workflow.approvals import Approval, Approvals
from hyperhive.workflow.deploy import BuildLog
from hyperhive.workflow.lock import check_lock, locked, transition_lock
from hyperhive.workflow.states import State

log = logging.getLogger("hyperhive.checks")

PREFIX = b"refs/tags/checked/"
ACTOR = ENGINE
PASSED, FAILED = "passed", "failed"
UNFINISHED = "unfinished"  # no result recorded (yet): queued, running, or never run
MAX_POLICY_BYTES = 64 * 1024  # a larger evaluated policy is kept as its digest only

Tell = Callable[[str], None]  # a message (its body) to the manager, from `system`


def tag_name(approval_id: int, run: int) -> str:
    """`checked/<id>` for the first run, `checked/<id>.<run>` for reruns."""
    return f"checked/{int(approval_id)}" + ("" if run == 1 else f".{int(run)}")


def tag_ref(approval_id: int, run: int) -> bytes:
    return b"refs/tags/" + tag_name(approval_id, run).encode()


def parse_name(rest: str) -> tuple[int, int] | None:
    """(id, run) of a tag name below `checked/`, None for anything else."""
    raw_id, dot, raw_run = rest.partition(".")
    if not raw_id.isdigit() or (dot and (not raw_run.isdigit() or int(raw_run) < 2)):
        return None
    return int(raw_id), int(raw_run) if dot else 1


def digest(policy: dict) -> str:
    canonical = json.dumps(policy, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Check:
    """One recorded check of an approval."""

    agent: str
    id: int
    run: int
    tag: str  # the ref name
    result: str  # passed | failed
    time: int
    duration: str
    log: str  # the log file's path
    reason: str = ""
    digest: str = ""
    runtime: str = ""
    tail: list[str] = field(default_factory=list)  # a failure's last log lines
    policy: dict | None = None  # what the check evaluated (passed, and not too large)

    def to_json(self) -> dict:
        return {
            "state": self.result,
            "run": self.run,
            "tag": self.tag,
            "time": self.time,
            "duration": self.duration,
            "log": self.log,
            "reason": self.reason,
            "policy_digest": self.digest,
            "runtime": self.runtime,
            "tail": self.tail,
            "policy": self.policy,
        }


def _from_tag(name: str, approval_id: int, run: int, info) -> Check:
    tail, policy = [], None
    for line in info.body.splitlines():
        if line.startswith("| ") or line == "|":
            tail.append(line[2:])
        elif line.startswith("policy: "):
            try:
                policy = json.loads(line[len("policy: ") :])
            except ValueError:
                policy = None
    t = info.trailers
    return Check(
        agent=name,
        id=approval_id,
        run=run,
        tag=info.ref,
        result=PASSED if t.get("Result") == PASSED else FAILED,
        time=info.time,
        duration=t.get("Duration", ""),
        log=t.get("Check-Log", ""),
        reason=t.get("Reason", ""),
        digest=t.get("Policy-Digest", ""),
        runtime=t.get("Runtime", ""),
        tail=tail,
        policy=policy if isinstance(policy, dict) else None,
    )


def _by_id(listed: dict[bytes, bytes]) -> dict[int, dict[int, bytes]]:
    by_id: dict[int, dict[int, bytes]] = {}
    for rest, sha in listed.items():
        if parsed := parse_name(rest.decode(errors="replace")):
            by_id.setdefault(parsed[0], {})[parsed[1]] = sha
    return by_id


# The checks built from a listing of a repo's check tags, by repo, while that listing is
# the current one: a dashboard asks for every pending approval's check.
_built: LRU[Path, tuple[dict, dict[int, list[Check]]]] = LRU(1024)


def recorded(home: Home, name: str) -> dict[int, list[Check]]:
    """Every recorded check of the agent's approvals, by id, runs in order (built once per
    listing of the check tags, each tag parsed once; shared: never change it)."""
    directory = home.applied_dir(name)
    listed = refs.listing(directory, PREFIX, _by_id)
    cached = _built.get(directory)
    if cached is not None and cached[0] is listed:
        return cached[1]
    with LazyRepo(directory) as opened:  # opened only for tags no cache holds
        found = {
            approval_id: [
                _from_tag(name, approval_id, run, read_tag(opened, tag_ref(approval_id, run), sha))
                for run, sha in sorted(runs.items())
            ]
            for approval_id, runs in listed.items()
        }
    _built.put(directory, (listed, found))
    return found


def latest(home: Home, name: str, approval_id: int) -> Check | None:
    """The approval's newest recorded check, None when none is."""
    runs = recorded(home, name).get(approval_id)
    return runs[-1] if runs else None


def next_run(home: Home, name: str, approval_id: int) -> int:
    runs = recorded(home, name).get(approval_id)
    return runs[-1].run + 1 if runs else 1


# -- running a check --------------------------------------------------------------------


def message(check: Check, subject: str = "") -> str:
    """What the manager is told: the result on the first line, then why and the tail."""
    target = format_target(check.agent, check.id)
    lines = [f"check_{check.result}: {target}"]
    if subject:
        lines.append(f"Subject: {subject}")
    if check.result == PASSED:
        lines.append(f"The check of {target} passed in {check.duration}: it can be approved.")
    else:
        lines.append(f"The check of {target} failed: {check.reason}")
        lines.append("Fix the config and propose again. The log's last lines:")
        lines += [f"  {line}" for line in check.tail[-20:]]
    return "\n".join(lines)


def run(
    home: Home,
    name: str,
    approval_id: int,
    runtime: Runtime,
    timeout: float,
    tell: Tell | None = None,
    started: Callable[[stream.Limit, Path], None] | None = None,
) -> Check | None:
    """Check the approval's commit now and record the result (see the module docstring).
    None when the agent was destroyed meanwhile or the check was cancelled (`Limit.cancel`:
    the daemon stops): it is dropped, its log removed.
    `started(limit, log)` is told the check's time limit (its `cancel` stops the check)
    and log file once it runs; `tell(body)` sends the manager the result: of every failed
    check (it can fix the config before the operator looks) and of its own proposals
    (each message costs the manager a turn: a passed check of the operator's is not one)."""
    approvals = Approvals(home, name)
    approval = approvals.get(approval_id)
    run_no, path = _reserve_log(home, name, approval_id)
    build = BuildLog(
        home, path, name, approval_id, lambda line: notify.check_line(home, name, approval_id, line)
    )
    began = time.monotonic()
    reason, found, limit = None, None, stream.Limit(timeout)
    try:
        with stream.time_limit(timeout) as limit:
            if started:
                started(limit, path)
            build.line(f"check {approval.target} {approval.commit} (run {run_no})")
            found = runtime.check(name, approval.commit, build.line)
    except BuildError as e:
        reason = str(e)
    except Exception as e:  # a bug in a runtime must still end as a failed check
        for line in traceback.format_exc().rstrip().splitlines():
            build.line(line)
        reason = f"internal error: {e}"
    duration = f"{time.monotonic() - began:.2f}s"
    gone = home.is_destroyed(name) or not (home.applied_dir(name) / "HEAD").is_file()
    if gone or limit.cancelled:  # no result: a stopping daemon runs it again at its start
        build.close()
        path.unlink(missing_ok=True)
        why = "the agent was destroyed" if gone else limit.cancelled
        log.info("%s: the check was dropped: %s", approval.target, why)
        return None
    build.line(f"check passed in {duration}" if reason is None else f"check failed: {reason}")
    build.close()
    trailers = {
        "Result": PASSED if reason is None else FAILED,
        "Reason": reason,
        "Duration": duration,
        "Check-Log": str(path),
        "Policy-Digest": digest(found) if found is not None else None,
        "Runtime": type(runtime).__name__,
    }
    if reason is None:
        policy_json = json.dumps(found, sort_keys=True, separators=(",", ":"))
        body = f"policy: {policy_json}" if len(policy_json) <= MAX_POLICY_BYTES else ""
    else:
        body = "\n".join(f"| {line}" for line in build.tail)
    check = record(home, name, approval, trailers, body, run_no)
    proposal = approval.states.get(State.PROPOSAL)
    if tell is not None and (check.result == FAILED or (proposal and proposal.actor == MANAGER)):
        try:
            tell(message(check, approval.subject))
        except Exception as e:  # the result is recorded; the message is a courtesy
            log.error("%s: the manager was not told of the check: %s", approval.target, e)
    return check


def run_once(
    home: Home,
    name: str,
    approval_id: int,
    runtime: Runtime,
    timeout: float,
    tell: Tell | None = None,
    started: Callable[[stream.Limit, Path], None] | None = None,
) -> Check | None:
    """`run`, unless a check of the approval is recorded by the time this process holds
    the agent's check lock: then that check. Ten `hyperhive approve` of one proposal
    racing with no daemon check it once (the others wait for that check, as for the
    daemon's), not ten times."""
    with locked(check_lock(home.applied_dir(name))):
        if (found := latest(home, name, approval_id)) is not None:
            return found
        return run(home, name, approval_id, runtime, timeout, tell, started)


def _reserve_log(home: Home, name: str, approval_id: int) -> tuple[int, Path]:
    """The next run number whose log file this process could create (two processes
    checking one proposal at once get a log each)."""
    run_no = next_run(home, name, approval_id)
    home.log_dir(name).mkdir(parents=True, exist_ok=True)
    while True:
        path = home.check_log(name, approval_id, run_no)
        try:
            path.open("x").close()
            return run_no, path
        except FileExistsError:
            run_no += 1  # another check's, running or cut by a crash


def record(
    home: Home, name: str, approval: Approval, trailers: dict, body: str, wanted: int = 1
) -> Check:
    """Write the check's tag: run `wanted` (its log's), or the next free one if taken."""
    approvals = Approvals(home, name)
    repo = approvals.repo()
    try:
        with locked(transition_lock(approvals.dir)):
            taken = _by_id(refs.under(repo, PREFIX)).get(approval.id, {})
            run_no = max(wanted, max(taken, default=0) + 1)  # the newest is the latest
            ref = tag_ref(approval.id, run_no)
            subject = f"check {format_target(name, approval.id)}: {trailers['Result']}"
            sha = write_tag(repo, ref, approval.commit.encode(), ACTOR, subject, trailers, body)
            if sha is None:  # only a writer bypassing the lock gets here
                raise IllegalTransition(f"cannot record the check: {ref.decode()} exists")
            info = read_tag(repo, ref, sha)
    finally:
        repo.close()
    notify.changed(home, name, ref.decode())
    return _from_tag(name, approval.id, run_no, info)


# -- deciding ---------------------------------------------------------------------------


def status(home: Home, name: str, approval_id: int) -> tuple[str, Check | None]:
    """(passed | failed | unfinished, the latest check)."""
    check = latest(home, name, approval_id)
    return (check.result if check else UNFINISHED), check


def gate(home: Home, name: str, approval_id: int, force: bool) -> dict[str, str]:
    """The `approved/<id>` tag's trailers about the check; CheckNotPassed when it did not
    pass and `force` (approve anyway) was not given."""
    result, check = status(home, name, approval_id)
    if result == PASSED:
        return {"Check": PASSED, "Check-Tag": check.tag}
    target = format_target(name, approval_id)
    if not force:
        why = f"failed: {check.reason}" if check else "has not finished"
        raise CheckNotPassed(
            f"the check of {target} {why}; approve anyway with --force "
            '(the forge: "approve anyway"; the API: {"force": true})'
        )
    trailers = {"Check": f"{result}, overridden"}
    if check:
        trailers["Check-Tag"] = check.tag
    return trailers


def approve(home: Home, name: str, approval_id: int, actor: str, force: bool = False) -> Approval:
    """The operator's approve: the check gate, then the transition with its trailers."""
    approvals = Approvals(home, name)
    approval = approvals.get(approval_id)
    if approval.state != State.PROPOSAL:  # the transition's own refusal says it best
        return approvals.approve(approval_id, actor)
    return approvals.transition(
        approval_id, State.APPROVED, actor, gate(home, name, approval_id, force)
    )


def pending_unchecked(home: Home) -> list[tuple[str, int]]:
    """Proposals waiting for a decision that have no recorded check: what a daemon
    checks at its start (it stopped, or none ran, while they were proposed)."""
    found = []
    for name in home.agent_names():
        checked = recorded(home, name)
        for a in Approvals(home, name).all(pending_only=True):
            if a.id not in checked:
                found.append((name, a.id))
    return found


# -- views ------------------------------------------------------------------------------


def check_json(
    home: Home,
    name: str,
    approval_id: int,
    live: dict | None = None,
    every: dict[int, list[Check]] | None = None,
) -> dict:
    """An approval's check as the CLI and the API show it: `state` is `queued` or
    `running` while the daemon has it (`live`), else the latest result (`passed`,
    `failed`) or `unfinished`; `result` and the other fields are the latest recorded
    check's (None/absent when there is none); `runs` how many were recorded. `every`:
    the agent's `recorded` checks, when the caller read them already."""
    runs = (recorded(home, name) if every is None else every).get(approval_id, [])
    data: dict = {"state": UNFINISHED, "result": None, "runs": len(runs)}
    if runs:
        data.update(runs[-1].to_json())
        data["result"] = runs[-1].result
    # a run whose result is recorded (its own log named by the latest tag) is over, even
    # while the worker still tells the manager
    over = runs and live and live.get("log") and runs[-1].log == live["log"]
    if live and not over:
        data.update(live)
    return data


def live_states(status: dict) -> dict[str, dict]:
    """A check worker's `status()` as `{target: {"state", …}}`."""
    found = {t: {"state": "queued", "ahead": i} for i, t in enumerate(status.get("queued", []))}
    for t, info in status.get("running", {}).items():
        found[t] = {"state": "running", "started": info.get("started"), "log": info.get("log")}
    return found


def history_json(home: Home, name: str, live: dict[str, dict] | None = None) -> dict:
    """`approvals.history_json` with each approval's check (`check_json`)."""
    from hyperhive.workflow.approvals import history_json as plain

    data = plain(home, name)
    for a in data["approvals"]:
        a["check"] = check_json(home, name, a["id"], (live or {}).get(a["target"]))
    return data
