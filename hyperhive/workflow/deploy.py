"""Deploying an approved config: building → deployed | failed, one build per agent at a time."""

import logging
import time
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path

from dulwich.repo import Repo

from hyperhive.gitstore import refs
from hyperhive.home import Home
from hyperhive.names import ENGINE, format_target
from hyperhive.runtime.base import BuildError, Runtime
from hyperhive.wire import notify
from hyperhive.workflow import meta
from hyperhive.workflow.approvals import MAIN, Approval, Approvals
from hyperhive.workflow.lock import build_lock, locked
from hyperhive.workflow.states import TERMINAL, State

log = logging.getLogger("hyperhive.build")

ACTOR = ENGINE
TAIL_LINES = 50
LOG_MAX_BYTES = 16 * 1024 * 1024  # a build's or a check's log file, at most


class BuildLog:
    """Writes each line to `logs/<name>/<id>.log` (flushed at once) and to logging,
    keeping the last lines for the `failed/<id>` tag. At most `max_bytes` go to the file
    (then one line saying it was cut); the tail is kept whatever the size. A check's log
    is one too (`publish` its live topic)."""

    def __init__(
        self,
        home: Home,
        path: Path,
        name: str,
        approval_id: int,
        publish: Callable[[str], None] | None = None,
        max_bytes: int = LOG_MAX_BYTES,
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.home, self.name, self.id = home, name, approval_id
        self.target = format_target(name, approval_id)
        self.file = path.open("a", buffering=1)
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.publish = publish or (lambda text: notify.build_line(home, name, approval_id, text))
        self.max_bytes = self.left = max_bytes

    def line(self, text: str) -> None:
        self.tail.append(text)
        if self.left <= 0:
            return  # cut: the tail still reaches the tag
        size = len(text.encode(errors="replace")) + 1
        if size > self.left:
            self.left = 0
            text = f"… the log is cut here: it reached {self.max_bytes} bytes"
        else:
            self.left -= size
        self.file.write(text + "\n")
        log.info("%s: %s", self.target, text)
        self.publish(text)

    def close(self) -> None:
        self.file.close()


def _move_main(repo: Repo, approval: Approval) -> None:
    refs.cas(repo, MAIN, refs.read(repo, MAIN), approval.commit.encode())


def recover(home: Home, name: str) -> list[Approval]:
    """End every `building/<id>` without a terminal tag as `failed/<id>` (Reason:
    interrupted), and bring main and meta in line with the last deployed tag.
    Call only while holding the agent's build lock: no build can be running then."""
    approvals = Approvals(home, name)
    ended = []
    for approval_id, states in sorted(approvals.states().items()):
        if State.BUILDING in states and not TERMINAL & states:
            log.warning("%s#%d: build was interrupted; marking it failed", name, approval_id)
            ended.append(
                approvals.transition(
                    approval_id,
                    State.FAILED,
                    ACTOR,
                    {"Reason": "interrupted", "Build-Log": str(home.build_log(name, approval_id))},
                )
            )
    _reconcile(home, approvals)
    return ended


def _reconcile(home: Home, approvals: Approvals) -> None:
    """A crash between the deployed tag, main and the meta commit leaves them apart."""
    last = approvals.last_deployed()
    if last is None:
        return
    last_id, commit = last[0], last[1].target
    with approvals.repo() as repo:
        main = refs.read(repo, MAIN)
        if main != commit.encode():
            log.warning(
                "%s#%d: main is not at the last deployed commit; moving it", approvals.name, last_id
            )
            refs.cas(repo, MAIN, main, commit.encode())
    if meta.pins(home).get(approvals.name, {}).get("rev") != commit:
        meta.record_deploy(home, approvals.name, last_id, commit)


def deploy(home: Home, name: str, approval_id: int, runtime: Runtime) -> Approval:
    """Build an approved config now (waiting for an agent's running build first)."""
    approvals = Approvals(home, name)
    approvals.get(approval_id)  # an unknown id is refused before any lock is taken
    with locked(build_lock(approvals.dir)):
        recover(home, name)
        log_path = home.build_log(name, approval_id)
        approval = approvals.transition(
            approval_id, State.BUILDING, ACTOR, {"Build-Log": str(log_path)}
        )
        build = BuildLog(home, log_path, name, approval_id)
        started = time.monotonic()
        reason = None
        try:
            build.line(f"build {approval.target} {approval.commit}")
            runtime.update(name, approval.commit, build.line)
        except BuildError as e:
            reason = str(e)
        except Exception as e:  # a bug in a runtime must still end as failed/<id>
            for line in traceback.format_exc().rstrip().splitlines():  # one log line each
                build.line(line)
            reason = f"internal error: {e}"
        duration = f"{time.monotonic() - started:.2f}s"
        trailers = {"Build-Log": str(log_path), "Duration": duration}
        if reason is None:
            build.line(f"deployed in {duration}")
            build.close()
            approval = approvals.transition(
                approval_id,
                State.DEPLOYED,
                ACTOR,
                trailers,
                then=_move_main,
            )
            meta.record_deploy(home, name, approval_id, approval.commit)
        else:
            build.line(f"build failed: {reason}")
            build.close()
            approval = approvals.transition(
                approval_id,
                State.FAILED,
                ACTOR,
                {"Reason": reason, **trailers},
                body="\n".join(f"| {line}" for line in build.tail),
            )
    return approval
