"""What the engine asks of the git CLI: the walks over a long history that dulwich does in
Python, one object at a time (each packed one inflated through its whole delta chain), so
that a 10,000-commit history took most of a minute to propose where `git fetch` of it
takes half a second. Short walks stay dulwich's (no process to start); past a bound, git's.

**Copying a history as one pack** (`copy_pack`):

- `git pack-objects --revs --thin` runs in the destination with the source's object
  directory as an alternate (`GIT_ALTERNATE_OBJECT_DIRECTORIES`), so git reads the
  source's objects and nothing else of it (no config, no hooks). It packs what the wanted
  commit reaches minus what the destination's refs reach (the haves `git fetch` would
  send), reusing the source's deltas.
- Its output is relayed through this process, counted against `max_bytes`, into
  `git index-pack --stdin --fix-thin` in the destination, without the alternate: it hashes
  every object (an id that lies is refused), completes the thin pack from the destination's
  own objects (so a base the destination lacks fails here, never later) and writes pack
  and index into a temporary directory inside `objects/`, one fsync for the pack.
- Both move into `objects/pack`, the index last: readers find a pack by its index, so none
  sees a half-moved one. A copy cut short leaves only its temporary directory, which the
  next copy into that repo removes once it is an hour old.

Why git rather than a faster Python copy: dulwich's MissingObjectFinder and
generate_pack_data walk the same objects the same way (the cost is the per-object reads,
not the bookkeeping); hard-linking the source's packs would bring every object of the
config repo, reachable or not, and nothing that checks them. git's walk is `git fetch`'s
own, so the applied repo ends with exactly what a fetch would have brought.

**Ancestry** (`is_ancestor`, over a repo's objects or a push's quarantine): a walk back
of at most ANCESTRY_WALK commits in Python, then `git merge-base --is-ancestor`.

git runs with no system or user config and none of the caller's `GIT_*` variables (a
hook's `GIT_DIR` or quarantine would point it elsewhere).
"""

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from dulwich.object_store import DiskObjectStore

from hyperhive.errors import GitFailed, HistoryTooLarge

TEMP_PREFIX = "hyperhive-copy-"
STALE_SECONDS = 3600  # a copy's temporary directory older than this was left by a crash
COPY_SECONDS = 600  # git's walk and write of one history, at most
CHUNK = 1 << 20
ANCESTRY_WALK = 100  # commits walked in Python before git is asked
ANCESTRY_SECONDS = 60


def git_env(**extra: str) -> dict[str, str]:
    """The environment git runs in: the caller's, without `GIT_*` and without config files.
    Every repo it is pointed at is the hive's own, so `safe.directory` trusts it whoever
    owns it (an operator's `sudo hyperhive propose` on the daemon user's hive)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_COUNT="1",
        GIT_CONFIG_KEY_0="safe.directory",
        GIT_CONFIG_VALUE_0="*",
        LC_ALL="C",
        **extra,
    )
    return env


def git_program() -> str:
    git = shutil.which("git")
    if git is None:
        raise GitFailed("walking a long history needs the git CLI, and `git` is not on PATH")
    return git


def objects_env(objects: DiskObjectStore) -> dict[str, str]:
    """git_env that shows git the objects of `objects`: its directory, its alternates, and
    the repo whose `objects` it or an alternate is (a push's quarantine inside it)."""
    path = Path(objects.path)
    alternates = [Path(a.path) for a in objects.alternates if isinstance(a, DiskObjectStore)]
    owner = next((p.parent for p in (path, *alternates) if p.name == "objects"), None)
    if owner is None:
        raise GitFailed(f"{path} is no repo's object directory, nor has one as an alternate")
    return git_env(
        GIT_DIR=str(owner),
        GIT_OBJECT_DIRECTORY=str(path),
        GIT_ALTERNATE_OBJECT_DIRECTORIES=":".join(str(p) for p in alternates),
    )


def is_ancestor(
    objects: DiskObjectStore, old: bytes, new: bytes, walk: int = ANCESTRY_WALK
) -> bool:
    """Whether commit `old` is `new` or one of its ancestors (a fast-forward from `old` to
    `new`) in `objects` (a repo's, or a push's quarantine before any ref names it): the
    usual answers, a few commits back, found in Python; a longer walk is git's."""
    todo, seen = [new], set()
    while todo and len(seen) < walk:
        sha = todo.pop()
        if sha == old:
            return True
        if sha not in seen:
            seen.add(sha)
            todo.extend(objects[sha].parents)
    if not todo:
        return False
    argv = [git_program(), "merge-base", "--is-ancestor", old.decode(), new.decode()]
    env = objects_env(objects)
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, timeout=ANCESTRY_SECONDS)
    except subprocess.TimeoutExpired:
        raise GitFailed(f"git merge-base took over {ANCESTRY_SECONDS} s") from None
    if proc.returncode not in (0, 1):
        raise GitFailed(f"git merge-base failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.returncode == 0


def sweep(
    objects_dir: Path, min_age: float = STALE_SECONDS, prefix: str = TEMP_PREFIX
) -> list[Path]:
    """Remove the temporary directories (named `prefix`…) of work a crash cut short."""
    now, removed = time.time(), []
    for path in objects_dir.glob(f"{prefix}*"):
        try:
            if now - path.lstat().st_mtime >= min_age:
                shutil.rmtree(path)
                removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def copy_pack(
    src_objects: Path,
    dst_git_dir: Path,
    want: bytes,
    haves: Iterable[bytes],
    *,
    max_bytes: int,
    timeout: float = COPY_SECONDS,
) -> int:
    """Copy `want` and everything it reaches that `haves` (commits, tags, trees or blobs
    of the destination) do not, from the object directory `src_objects` into the repo at
    `dst_git_dir`, as one pack. Returns the pack's size in bytes. A pack larger than
    `max_bytes` is refused (`HistoryTooLarge`) and nothing is kept; so is a copy that
    takes over `timeout` seconds (`GitFailed`)."""
    git = git_program()
    objects = dst_git_dir / "objects"
    sweep(objects)
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=objects))
    env = git_env(GIT_DIR=str(dst_git_dir))
    with tempfile.TemporaryFile() as pack_err, tempfile.TemporaryFile() as index_err:
        packer = subprocess.Popen(
            [git, "pack-objects", "--revs", "--thin", "--stdout", "--delta-base-offset", "-q"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=pack_err,
            env={**env, "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(src_objects)},
        )
        try:
            indexer = subprocess.Popen(
                [git, "index-pack", "--stdin", "--fix-thin", str(tmp / "incoming.pack")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=index_err,
                env=env,
            )
        except BaseException:
            _kill([packer])
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        procs = (packer, indexer)
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            for proc in procs:  # the relay and the waits then end: the pipes close
                if proc.poll() is None:
                    proc.kill()

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            size = _relay(packer, indexer, want, haves, max_bytes)
            out = indexer.stdout.read()  # its pack's name, once it has written it
            if expired.is_set():
                raise GitFailed(f"copying {want.decode()[:12]} took over {timeout:g} s")
            for proc, err, name in (
                (packer, pack_err, "pack-objects"),
                (indexer, index_err, "index-pack"),
            ):
                if proc.wait() != 0:
                    raise GitFailed(
                        f"git {name} failed copying {want.decode()[:12]}: {stderr_tail(err)}"
                    )
            kind, _, name = out.decode().strip().partition("\t")
            if kind != "pack" or len(name) != 40:
                raise GitFailed(f"git index-pack said {out!r}, not the name of its pack")
            for suffix in (".pack", ".rev", ".idx"):  # the index last; .rev if git wrote one
                if (tmp / f"incoming{suffix}").exists():
                    os.replace(tmp / f"incoming{suffix}", objects / "pack" / f"pack-{name}{suffix}")
            return size
        finally:
            timer.cancel()
            _kill(procs)
            shutil.rmtree(tmp, ignore_errors=True)


def _relay(
    packer: subprocess.Popen,
    indexer: subprocess.Popen,
    want: bytes,
    haves: Iterable[bytes],
    max_bytes: int,
) -> int:
    """Give pack-objects its revisions, then pass its pack on to index-pack, counted."""
    assert packer.stdin and packer.stdout and indexer.stdin
    try:
        packer.stdin.write(want + b"\n" + b"".join(b"^" + h + b"\n" for h in haves))
        packer.stdin.close()
    except BrokenPipeError:
        pass  # pack-objects failed: its exit status and message say why
    size, fd = 0, packer.stdout.fileno()
    while chunk := os.read(fd, CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise HistoryTooLarge(
                f"the history of {want.decode()[:12]} to copy is more than {max_bytes} bytes "
                "packed (git.max_push_bytes in hyperhive.toml)"
            )
        try:
            indexer.stdin.write(chunk)
        except BrokenPipeError:
            break  # index-pack failed: its exit status and message say why
    with contextlib.suppress(BrokenPipeError):
        indexer.stdin.close()
    packer.stdout.close()
    return size


def _kill(procs: Iterable[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe and not pipe.closed:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()


def stderr_tail(err) -> str:
    """The last lines git wrote to stderr."""
    err.seek(0)
    lines = err.read().decode(errors="replace").strip().splitlines()
    return " / ".join(lines[-3:]) or "no message"
