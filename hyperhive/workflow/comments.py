"""Review comments on an approval, kept in git beside its tags.

Each approval's conversation is a chain of commits at `refs/hyperhive/review/<id>` in the
agent's applied repo (gitstore/chain.py): one commit per comment or reply, and one per
delivery to the manager (`Kind: sent`), each with the empty tree and a message whose last
paragraph is `Key: value` lines (free text such as a path or the quoted code is a JSON
string there, so no character of it can break a line). `git log --reverse
refs/hyperhive/review/<id>` in the applied repo reads the whole conversation; retention
never touches the ref, so it outlives the approval's tags.

Who writes: an operator account (the forge: a session with its CSRF token, or a bearer
token) comments anywhere and replies; the manager only replies (its `review_reply` op).
Limits: MAX_TEXT characters a comment, MAX_ENTRIES comments and replies an approval.
"""

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from dulwich.objects import Blob

from hyperhive.broker.messages import MANAGER, MAX_BODY, OPERATOR, Broker
from hyperhive.errors import BadInput
from hyperhive.gitstore import chain, refs
from hyperhive.gitstore.browse import UnknownPath, lookup
from hyperhive.gitstore.cache import LRU
from hyperhive.gitstore.packscan import stored_size
from hyperhive.gitstore.repos import open_repo
from hyperhive.home import Home
from hyperhive.names import format_target
from hyperhive.workflow.approvals import Approval, Approvals
from hyperhive.workflow.lock import locked

REF_PREFIX = b"refs/hyperhive/review/"
MAX_TEXT = 4000  # characters of one comment
MAX_ENTRIES = 200  # comments and replies of one approval
MAX_QUOTE = 300  # characters of the quoted line kept with a line comment
MAX_PATH = 1024  # bytes of a commented file's path
MAX_LINED_BLOB = 4 << 20  # a file larger than this takes file comments, not line comments
SIDES = ("old", "new")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # all but tab and newline


def ref_of(approval_id: int) -> bytes:
    return REF_PREFIX + str(approval_id).encode()


def review_lock(applied: Path) -> Path:
    """Held around each append to a conversation (numbers are handed out under it)."""
    return applied / "hyperhive-review.lock"


@dataclass(frozen=True)
class Anchor:
    """Where a comment points: a line of a file at a commit, a whole file, or (path None)
    the whole change. `commit` is the commit whose tree holds the file: the proposal's
    for the new side, the one it is compared with for the old side."""

    path: str | None = None
    side: str | None = None
    line: int | None = None
    commit: str | None = None
    quote: str = ""

    def describe(self) -> str:
        if self.path is None:
            return "the whole change"
        if self.line is None:
            return f"{self.path} (the file)"
        return f"{self.path} line {self.line} ({self.side})"


@dataclass(frozen=True)
class Comment:
    number: int
    sha: str
    actor: str
    time: int
    text: str
    anchor: Anchor
    reply_to: int | None = None
    sent: int | None = None  # the number of the delivery that carried it

    def to_json(self) -> dict:
        a = self.anchor
        return {
            "number": self.number,
            "commit": self.sha,
            "actor": self.actor,
            "time": self.time,
            "text": self.text,
            "path": a.path,
            "side": a.side,
            "line": a.line,
            "line_commit": a.commit,
            "quote": a.quote,
            "reply_to": self.reply_to,
            "sent": self.sent,
        }


@dataclass(frozen=True)
class Delivery:
    number: int  # its place in the chain's deliveries, from 1
    sha: str
    actor: str
    time: int
    comments: tuple[int, ...]
    message: int | None  # the broker message id
    denied: bool


@dataclass
class Review:
    agent: str
    approval: int
    tip: str | None
    comments: list[Comment] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def target(self) -> str:
        return format_target(self.agent, self.approval)

    def get(self, number: int) -> Comment:
        for c in self.comments:
            if c.number == number:
                return c
        raise BadInput(f"{self.target} has no comment {number}")

    def root(self, c: Comment) -> Comment:
        """The comment a reply's thread starts with."""
        while c.reply_to is not None:
            c = self.get(c.reply_to)
        return c

    def threads(self) -> list[tuple[Comment, list[Comment]]]:
        """Each first comment with its replies, in the order written."""
        replies: dict[int, list[Comment]] = {}
        firsts = []
        for c in self.comments:
            if c.reply_to is None:
                firsts.append(c)
            else:
                replies.setdefault(self.root(c).number, []).append(c)
        return [(c, replies.get(c.number, [])) for c in firsts]

    def unsent(self) -> list[Comment]:
        """What the operator wrote that the manager has not been sent yet."""
        return [c for c in self.comments if c.sent is None and c.actor != MANAGER]

    def to_json(self) -> dict:
        return {
            "agent": self.agent,
            "id": self.approval,
            "target": self.target,
            "ref": ref_of(self.approval).decode(),
            "tip": self.tip,
            "comments": [c.to_json() for c in self.comments],
            "deliveries": [
                {
                    "commit": d.sha,
                    "actor": d.actor,
                    "time": d.time,
                    "comments": list(d.comments),
                    "message": d.message,
                    "denied": d.denied,
                }
                for d in self.deliveries
            ],
        }


# -- the message format ----------------------------------------------------------------


def _message(subject: str, body: str, trailers: dict[str, object]) -> str:
    lines = []
    for key, value in trailers.items():
        if value is None:
            continue
        if isinstance(value, str) and key in _JSON_KEYS:
            value = json.dumps(value, ensure_ascii=False)
        lines.append(f"{key}: {value}")
    parts = [subject] + ([body] if body else []) + ["\n".join(lines)]
    return "\n\n".join(parts) + "\n"


_JSON_KEYS = {"Path", "Quote"}


def _parse(message: str) -> tuple[str, dict[str, str]]:
    """(the text between the subject and the trailers, the trailers) of a record written
    by _message: the trailers are its last paragraph, which never holds a blank line."""
    head, _, last = message.rstrip("\n").rpartition("\n\n")
    trailers = {}
    for line in last.split("\n"):
        key, sep, value = line.partition(": ")
        if sep:
            trailers[key] = value
    _, _, body = head.partition("\n\n")
    return body, trailers


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, str) else value


_reviews: LRU[tuple[str, str], Review] = LRU(256)


def _build(repo, name: str, approval_id: int, tip: bytes | None) -> Review:
    """The conversation up to `tip`: the nearest one built before (an append's parent,
    usually) extended by the records after it, so an append costs one record, not the
    whole chain again. Shared: never change what it returns."""
    if tip is None:
        return Review(name, approval_id, None)
    key = str(repo.path)
    found = _reviews.get((key, tip.decode()))
    if found is not None:
        return found
    newer: list[chain.Record] = []
    sha: bytes | None = tip
    base = None
    while sha is not None and len(newer) <= 2 * MAX_ENTRIES + 2:
        base = _reviews.get((key, sha.decode()))
        if base is not None:
            break
        r = chain.record(repo, sha)
        newer.append(r)
        sha = r.parent.encode() if r.parent else None
    review = Review(name, approval_id, tip.decode())
    if base is not None:
        review.comments, review.deliveries = list(base.comments), list(base.deliveries)
    for r in reversed(newer):
        _apply(review, r)
    _reviews.put((key, tip.decode()), review)
    return review


def _apply(review: Review, r: chain.Record) -> None:
    """Add one record of the chain to `review`."""
    body, t = _parse(r.message)
    if t.get("Kind") == "sent":
        numbers = tuple(int(n) for n in t.get("Sent", "").split() if n.isdigit())
        d = Delivery(
            len(review.deliveries) + 1,
            r.sha,
            t.get("Actor", r.actor),
            r.time,
            numbers,
            _int(t.get("Message")),
            t.get("Denied") == "yes",
        )
        review.deliveries.append(d)
        marked = set(numbers)
        review.comments = [
            replace(c, sent=d.number) if c.number in marked and c.sent is None else c
            for c in review.comments
        ]
    elif t.get("Kind") == "comment" and (number := _int(t.get("Comment"))):
        anchor = Anchor(
            path=_text(t.get("Path")),
            side=t.get("Side"),
            line=_int(t.get("Line")),
            commit=t.get("Commit"),
            quote=_text(t.get("Quote")) or "",
        )
        actor = t.get("Actor", r.actor)
        reply_to = _int(t.get("In-Reply-To"))
        review.comments.append(Comment(number, r.sha, actor, r.time, body, anchor, reply_to))


def read(home: Home, name: str, approval_id: int) -> Review:
    """The conversation of `name#approval_id` as its ref says now."""
    with open_repo(home.applied_dir(name)) as repo:
        return _build(repo, name, approval_id, refs.read(repo, ref_of(approval_id)))


# -- writing ---------------------------------------------------------------------------


def clean_text(text: object) -> str:
    if not isinstance(text, str):
        raise BadInput("a comment's text must be a string")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.strip().split("\n"))
    if not text:
        raise BadInput("a comment needs a text")
    if _CONTROL.search(text):
        raise BadInput("a comment's text may not hold control characters")
    if len(text) > MAX_TEXT:
        raise BadInput(f"a comment is at most {MAX_TEXT} characters (this one has {len(text)})")
    return text


def check_anchor(repo, anchor: Anchor, commits: set[str]) -> Anchor:
    """The anchor checked against the commits the review shows (`commits`), with the
    quoted line read from git (never taken from the client)."""
    if anchor.path is None:
        if anchor.line is not None or anchor.side is not None:
            raise BadInput("a line comment needs the file's path")
        return Anchor()
    path = anchor.path
    if not isinstance(path, str) or not path or len(path.encode()) > MAX_PATH:
        raise BadInput(f"a commented path is 1 to {MAX_PATH} bytes")
    if anchor.side not in SIDES:
        raise BadInput(f"a file comment's side is old or new, not {anchor.side!r}")
    if anchor.commit not in commits:
        raise BadInput("a comment's commit must be one this review shows")
    try:
        _, sha = lookup(repo, anchor.commit.encode(), path)
        blob = repo[sha]
    except (UnknownPath, KeyError):
        raise BadInput(f"no file {path!r} at {anchor.commit[:12]}") from None
    if not isinstance(blob, Blob):
        raise BadInput(f"{path!r} at {anchor.commit[:12]} is not a file")
    if anchor.line is None:
        return Anchor(path, anchor.side, None, anchor.commit)
    line = anchor.line
    if isinstance(line, bool) or not isinstance(line, int) or line < 1:
        raise BadInput(f"a line number is 1 or more, not {line!r}")
    if stored_size(repo.object_store, sha) > MAX_LINED_BLOB:
        raise BadInput(f"{path!r} is over {MAX_LINED_BLOB >> 20} MiB: comment on the file")
    data = blob.as_raw_string()
    if b"\0" in data[:8000]:
        raise BadInput(f"{path!r} is binary: comment on the file, not a line")
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    if line > len(lines):
        raise BadInput(f"{path!r} at {anchor.commit[:12]} has {len(lines)} lines, not {line}")
    quote = lines[line - 1].decode(errors="replace").rstrip("\r")
    if len(quote) > MAX_QUOTE:
        quote = quote[: MAX_QUOTE - 1] + "…"
    return Anchor(path, anchor.side, line, anchor.commit, quote)


def add(
    home: Home,
    name: str,
    approval_id: int,
    actor: str,
    text: object,
    anchor: Anchor | None = None,
    reply_to: int | None = None,
    commits: set[str] | None = None,
) -> Comment:
    """Write one comment (or, with `reply_to`, a reply, which takes its thread's anchor).
    `commits` are the commits a new comment's anchor may name (the review's)."""
    text = clean_text(text)
    a = Approvals(home, name).get(approval_id)  # an approval with tags (UnknownApproval)
    if actor == MANAGER and reply_to is None:
        raise BadInput("the manager replies to the operator's comments; it does not start them")
    applied = home.applied_dir(name)
    ref = ref_of(approval_id)
    with open_repo(applied) as repo, locked(review_lock(applied)):
        tip = refs.read(repo, ref)
        review = _build(repo, name, approval_id, tip)
        if len(review.comments) >= MAX_ENTRIES:
            raise BadInput(
                f"{a.target} has {MAX_ENTRIES} comments, the most an approval takes: "
                "deny it with a summary, or answer in a new proposal"
            )
        if reply_to is not None:
            if isinstance(reply_to, bool) or not isinstance(reply_to, int):
                raise BadInput(f"reply_to must be a comment number, not {reply_to!r}")
            anchor = review.root(review.get(reply_to)).anchor
        else:
            anchor = check_anchor(repo, anchor or Anchor(), commits or {a.commit})
        number = len(review.comments) + 1
        subject = f"comment {number} on {a.target}: {anchor.describe()}"
        if reply_to is not None:
            subject = f"reply {number} to comment {reply_to} on {a.target}"
        message = _message(
            subject,
            text,
            {
                "Kind": "comment",
                "Comment": number,
                "Actor": actor,
                "Path": anchor.path,
                "Side": anchor.side,
                "Line": anchor.line,
                "Commit": anchor.commit,
                "Quote": anchor.quote or None,
                "In-Reply-To": reply_to,
            },
        )
        sha = chain.append(repo, ref, tip, actor, message)
        review = _build(repo, name, approval_id, sha)
    return review.get(number)


# -- delivery to the manager ------------------------------------------------------------


@dataclass(frozen=True)
class Links:
    """Where the forge shows things, for the message (absolute URLs)."""

    review: str  # the approval's review page

    def comment(self, number: int) -> str:
        return f"{self.review}#comment-{number}"


def render_message(
    review: Review,
    approval: Approval,
    comments: list[Comment],
    links: Links,
    actor: str,
    denied: str | None = None,
    limit: int = MAX_BODY,
) -> tuple[str, list[Comment]]:
    """The manager's message for `comments` and the ones it holds: as many whole
    comments as fit in `limit` bytes, the rest named (a later send carries them)."""
    t = review.target
    head = [f"review_comments: {t}"]
    head.append(f"approval: {t} ({approval.state}), commit {approval.commit[:12]}")
    if approval.subject:
        head.append(f"subject: {approval.subject}")
    head.append(f"review: {links.review}")
    head.append(f"from: {actor}")
    if denied is not None:
        head.append(f"denied by {actor}: {' '.join(denied.split())}")
    head.append(
        f"git: `git log --reverse {ref_of(review.approval).decode()}` in {approval.agent}'s "
        "applied repo holds the whole conversation"
    )
    head.append(
        f'reply to a comment: review_reply(approval="{t}", comment=N, text="…"); answer '
        f'with a new proposal that says it follows this one: request_apply_commit(name="'
        f'{approval.agent}", commit=…, follows="{t}"), or git push -o follows={review.approval}'
    )
    blocks = []
    for c in comments:
        a = c.anchor
        where = a.describe()
        if a.commit:
            where += f" at {a.commit[:12]}"
        lines = [f"--- comment {c.number} by {c.actor}: {where}"]
        if c.reply_to is not None:
            first = review.root(c)
            lines[0] += f", reply to comment {c.reply_to}"
            if first.number != c.reply_to:
                lines[0] += f" (thread of comment {first.number})"
        if a.quote:
            lines.append(f"> {a.quote}")
        lines.append(c.text)
        lines.append(f"link: {links.comment(c.number)}")
        blocks.append("\n".join(lines))
    text = "\n".join(head)
    carried: list[Comment] = []
    for c, block in zip(comments, blocks, strict=True):
        rest = len(comments) - len(carried) - 1
        tail = f"\n\n({rest} more comments did not fit in this message: {links.review})"
        if len((text + "\n\n" + block + tail).encode()) > limit and carried:
            break
        text += "\n\n" + block
        carried.append(c)
    if len(carried) < len(comments):
        left = len(comments) - len(carried)
        text += f"\n\n({left} more comments did not fit in this message: {links.review})"
    return text, carried


def send(
    home: Home,
    broker: Broker,
    name: str,
    approval_id: int,
    actor: str,
    links: Links,
    denied: str | None = None,
) -> Delivery | None:
    """Send the comments not sent yet to the manager's inbox as one message, and record
    the delivery in the conversation; None when there was nothing to send."""
    a = Approvals(home, name).get(approval_id)
    applied = home.applied_dir(name)
    ref = ref_of(approval_id)
    with open_repo(applied) as repo, locked(review_lock(applied)):
        tip = refs.read(repo, ref)
        review = _build(repo, name, approval_id, tip)
        pending = review.unsent()
        if not pending:
            return None
        body, carried = render_message(review, a, pending, links, actor, denied)
        message_id = broker.send(OPERATOR, MANAGER, body)
        numbers = " ".join(str(c.number) for c in carried)
        message = _message(
            f"sent comments {numbers.replace(' ', ', ')} of {a.target} to {MANAGER}",
            "",
            {
                "Kind": "sent",
                "Sent": numbers,
                "Actor": actor,
                "Message": message_id,
                "Denied": "yes" if denied is not None else None,
            },
        )
        sha = chain.append(repo, ref, tip, actor, message)
        return _build(repo, name, approval_id, sha).deliveries[-1]
