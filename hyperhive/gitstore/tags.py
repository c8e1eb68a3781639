"""Annotated tags whose message ends in `Key: value` trailers (git interpret-trailers style)."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from dulwich.objects import Commit, Tag
from dulwich.repo import Repo
from dulwich.trailers import Trailer, format_trailers, parse_trailers

from hyperhive.gitstore import refs
from hyperhive.gitstore.cache import LRU
from hyperhive.gitstore.repos import read_object


def identity(actor: str) -> bytes:
    return f"{actor} <{actor}@hyperhive>".encode()


@dataclass(frozen=True)
class TagInfo:
    ref: str
    sha: str
    target: str
    actor: str
    time: int
    subject: str
    body: str
    trailers: dict[str, str] = field(default_factory=dict)


def make_tag_message(subject: str, trailers: dict[str, str], body: str = "") -> bytes:
    parts = [subject.strip()]
    if body.strip():
        parts.append(body.rstrip("\n"))
    message = "\n\n".join(parts).encode() + b"\n"
    items = [Trailer(k, " ".join(v.split()) or "-") for k, v in trailers.items() if v is not None]
    if items:
        message += b"\n" + format_trailers(items)
    return message


def write_tag(
    repo: Repo,
    ref: bytes,
    target: bytes,
    actor: str,
    subject: str,
    trailers: dict[str, str],
    body: str = "",
    when: int | None = None,
) -> bytes | None:
    """Write an annotated tag object and create `ref` to it; None if `ref` already exists."""
    tag = Tag()
    tag.name = ref.removeprefix(b"refs/tags/")
    tag.object = (Commit, target)
    tag.tagger = identity(actor)
    tag.tag_time = int(time.time()) if when is None else when
    tag.tag_timezone = 0
    tag.message = make_tag_message(subject, {"Actor": actor, **trailers}, body)
    repo.object_store.add_object(tag)
    return tag.id if refs.create(repo, ref, tag.id) else None


_parsed: LRU[bytes, TagInfo] = LRU(50_000)  # about 1 KiB each


def read_tag(repo: Repo | Callable[[], Repo], ref: bytes, sha: bytes) -> TagInfo:
    """The tag `sha` at `ref`, parsed once per process (a tag object never changes).
    `repo` may be a function that opens it: called only when the tag was not parsed yet."""
    info = _parsed.get(sha)
    if info is None:
        info = _parse_tag(repo if isinstance(repo, Repo) else repo(), ref, sha)
        _parsed.put(sha, info)
    return info if info.ref == ref.decode() else replace(info, ref=ref.decode())


def _parse_tag(repo: Repo, ref: bytes, sha: bytes) -> TagInfo:
    tag = read_object(repo, sha)
    if not isinstance(tag, Tag):
        # A lightweight tag someone pushed by hand: report it without trailers.
        return TagInfo(ref.decode(), sha.decode(), sha.decode(), "?", 0, "", "", {})
    return _info(ref, tag)


def parse_raw_tag(ref: bytes, sha: bytes, raw: bytes) -> TagInfo | None:
    """The tag whose object text is `raw` (a copy kept elsewhere, such as a prune
    record), parsed once per process; None unless the text hashes to `sha` exactly."""
    info = _parsed.get(sha)
    if info is None:
        try:
            tag = Tag.from_raw_string(Tag.type_num, raw)
        except Exception:  # dulwich raises several kinds for malformed text
            return None
        if tag.id != sha:
            return None
        info = _info(ref, tag)
        _parsed.put(sha, info)
    return info if info.ref == ref.decode() else replace(info, ref=ref.decode())


def _info(ref: bytes, tag: Tag) -> TagInfo:
    text, trailers = parse_trailers(tag.message)
    subject, _, body = text.decode(errors="replace").partition("\n")
    actor = tag.tagger.decode(errors="replace").split(" <", 1)[0]
    return TagInfo(
        ref=ref.decode(),
        sha=tag.id.decode(),
        target=tag.object[1].decode(),
        actor=actor,
        time=tag.tag_time,
        subject=subject,
        body=body.strip("\n"),
        trailers={t.key: t.value for t in trailers},
    )
