"""What a diff page loads of a blob on demand, by blob id in a browsed repo:

    /repos/<repo>/lines/<blob>?start=&end=&old=&path=&view=   context rows to expand
    /repos/<repo>/image/<blob>                                 an image's bytes

Lines come as the rows of the diff table (`_context_rows.html`), highlighted like the
diff, for the unified or side-by-side view. An image is served only when its bytes are a
PNG, JPEG, GIF or WebP, with that type, `nosniff` and a CSP that lets nothing run (an SVG
is never served here: it can hold script; the diff shows it as text). Both are immutable
(a blob id names its content), so they are cached by the browser."""

from dulwich.objects import Blob
from flask import Blueprint, Response, abort, render_template, request

from forge_ui.diffview import context_lines
from forge_ui.views.browse import opened
from hyperhive.errors import BadInput
from hyperhive.gitstore import blobparts
from hyperhive.gitstore.packscan import stored_size

bp = Blueprint("blobparts", __name__)
IMMUTABLE = "private, max-age=31536000, immutable"


def _sha(blob: str) -> bytes:
    if len(blob) != 40 or any(c not in "0123456789abcdef" for c in blob):
        abort(404, description=f"no blob {blob!r}: a blob id is 40 hex digits")
    return blob.encode()


def _int_arg(name: str) -> int:
    value = request.args.get(name, "")
    if not value.isdigit() or len(value) > 9:
        raise BadInput(f"?{name}= is a line number")
    return int(value)


@bp.get("/repos/<hiverepo:repo>/lines/<blob>")
def lines(repo: str, blob: str):
    sha = _sha(blob)
    start, end, old = _int_arg("start"), _int_arg("end"), _int_arg("old")
    path = request.args.get("path", "")
    _, r = opened(repo)
    with r:
        try:
            texts, total = blobparts.blob_lines(r.object_store, sha, start, end)
        except KeyError:
            abort(404, description=f"no blob {blob} in {repo}")
    rows = context_lines(path, texts, old, start)
    body = render_template(
        "_context_rows.html", rows=rows, split=request.args.get("view") == "split"
    )
    response = Response(body, mimetype="text/html")
    response.headers["X-Total-Lines"] = str(total)
    response.headers["Cache-Control"] = IMMUTABLE
    return response


@bp.get("/repos/<hiverepo:repo>/image/<blob>")
def image(repo: str, blob: str):
    sha = _sha(blob)
    _, r = opened(repo)
    with r:
        try:
            size = stored_size(r.object_store, sha)
        except KeyError:
            abort(404, description=f"no blob {blob} in {repo}")
        if size > blobparts.MAX_IMAGE_BYTES:
            abort(413, description=f"the image is {size} bytes, over {blobparts.MAX_IMAGE_BYTES}")
        obj = r.object_store[sha]
        if not isinstance(obj, Blob):
            abort(404, description=f"{blob} is no blob")
        data = obj.as_raw_string()
    kind = blobparts.image_type(data)
    if kind is None:
        abort(415, description="not a PNG, JPEG, GIF or WebP image")
    return Response(
        data,
        mimetype=kind,
        headers={
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Content-Disposition": "inline",
            "Cache-Control": IMMUTABLE,
        },
    )
