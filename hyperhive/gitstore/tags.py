"""Annotated tags whose message ends in `Key: value` trailers (git interpret-trailers style)."""

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from dulwich.objects import Commit, Tag
from dulwich.repo import Repo
from dulwich.trailers import Trailer, format_trailers, parse_trailers

from hyperhive.gitstore import refs
from hyperhive.gitstore.cache import LRU
from hyperhive.gitstore.repos import LazyRepo, read_loose


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
        info = _parse_tag(repo, ref, sha)
        _parsed.put(sha, info)
    return info if info.ref == ref.decode() else replace(info, ref=ref.decode())


def _parse_tag(repo: Repo | Callable[[], Repo], ref: bytes, sha: bytes) -> TagInfo:
    """A tag's object read once: a loose one inflated and parsed here (dulwich would parse
    it twice), a packed or unreadable one through dulwich (which says what is wrong). A
    LazyRepo is not opened for a loose tag (a cold dashboard opened a hundred repos)."""
    if isinstance(repo, LazyRepo):
        loose = repo.loose(sha)
    else:
        repo = repo if isinstance(repo, Repo) else repo()
        loose = read_loose(repo, sha)
    if loose is None:
        tag = (repo if isinstance(repo, Repo) else repo())[sha]
    elif loose[0] == b"tag":
        found = _plain_info(ref, sha, loose[1])
        if found is not None:
            return found
        tag = Tag.from_raw_string(Tag.type_num, loose[1], sha)
    else:
        tag = None  # a loose commit (or other object) a lightweight tag names
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


# Every tag the hive writes has these headers, in this order, and nothing else.
_HEADERS = (b"object ", b"type commit", b"tag ", b"tagger ")
_HEX = frozenset(b"0123456789abcdef")


def _plain_info(ref: bytes, sha: bytes, body: bytes) -> TagInfo | None:
    """The tag from its object text without building a dulwich object (a cold dashboard
    parses thousands), when it has the shape of the tags the hive writes: the four
    headers, a tagger with a time, no signature. None for any other shape, which
    dulwich parses (tests/test_gitstore.py checks both agree)."""
    head, blank, message = body.partition(b"\n\n")
    lines = head.split(b"\n")
    if not blank or len(lines) != 4 or b"-----BEGIN " in message:  # maybe a signature
        return None
    if not all(line.startswith(h) for line, h in zip(lines, _HEADERS, strict=True)):
        return None
    target, tagger = lines[0][7:], lines[3][7:]
    if lines[1] != b"type commit" or len(target) != 40 or not _HEX.issuperset(target):
        return None
    end = tagger.rfind(b"> ")
    seconds, _, zone = tagger[end + 2 :].rpartition(b" ")
    sign, digits = zone[:1], zone[1:]
    if end < 0 or not seconds.isdigit() or sign not in (b"+", b"-"):
        return None
    if len(digits) != 4 or not digits.isdigit():
        return None
    return _described(ref, sha, target, tagger[: end + 1], int(seconds), message)


def _info(ref: bytes, tag: Tag) -> TagInfo:
    # a tag made by hand may lack a tagger, its time or a message: "?", 0, ""
    tagger, when = tag.tagger or b"?", tag.tag_time or 0
    return _described(ref, tag.id, tag.object[1], tagger, when, tag.message or b"")


def _described(
    ref: bytes, sha: bytes, target: bytes, tagger: bytes, when: int, message: bytes
) -> TagInfo:
    found = _plain_trailers(message)
    if found is None:
        raw, parsed = parse_trailers(message)
        found = raw.decode(errors="replace"), {t.key: t.value for t in parsed}
    text, trailers = found
    subject, _, body = text.partition("\n")
    return TagInfo(
        ref=ref.decode(),
        sha=sha.decode(),
        target=target.decode(),
        actor=tagger.decode(errors="replace").split(" <", 1)[0],
        time=when,
        subject=subject,
        body=body.strip("\n"),
        trailers=trailers,
    )


# What str.splitlines splits on besides "\n": such a message goes to dulwich.
_OTHER_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _plain_trailers(message: bytes) -> tuple[str, dict[str, str]] | None:
    """dulwich's `parse_trailers` of a message shaped as make_tag_message writes them
    (UTF-8; a last paragraph of `Key: value` lines after a blank line, ending in one
    newline; no `---` line, no continuation line), without its general scan: the text
    before the trailers and the trailers. None for any other shape."""
    try:
        text = message.decode()
    except UnicodeDecodeError:
        return None
    if not text.endswith("\n") or text.endswith("\n\n") or "---" in text:
        return None
    head, blank, block = text[:-1].rpartition("\n\n")
    if not blank or _OTHER_BREAKS.search(text):
        return None
    trailers = {}
    for line in block.split("\n"):
        key, colon, value = line.partition(":")
        if not colon or not key or key[0].isspace() or any(c.isspace() for c in key):
            return None
        trailers[key] = value.strip()
    lines = head.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return ("\n".join(lines) + "\n" if lines else ""), trailers
