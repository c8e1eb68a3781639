"""The parts of a blob a diff page loads on demand: a range of its lines (the context a
reviewer expands between hunks) and, for an image, its type.

Both are read by blob id, which names content and never changes, so an answer can be
cached forever. Limits: at most `MAX_LINES` lines per request, and no blob over
`MAX_BYTES` is read for lines (the page's own `DiffLimits.alone_bytes`: a file that large
was never diffed, so it has no context to expand)."""

from hyperhive.errors import BadInput
from hyperhive.gitstore.packscan import stored_size

MAX_LINES = 1_000
MAX_BYTES = 4 * 1024 * 1024
MAX_IMAGE_BYTES = 8 * 1024 * 1024

# Magic numbers: an image is served with the type its bytes say, never its name's. SVG is
# not here: it is text that can carry script, and is diffed as text.
_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
]


def image_type(data: bytes) -> str | None:
    """The MIME type of a PNG, JPEG, GIF or WebP by its first bytes; None otherwise."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in _MAGIC if data.startswith(magic)), None)


def blob_lines(store, sha: bytes, start: int, end: int) -> tuple[list[bytes], int]:
    """Lines `start`..`end` (1-based, inclusive; clipped to the blob) of a blob, and how
    many lines it has. KeyError: no such blob here."""
    if start < 1 or end < start:
        raise BadInput(f"no such line range {start}-{end}: lines count from 1, end >= start")
    if end - start + 1 > MAX_LINES:
        raise BadInput(f"at most {MAX_LINES} lines at once; asked for {end - start + 1}")
    size = stored_size(store, sha)
    if size > MAX_BYTES:
        raise BadInput(f"the file is {size} bytes, over {MAX_BYTES}: `git show` it in a clone")
    obj = store[sha]
    if obj.type_name != b"blob":
        raise KeyError(sha)
    lines = obj.as_raw_string().splitlines(True)
    return lines[start - 1 : end], len(lines)
