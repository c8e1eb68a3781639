"""Installing and running git hooks in the applied repos, with git's own contract.

The shipped `post-receive` (hooks/post-receive) acts only on `refs/tags/approved/<id>`,
by running `hyperhive deploy`, which queues the build on the daemon. While a repo's hook
is still that file, its effect is had without starting it: a tag that is not an approval
needs nothing, and in the daemon's own process an approval is queued on its build worker
directly (`Home.deploys`). Only an approval written elsewhere (the CLI) runs the hook.
A hook the operator changed is always run as it is.

A hook that fails is logged and recorded in `logs/<name>/hooks.jsonl` (which the
approval's history reads); it never rolls back the tag that triggered it.
"""

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from hyperhive.errors import HiveError
from hyperhive.home import Home
from hyperhive.resources import HOOKS_DIR

log = logging.getLogger("hyperhive.hooks")

HOOK_NAMES = ("post-receive",)
TAIL_LINES = 50


@dataclass(frozen=True)
class HookRun:
    hook: str
    refs: list[str]
    exit: int
    time: int
    duration: float
    tail: list[str]


def install(repo_dir: Path) -> None:
    for name in HOOK_NAMES:
        dest = repo_dir / "hooks" / name
        dest.parent.mkdir(exist_ok=True)
        shutil.copyfile(HOOKS_DIR / name, dest)
        dest.chmod(0o750)  # the hive is not for other users (home.UMASK)


def hyperhive_command() -> str:
    """The `hyperhive` executable of this installation, for hooks to call back."""
    beside = Path(sys.executable).parent / "hyperhive"
    return str(beside) if beside.exists() else shutil.which("hyperhive") or "hyperhive"


def hook_env(home: Home, name: str) -> dict[str, str]:
    return {
        **os.environ,
        "GIT_DIR": str(home.applied_dir(name)),
        "HYPERHIVE_HOME": str(home.root),
        "HYPERHIVE_AGENT": name,
        "HYPERHIVE_BIN": hyperhive_command(),
    }


def history_file(home: Home, name: str) -> Path:
    return home.log_dir(name) / "hooks.jsonl"


def run_post_receive(
    home: Home, name: str, updates: list[tuple[bytes, bytes, bytes]]
) -> HookRun | None:
    """Run `post-receive` with `<old> <new> <ref>` lines on stdin, streaming its output
    into the log as it comes. Returns None when the repo has no executable hook."""
    repo_dir = home.applied_dir(name)
    hook = repo_dir / "hooks" / "post-receive"
    if not os.access(hook, os.X_OK):
        return None
    ref_names = [u[2].decode() for u in updates]
    started = time.time()
    approved = [r for r in ref_names if r.startswith(APPROVED_PREFIX)]
    if is_shipped(hook) and (not approved or home.deploys is not None):
        code, lines = _shipped_in_process(home, name, approved)
        return _record(
            home,
            name,
            HookRun("post-receive", ref_names, code, int(started), time.time() - started, lines),
        )
    stdin = b"".join(b"%s %s %s\n" % u for u in updates)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    try:
        proc = subprocess.Popen(
            [str(hook)],
            cwd=repo_dir,
            env=hook_env(home, name),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except OSError as e:
        tail.append(f"cannot run {hook}: {e}")
        code = 126
    else:
        try:
            proc.stdin.write(stdin)
            proc.stdin.close()
        except BrokenPipeError:  # the hook need not read its input
            pass
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            tail.append(line)
            log.info("%s: hook: %s", name, line)
        code = proc.wait()
    run = HookRun("post-receive", ref_names, code, int(started), time.time() - started, list(tail))
    return _record(home, name, run)


def _record(home: Home, name: str, run: HookRun) -> HookRun:
    if run.exit != 0:
        log.error("%s: post-receive exited %d for %s", name, run.exit, " ".join(run.refs))
    path = history_file(home, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(asdict(run)) + "\n")
    return run


APPROVED_PREFIX = "refs/tags/approved/"


@cache
def _shipped_hook() -> bytes:
    return (HOOKS_DIR / "post-receive").read_bytes()


def is_shipped(hook: Path) -> bool:
    """Whether `hook` is byte for byte the post-receive this installation ships."""
    try:
        return hook.read_bytes() == _shipped_hook()
    except OSError:
        return False


def _shipped_in_process(home: Home, name: str, approved: list[str]) -> tuple[int, list[str]]:
    """What the shipped hook would do and print, done here: each approval queued on the
    daemon's build worker (the output and exit status of its `hyperhive deploy`)."""
    code, lines = 0, []
    for ref in approved:
        target = f"{name}#{ref.removeprefix(APPROVED_PREFIX)}"
        try:
            ahead = home.deploys(name, int(ref.removeprefix(APPROVED_PREFIX)))
        except (HiveError, ValueError) as e:
            code = 1
            lines.append(f"hyperhive: {e}")  # as the CLI says it
        else:
            lines.append(f"queued {target} on the daemon ({ahead} ahead)")
    return code, lines[-TAIL_LINES:]


def concerns(run: HookRun, approval_id: int) -> bool:
    """Whether a hook run was for one of the approval's tags."""
    return any(
        ref.startswith("refs/tags/") and ref.rsplit("/", 1)[-1] == str(approval_id)
        for ref in run.refs
    )


def runs(home: Home, name: str) -> list[HookRun]:
    """Every recorded hook run of an agent, oldest first; a torn last line is skipped."""
    path = history_file(home, name)
    if not path.exists():
        return []
    result = []
    for line in path.read_text().splitlines():
        try:
            result.append(HookRun(**json.loads(line)))
        except (ValueError, TypeError):
            log.warning("%s: unreadable hook record in %s: %r", name, path, line[:200])
    return result
