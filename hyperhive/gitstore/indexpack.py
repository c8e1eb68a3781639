"""A pushed pack indexed and checked by `git index-pack`, as git's own receive-pack does,
into a quarantine object directory: dulwich did it in Python, one object at a time (a
10,000-commit push took over a minute where `git push` to a bare repo takes a second or
two).

`git index-pack --stdin --fix-thin --strict` reads the pack from a pipe while packscan
checks it (each byte passed on only once the header of its object is within the limits):

- it hashes every object (an id that lies is refused) and writes pack and index into the
  quarantine (`GIT_OBJECT_DIRECTORY`), reading the repo's objects as an alternate so a
  thin pack's bases resolve; `--fix-thin` appends them, so the pack stands on its own;
- `--strict` parses every object as `git fsck` does (malformed commits, trees, tags,
  `.gitmodules`) and checks that every object a pushed one names is in the pack or the
  repo: what the push's tips reach is complete, given that a stored object's is. The
  checks of entry names are left to gitstore/treecheck.py (`STRICT`), which says which
  path is wrong and runs wherever a commit enters, not only on a push;
- `--max-input-size` holds it to the push limit too, whatever packscan let through.

git runs with git_env (no system or user config, none of the caller's `GIT_*`).
"""

import contextlib
import re
import subprocess
import tempfile
from pathlib import Path

from hyperhive.gitstore.gitcli import git_env, git_program, stderr_tail

INDEX_SECONDS = 600  # what is left to git once the last byte is in: deltas, fsck, index
PIPE_BYTES = 64 * 1024
# fsck's name checks, which treecheck makes on every tree a checkout would write
STRICT = "--strict=" + ",".join(
    f"{msg}=ignore"
    for msg in ("emptyName", "fullPathname", "hasDot", "hasDotdot", "hasDotgit", "duplicateEntries")
)
MISSING_RE = re.compile(r"did not receive expected object ([0-9a-f]{40})")
FULL_RE = re.compile(r"No space left on device|Disk quota exceeded")
FSCK_RE = re.compile(r"error: object ([0-9a-f]{40}): (\w+): (.*)")


class IndexFailed(Exception):
    """git refused the pack: `reason` is the short status for git's `ng` line."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class PackIndexer:
    """One `git index-pack` into `objects` (the quarantine) of the repo at `git_dir`;
    `write` feeds it, `finish` waits for its pack. Use it in a `with`: on the way out a
    git still running is killed."""

    def __init__(self, git_dir: Path, objects: Path, alternates: list[Path], max_bytes: int):
        env = git_env(
            GIT_DIR=str(git_dir),
            GIT_OBJECT_DIRECTORY=str(objects),
            GIT_ALTERNATE_OBJECT_DIRECTORIES=":".join(str(p) for p in alternates),
        )
        argv = [git_program(), "index-pack", "--stdin", "--fix-thin", STRICT]
        self.err = tempfile.TemporaryFile()  # noqa: SIM115 - closed by __exit__
        try:
            self.proc = subprocess.Popen(
                [*argv, f"--max-input-size={max_bytes}"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.err,
                env=env,
                bufsize=PIPE_BYTES,
            )
        except BaseException:
            self.err.close()
            raise

    def __enter__(self) -> "PackIndexer":
        return self

    def __exit__(self, *exc) -> None:
        proc = self.proc
        if proc.poll() is None:
            proc.kill()
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(BrokenPipeError):  # buffered for a git that is gone
                pipe.close()
        proc.wait()
        self.err.close()

    def write(self, data) -> None:
        try:
            self.proc.stdin.write(data)
        except BrokenPipeError:  # git has stopped reading: it failed, and says why
            self.proc.wait()
            raise self._failure() from None

    def finish(self, timeout: float = INDEX_SECONDS) -> str:
        """Wait for git to index what was written; the name of the pack it wrote."""
        try:  # the rest of the input, then its one line once the index is written
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise IndexFailed("timed out", f"git index-pack took over {timeout:g} s") from None
        if self.proc.returncode != 0:
            raise self._failure()
        kind, _, name = out.decode().strip().partition("\t")
        if kind != "pack" or not re.fullmatch(r"[0-9a-f]{40}", name):
            raise IndexFailed("unreadable pack", f"git index-pack said {out!r}")
        return name

    def _failure(self) -> IndexFailed:
        self.err.seek(0)
        text = self.err.read().decode(errors="replace")
        if full := FULL_RE.search(text):  # the hive's disk, not the client's bytes
            return IndexFailed(
                "disk full", f"the hive's disk is full ({full[0]}): free space and try again"
            )
        if missing := MISSING_RE.search(text):
            return IndexFailed(
                "missing objects", f"the push lacks object {missing[1]} that a pushed one names"
            )
        if bad := FSCK_RE.search(text):
            return IndexFailed("malformed object", f"object {bad[1]} is malformed: {bad[3]}")
        return IndexFailed("unreadable pack", f"unreadable pack: {stderr_tail(self.err)}")
