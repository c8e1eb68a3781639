"""The stock git CLI in tests: a quiet identity and no user config, commits in a work
tree, packs and refs as git sees them, and scratch repositories (`GitRepo`)."""

import os
import subprocess
from pathlib import Path

from dulwich.repo import Repo

from hyperhive.gitstore import history

from .hive import git

ZERO = "0" * 40
GIT_ENV = {
    **os.environ,
    "GIT_TERMINAL_PROMPT": "0",  # a refused credential fails instead of prompting
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "manager",
    "GIT_AUTHOR_EMAIL": "manager@hyperhive",
    "GIT_COMMITTER_NAME": "manager",
    "GIT_COMMITTER_EMAIL": "manager@hyperhive",
}


def run_git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, timeout=60
    )


def fast_import(
    repo: Path, count: int, path: str = "f.txt", start: int = 1_700_000_000
) -> list[str]:
    """Append `count` commits to main with `git fast-import`, one second apart, each
    changing `path` (in a work tree or a bare repo); main's shas, oldest first."""
    parent = run_git(repo, "rev-parse", "--verify", "-q", "refs/heads/main").stdout.strip()
    lines = []
    for i in range(count):
        msg, body = f"commit {i}\n".encode(), f"{i}\n".encode()
        lines.append(b"commit refs/heads/main\n")
        lines.append(f"committer bot <bot@x> {start + i} +0000\n".encode())
        lines.append(b"data %d\n%s" % (len(msg), msg))
        if i == 0 and parent:
            lines.append(f"from {parent}\n".encode())
        lines.append(f"M 644 inline {path}\n".encode())
        lines.append(b"data %d\n%s\n" % (len(body), body))
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=b"".join(lines), check=True)
    return git(repo, "rev-list", "--reverse", "main").split()


def ok_git(cwd: Path, *args: str) -> str:
    proc = run_git(cwd, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def commit(work: Path, files: dict[str, bytes | str], message: str) -> str:
    for rel, content in files.items():
        path = work / rel
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    ok_git(work, "add", "-A")
    ok_git(work, "commit", "-q", "-m", message)
    return ok_git(work, "rev-parse", "HEAD").strip()


def pack_between(work: Path, old: str, new: str) -> bytes:
    """The pack `git push` would send for old..new, made by the git CLI."""
    return subprocess.run(
        ["git", "pack-objects", "--stdout", "--revs"],
        cwd=work,
        input=f"{new}\n^{old}\n".encode(),
        capture_output=True,
        check=True,
    ).stdout


def refs_of(repo: Path) -> dict[str, str]:
    lines = git(repo, "for-each-ref", "--format=%(objectname) %(refname)").splitlines()
    return {ref: sha for sha, ref in (line.split() for line in lines)}


def objects_of(repo: Path) -> list[str]:
    """Every file under the repo's objects directory: a refused push adds none."""
    objects = repo / ".git" / "objects" if (repo / ".git").is_dir() else repo / "objects"
    return sorted(str(p.relative_to(objects)) for p in objects.rglob("*"))


class GitRepo:
    """A scratch repository committed to with the git CLI."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir()
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=self.path,
            check=True,
            capture_output=True,
        ).stdout.decode()

    def commit(self, files: dict[str, str | bytes | None], message: str = "c") -> str:
        """Write (str/bytes) or delete (None) files, commit everything, return the sha."""
        for rel, content in files.items():
            p = self.path / rel
            if content is None:
                p.unlink()
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, str):
                content = content.encode()
            p.write_bytes(content)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def diff(self, old: str | None, new: str) -> bytes:
        """What the review page renders: dulwich's diff of two commits."""
        with Repo(str(self.path)) as repo:
            return history.diff(repo, old.encode() if old else None, new.encode())

    def numstat(self, old: str, new: str, *extra: str) -> dict[str, tuple[int, int]]:
        out = {}
        for line in self.git("diff", "--numstat", *extra, old, new).splitlines():
            added, removed, path = line.split("\t")
            out[path] = (-1, -1) if added == "-" else (int(added), int(removed))
        return out
