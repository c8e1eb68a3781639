"""Read-only views of a repository for the repo browser: revisions, trees, blobs, pages of
history and tags. Paths are looked up inside git trees only, never on the filesystem.

Every lookup that can miss raises `UnknownCommit` (unknown revision) or `UnknownPath`
(`LookupError`, unknown or refused path) with a message fit to show the user.
"""

import contextlib
import heapq
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from dulwich.objects import Blob, Commit, Tag, Tree
from dulwich.refs import check_ref_format
from dulwich.repo import Repo
from dulwich.trailers import parse_trailers

from hyperhive.errors import UnknownCommit

HEX_RE = re.compile(r"[0-9a-f]{4,40}")
MAX_REV_LEN = 256
BINARY_SNIFF = 8000  # git's own heuristic: a NUL in the first 8000 bytes means binary


class UnknownPath(LookupError):
    """A path that is not in the tree, or one refused outright (`..`, NUL, empty segments)."""


# ---------------------------------------------------------------------------- revisions


def is_commit(repo: Repo, sha: bytes) -> bool:
    """Whether `sha` (40 hex digits) names a commit of `repo`."""
    try:
        type_num, _ = repo.object_store.get_raw(sha)
    except KeyError:
        return False
    return type_num == Commit.type_num


def valid_rev(rev: str) -> bool:
    """A sha (full or abbreviated), `HEAD`, or a name git would accept as a ref."""
    if not rev or len(rev) > MAX_REV_LEN or rev.startswith("-"):
        return False
    if rev == "HEAD" or HEX_RE.fullmatch(rev):
        return True
    try:
        name = rev.encode("ascii")
    except UnicodeEncodeError:
        return False
    # check_ref_format wants at least one '/': judge `main` as `refs/heads/main`.
    return check_ref_format(b"refs/heads/" + name if not name.startswith(b"refs/") else name)


def _peel_to_commit(repo: Repo, sha: bytes, rev: str) -> bytes:
    obj = repo[sha]
    while isinstance(obj, Tag):
        obj = repo[obj.object[1]]
    if not isinstance(obj, Commit):
        raise UnknownCommit(f"{rev!r} is a {obj.type_name.decode()}, not a commit")
    return obj.id


def _ref(repo: Repo, name: bytes) -> bytes | None:
    try:
        return repo.refs[name]
    except KeyError:
        return None


def resolve(repo: Repo, rev: str) -> bytes:
    """The commit `rev` names: a full or abbreviated sha, `HEAD`, a branch, a tag (tags
    may contain '/', e.g. `deployed/3`) or a full ref name. Annotated tags are peeled."""
    if not valid_rev(rev):
        raise UnknownCommit(f"invalid revision {rev!r}")
    raw = rev.encode()
    if len(raw) == 40 and HEX_RE.fullmatch(rev) and raw in repo.object_store:
        return _peel_to_commit(repo, raw, rev)
    if rev == "HEAD":
        candidates = [b"HEAD"]
    elif raw.startswith(b"refs/"):
        candidates = [raw]
    else:  # git's order (gitrevisions(7)), minus the remotes
        candidates = [b"refs/" + raw, b"refs/tags/" + raw, b"refs/heads/" + raw]
    for name in candidates:
        sha = _ref(repo, name)
        if sha is not None:
            return _peel_to_commit(repo, sha, rev)
    if HEX_RE.fullmatch(rev) and len(raw) < 40:
        matches = set(repo.object_store.iter_prefix(raw))
        commits = {m for m in matches if _is_committish(repo, m)}
        if len(commits) == 1:
            return _peel_to_commit(repo, commits.pop(), rev)
        if len(commits) > 1:
            raise UnknownCommit(f"ambiguous revision {rev!r}: {len(commits)} commits match")
    if rev == "HEAD":
        raise UnknownCommit("the repository has no commits yet")
    raise UnknownCommit(f"unknown revision {rev!r}")


def _is_committish(repo: Repo, sha: bytes) -> bool:
    return repo[sha].type_name in (b"commit", b"tag")


def head(repo: Repo) -> bytes | None:
    """HEAD's commit, or None in a repository without commits."""
    try:
        return resolve(repo, "HEAD")
    except UnknownCommit:
        return None


# ---------------------------------------------------------------------------- paths


def split_path(path: str) -> list[bytes]:
    """The segments of a repository path; '' is the root. Refuses `.`/`..`, empty
    segments (so no absolute path), NUL and backslashes."""
    if path in ("", "/"):
        return []
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", "..") or "\0" in part or "\\" in part:
            raise UnknownPath(f"invalid path {path!r}")
    return [p.encode("utf-8", "surrogateescape") for p in parts]


@dataclass(frozen=True)
class Entry:
    name: str
    path: str  # from the root of the tree
    mode: int
    sha: str
    kind: str  # "tree", "blob", "link" (symlink) or "commit" (submodule)

    @property
    def executable(self) -> bool:
        return self.kind == "blob" and bool(self.mode & 0o111)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "tree"
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISREG(mode):
        return "blob"
    return "commit"


def lookup(repo: Repo, commit: bytes, path: str) -> tuple[int, bytes]:
    """(mode, sha) of `path` in the tree of `commit`; the root is ('', tree)."""
    mode, sha = stat.S_IFDIR, repo[commit].tree
    walked: list[str] = []
    for part in split_path(path):
        tree = repo[sha]
        if not isinstance(tree, Tree) or part not in tree:
            where = "/".join(walked) or "/"
            raise UnknownPath(f"no {part.decode(errors='replace')!r} in {where}")
        mode, sha = tree[part]
        walked.append(part.decode(errors="replace"))
    return mode, sha


def list_tree(repo: Repo, commit: bytes, path: str = "") -> list[Entry]:
    """The entries of the directory `path` at `commit`: directories first, then by name."""
    mode, sha = lookup(repo, commit, path)
    if not stat.S_ISDIR(mode):
        raise UnknownPath(f"{path!r} is a file, not a directory")
    prefix = path.strip("/") + "/" if path.strip("/") else ""
    entries = [
        Entry(
            name=e.path.decode(errors="replace"),
            path=prefix + e.path.decode(errors="replace"),
            mode=e.mode,
            sha=e.sha.decode(),
            kind=_kind(e.mode),
        )
        for e in repo[sha].iteritems()
    ]
    return sorted(entries, key=lambda e: (e.kind != "tree", e.name))


@dataclass(frozen=True)
class BlobData:
    path: str
    mode: int
    sha: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def is_binary(self) -> bool:
        return b"\0" in self.data[:BINARY_SNIFF]

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)


def read_blob(repo: Repo, commit: bytes, path: str) -> BlobData:
    """The content of the file (or symlink target) `path` at `commit`."""
    if not split_path(path):
        raise UnknownPath("the root is a directory, not a file")
    mode, sha = lookup(repo, commit, path)
    obj = repo[sha] if not (stat.S_ISDIR(mode) or _kind(mode) == "commit") else None
    if not isinstance(obj, Blob):
        raise UnknownPath(f"{path!r} is a {_kind(mode)}, not a file")
    return BlobData(path=path, mode=mode, sha=sha.decode(), data=obj.as_raw_string())


# ---------------------------------------------------------------------------- commits


def _person(raw: bytes) -> tuple[str, str]:
    text = raw.decode(errors="replace")
    name, _, email = text.partition(" <")
    return name, email.rstrip(">")


@dataclass(frozen=True)
class CommitView:
    sha: str
    parents: list[str]
    tree: str
    author: str
    author_email: str
    author_time: int
    committer: str
    commit_time: int
    subject: str
    body: str  # the message without its subject line and trailers
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def trailer(self, key: str) -> str | None:
        return next((v for k, v in self.trailers if k.lower() == key.lower()), None)


def commit_view(repo: Repo, sha: bytes, with_trailers: bool = True) -> CommitView:
    c = repo[sha]
    if not isinstance(c, Commit):
        raise UnknownCommit(f"{sha.decode()} is not a commit")
    if with_trailers:
        text, found = parse_trailers(c.message)
        trailers = [(t.key, t.value) for t in found]
    else:
        text, trailers = c.message, []
    subject, _, body = text.decode(errors="replace").partition("\n")
    author, email = _person(c.author)
    return CommitView(
        sha=c.id.decode(),
        parents=[p.decode() for p in c.parents],
        tree=c.tree.decode(),
        author=author,
        author_email=email,
        author_time=c.author_time,
        committer=_person(c.committer)[0],
        commit_time=c.commit_time,
        subject=subject,
        body=body.strip("\n"),
        trailers=trailers,
    )


def _header(raw: bytes) -> tuple[list[bytes], int]:
    """Parents and commit time from a raw commit, without parsing the rest of it."""
    parents, when = [], 0
    for line in raw.partition(b"\n\n")[0].split(b"\n"):
        if line.startswith(b"parent "):
            parents.append(line[7:47])
        elif line.startswith(b"committer "):
            when = int(line.rsplit(b" ", 2)[1])
    return parents, when


class Walk:
    """The commits reachable from some starts, newest commit time first (git log's
    default order), as (sha, raw commit).

    Lazy: the first page of a long history reads only about a page of commits. Reads raw
    objects and only their headers, which is about twice as fast as parsing each commit.
    `frontier` is where the walk stands: resuming a walk from it goes on with the same
    commits, so a log page can link to the next at the cost of a page, not of the skip."""

    def __init__(self, repo: Repo, starts: list[bytes]):
        self.store = repo.object_store
        self.queue: list[tuple[int, int, bytes, bytes]] = []
        self.seen: set[bytes] = set()
        self.counter = 0  # tie-breaker: equal times come out in the order they were found
        for sha in starts:
            self._push(sha)

    def _push(self, sha: bytes) -> None:
        if sha in self.seen:
            return
        self.seen.add(sha)
        try:
            _, raw = self.store.get_raw(sha)
        except KeyError:  # a shallow or damaged history: stop at the hole
            return
        heapq.heappush(self.queue, (-_header(raw)[1], self.counter, sha, raw))
        self.counter += 1

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        while self.queue:
            _, _, sha, raw = heapq.heappop(self.queue)
            yield sha, raw
            for parent in _header(raw)[0]:  # after the yield: see `frontier`
                self._push(parent)

    def frontier(self, last: bytes) -> list[bytes]:
        """Where the walk stands once `last` (the commit it just yielded) is put back:
        resuming from these commits yields `last` and then the rest of this walk."""
        return [last, *(sha for *_, sha, _ in sorted(self.queue))]


def walk_raw(repo: Repo, start: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(sha, raw commit) of the commits reachable from `start`, in `Walk` order."""
    return iter(Walk(repo, [start]))


def walk(repo: Repo, start: bytes) -> Iterator[bytes]:
    """The shas of `walk_raw`."""
    for sha, _ in walk_raw(repo, start):
        yield sha


def raw_trailers(raw: bytes) -> list[tuple[str, str]]:
    """The trailers of a raw commit's message."""
    return [(t.key, t.value) for t in parse_trailers(raw.partition(b"\n\n")[2])[1]]


# A cursor names the walk's frontier; a history merging many branches at once can have a
# long one, and a URL must stay short: past this, the next page is found by skipping.
CURSOR_MAX = 16


@dataclass(frozen=True)
class LogPage:
    commits: list[CommitView]
    skip: int
    limit: int
    has_more: bool
    cursor: list[bytes] | None = None  # where the next page starts, when short enough


def log_page(
    repo: Repo,
    start: bytes,
    skip: int = 0,
    limit: int = 50,
    after: list[bytes] | None = None,
) -> LogPage:
    """`limit` commits after the first `skip` of the walk from `start`; or, given a cursor
    (`after`: a previous page's `cursor`), the `limit` commits from there, without walking
    what came before."""
    if skip < 0 or limit < 1:
        raise ValueError("skip must be >= 0 and limit >= 1")
    walker = Walk(repo, after if after else [start])
    commits: list[CommitView] = []
    has_more, frontier = False, []
    for i, (sha, _) in enumerate(walker):
        if not after and i < skip:
            continue
        if len(commits) == limit:
            has_more = True
            frontier = walker.frontier(sha)
            break
        commits.append(commit_view(repo, sha))
    cursor = frontier if has_more and len(frontier) <= CURSOR_MAX else None
    return LogPage(commits=commits, skip=skip, limit=limit, has_more=has_more, cursor=cursor)


# ---------------------------------------------------------------------------- refs


@dataclass(frozen=True)
class _Tagged:
    """What a ref under refs/tags points at, read once: objects are immutable, so this is
    cached by object id (a repo with thousands of state tags is read once per process)."""

    target: bytes  # peeled to a commit when possible
    annotated: bool
    tagger: str
    time: int
    subject: str
    body: str
    trailers: tuple[tuple[str, str], ...]


_TAGGED: dict[bytes, _Tagged] = {}
_TAGGED_MAX = 200_000


def _tagged(repo: Repo, sha: bytes) -> _Tagged:
    cached = _TAGGED.get(sha)
    if cached is not None:
        return cached
    obj = repo[sha]
    if isinstance(obj, Tag):
        text, trailers = parse_trailers(obj.message)
        subject, _, body = text.decode(errors="replace").partition("\n")
        target = obj.object[1]
        with contextlib.suppress(KeyError, UnknownCommit):
            target = _peel_to_commit(repo, target, sha.decode())
        info = _Tagged(
            target=target,
            annotated=True,
            tagger=_person(obj.tagger)[0],
            time=obj.tag_time,
            subject=subject,
            body=body.strip("\n"),
            trailers=tuple((t.key, t.value) for t in trailers),
        )
    else:  # a lightweight tag (or a branch): the object itself
        info = _Tagged(sha, False, "", getattr(obj, "commit_time", 0), "", "", ())
    if len(_TAGGED) >= _TAGGED_MAX:
        _TAGGED.clear()
    _TAGGED[sha] = info
    return info


@dataclass(frozen=True)
class TagView:
    name: str  # without refs/tags/
    sha: str  # the tag object (or the commit, for a lightweight tag)
    target: str  # the object it points at, peeled to the commit when possible
    annotated: bool
    tagger: str
    time: int
    subject: str
    body: str
    trailers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def group(self) -> str:
        return self.name.split("/", 1)[0] if "/" in self.name else ""

    @property
    def approval_id(self) -> int | None:
        rest = self.name.split("/", 1)[1] if "/" in self.name else ""
        return int(rest) if rest.isdigit() else None


def tags(repo: Repo) -> list[TagView]:
    """Every tag, newest first (tag time; a lightweight tag takes its commit's time)."""
    found = []
    for name, sha in repo.refs.as_dict(b"refs/tags").items():
        try:
            t = _tagged(repo, sha)
        except KeyError:
            continue  # a ref to a missing object: nothing to show
        found.append(
            TagView(
                name=name.decode(errors="replace"),
                sha=sha.decode(),
                target=t.target.decode(),
                annotated=t.annotated,
                tagger=t.tagger,
                time=t.time,
                subject=t.subject,
                body=t.body,
                trailers=list(t.trailers),
            )
        )
    return sorted(found, key=lambda t: (t.time, t.approval_id or 0, t.name), reverse=True)


def decorations(repo: Repo) -> dict[str, list[str]]:
    """Commit sha -> the branch and tag names pointing at it (tags peeled)."""
    out: dict[str, list[str]] = {}
    for prefix in (b"refs/heads", b"refs/tags"):
        for name, sha in repo.refs.as_dict(prefix).items():
            try:
                target = sha if prefix == b"refs/heads" else _tagged(repo, sha).target
            except KeyError:
                continue
            out.setdefault(target.decode(), []).append(name.decode(errors="replace"))
    for names in out.values():
        names.sort()
    return out
