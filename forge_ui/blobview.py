"""A file as the blob page shows it: highlighted within a budget, plain text past it.

Pygments' lexers are pure Python: a 1 MiB `.py` took 6 s, in the request. A file over
HIGHLIGHT_MAX, or one whose lexing is still going after HIGHLIGHT_SECONDS, is shown as plain
text with the same line numbers and anchors (`#L-12`), which costs a string join; the
latter is highlighted in the background (`finisher`) for the next view. A blob never
changes, so what was highlighted is kept by blob id (and lexer: one content may
be two languages by name), within CACHE_BYTES."""

import io
import posixpath
import time
from html import escape

from markupsafe import Markup
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import TextLexer, get_lexer_for_filename
from pygments.util import ClassNotFound

from forge_ui.finisher import Finisher
from hyperhive.gitstore.cache import SizedLRU

HIGHLIGHT_MAX = 256 * 1024  # bytes of text highlighted at most
HIGHLIGHT_SECONDS = 0.15  # lexing budget per file; past it, plain text
HIGHLIGHT_FLOOR = 16 * 1024  # a file this small is highlighted whatever the time it takes
CACHE_BYTES = 32 * 1024 * 1024  # highlighted HTML kept (a 256 KiB file: ~3 MiB of it)
_highlighted: SizedLRU[tuple[bytes, str], Markup] = SizedLRU(CACHE_BYTES)
FINISHER = Finisher("blobview", 4)  # highlights a file past HIGHLIGHT_SECONDS, off the request


def formatter() -> HtmlFormatter:
    return HtmlFormatter(
        cssclass="hl", linenos="table", lineanchors="L", anchorlinenos=True, wrapcode=True
    )


def lexer_for(path: str) -> Lexer:
    try:
        return get_lexer_for_filename(posixpath.basename(path), stripnl=False)
    except ClassNotFound:
        return TextLexer(stripnl=False)


def plain(text: str) -> Markup:
    """The text with line numbers and anchors in pygments' table layout, unhighlighted.
    Escaped whole, then split: one C-level pass instead of an escape per line."""
    lines = escape(text, quote=False).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    count = len(lines)
    numbers = "\n".join(
        [f'<span class="normal"><a href="#L-{n}">{n}</a></span>' for n in range(1, count + 1)]
    )
    code = "".join(
        [f'<a id="L-{n}" name="L-{n}"></a>{line}\n' for n, line in enumerate(lines, start=1)]
    )
    return Markup(
        '<div class="hl"><table class="hltable"><tr><td class="linenos"><div class="linenodiv">'
        f'<pre>{numbers}</pre></div></td><td class="code"><div><pre><span></span><code>{code}'
        "</code></pre></div></td></tr></table></div>"
    )


def _highlight(lexer: Lexer, text: str, deadline: float | None) -> Markup | None:
    """The highlighted HTML; None once lexing is past `deadline` (time.monotonic)."""
    tokens = []
    for i, token in enumerate(lexer.get_tokens(text)):
        tokens.append(token)
        if deadline is not None and i % 1024 == 0 and time.monotonic() > deadline:
            return None
    buffer = io.StringIO()
    formatter().format(tokens, buffer)  # pygments escapes the text itself
    return Markup(buffer.getvalue())


def _finish(key: tuple[bytes, str], lexer: Lexer, text: str) -> None:
    out = _highlight(lexer, text, None)
    if out is not None:
        _highlighted.put(key, out, len(out) + 200)  # ASCII markup: about a byte a character


def _plain_kept(blob_id: bytes, text: str) -> Markup:
    """plain(text), kept by blob id like highlighted HTML (a 1 MiB file: ~4 MiB of it)."""
    key = (blob_id, "")
    if (cached := _highlighted.get(key)) is None:
        cached = plain(text)
        _highlighted.put(key, cached, len(cached) + 200)
    return cached


def render(path: str, blob_id: bytes, text: str) -> tuple[Markup, str | None]:
    """The file's HTML, and why it is not highlighted (None when it is)."""
    lexer = lexer_for(path)
    if isinstance(lexer, TextLexer):
        return _plain_kept(blob_id, text), None  # nothing to highlight
    if len(text) > HIGHLIGHT_MAX:
        return _plain_kept(blob_id, text), f"over {HIGHLIGHT_MAX // 1024} KiB"
    key = (blob_id, lexer.name)
    if (cached := _highlighted.get(key)) is not None:
        return cached, None
    small = len(text) <= HIGHLIGHT_FLOOR  # highlighted whatever the time
    out = _highlight(lexer, text, None if small else time.monotonic() + HIGHLIGHT_SECONDS)
    if out is None:
        FINISHER.wanted(key, lambda: _finish(key, lexer, text))
        return plain(text), (
            f"highlighting took over {HIGHLIGHT_SECONDS * 1000:.0f} ms; "
            "it goes on in the background: reload"
        )
    _highlighted.put(key, out, len(out) + 200)
    return out, None
