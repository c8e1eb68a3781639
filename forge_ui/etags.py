"""Validators for pages: an `ETag` on the review, commit and blob pages, and `304 Not
Modified` when the browser's copy is still what the page would say.

These pages are HTML for one session: a CSRF token, the account's viewed marks and
comments, and live state (the approval's tags, its check, the policy diff) are in them
beside the immutable diff. So the tag is not derived from the commits but from the page
itself: a digest of the rendered body — without this response's two random strings, the
CSP nonce and the signed CSRF token (flask-wtf signs it with the time, so it differs at
every request while the session's raw token stays) — together with the session (its id
and raw CSRF token) and the account. Whatever changes what the page says changes the tag,
by construction, and no tag matches across sessions. The body is rendered either way
(the diff itself comes from `diffcache`, so that costs tens of milliseconds); a 304
saves sending and parsing megabytes of HTML.

A 304 carries no `Content-Security-Policy` (headers.py): the browser keeps the stored
response's headers, whose nonce is the one in the stored body; a new nonce would block
its scripts. `Cache-Control: private, no-cache`: kept by the browser only, and revalidated
at every use."""

import hashlib

from flask import Response, g, request, session

from forge_ui.headers import csp_nonce

VERSION = b"1"  # change when what the tag covers changes
CACHE_CONTROL = "private, no-cache"


def tag_of(body: str) -> str:
    """The page's tag (without quotes): its body without this response's random strings,
    under this session and account."""
    h = hashlib.blake2b(digest_size=16)
    for part in (VERSION, session.get("sid"), session.get("csrf_token"), g.get("actor")):
        h.update(repr(part).encode() + b"\0")
    stripped = body.replace(csp_nonce(), "")
    if token := g.get("csrf_token"):
        stripped = stripped.replace(token, "")
    h.update(stripped.encode("utf-8", errors="surrogatepass"))
    return h.hexdigest()


def page(body: str) -> Response:
    """The rendered page, or 304 when the request's If-None-Match holds its tag."""
    tag = tag_of(body)
    if request.method in ("GET", "HEAD") and request.if_none_match.contains_weak(tag):
        response = Response(status=304)
    else:
        response = Response(body, mimetype="text/html")
    response.set_etag(tag, weak=True)  # weak: equal in meaning, not byte for byte
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response
