"""The JSON text of the hive's state (`GET /api/state`, the dashboard's section versions),
kept section by section.

At 50 agents x 200 tags the approvals section alone is a megabyte of JSON, and encoding
it cost more than loading it. Between two loads most sections hold equal data, so each
section's text is kept with the data it was made from and reused while a new load's data
compares equal (a comparison in C that skips the objects the loads share, such as each
approval's own JSON). Equal data encodes to the same text: the loaders never put values
that are equal across types (1, 1.0, True) in one field.
"""

import hashlib
import json
import os
import threading
from collections.abc import Callable

from flask import Flask, Response
from flask.json.provider import DefaultJSONProvider


def plain(value: object) -> str:
    """Sorted keys, no spaces; what JSON cannot hold as its text (str)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


class SectionTexts:
    """The newest text of each section by its name, made by `encode`. The data handed in
    must not change afterwards (a `collect`'s result never does)."""

    def __init__(self, encode: Callable[[object], str] = plain):
        self.encode = encode
        self._last: dict[str, tuple[object, str, str]] = {}  # name -> (data, text, digest)
        self._lock = threading.Lock()

    def _entry(self, name: str, value: object) -> tuple[object, str, str]:
        with self._lock:
            last = self._last.get(name)
        if last is not None and (last[0] is value or last[0] == value):
            return last
        text = self.encode(value)
        digest = hashlib.blake2b(text.encode(), digest_size=8, key=_EPOCH).hexdigest()
        entry = (value, text, digest)
        with self._lock:
            self._last[name] = entry
        return entry

    def text(self, name: str, value: object) -> str:
        return self._entry(name, value)[1]

    def digest(self, name: str, value: object) -> str:
        """A digest of the section's text: equal for equal data in this process."""
        return self._entry(name, value)[2]

    def document(self, data: dict[str, object]) -> str:
        """`data` (a dict of sections) as one JSON object, keys sorted as `encode` sorts
        them: the same text as encoding `data` whole."""
        pairs = (f"{json.dumps(name)}:{self.text(name, data[name])}" for name in sorted(data))
        return "{" + ",".join(pairs) + "}"


# A process's digests differ from another's: a page reconnecting to a restarted (maybe
# upgraded, with other templates) daemon gets every section again.
_EPOCH = os.urandom(8)


def for_app(app: Flask) -> SectionTexts:
    """Texts made by the app's JSON provider, compact as its responses are."""
    return SectionTexts(lambda value: app.json.dumps(value, separators=(",", ":")))


def response(app: Flask, texts: SectionTexts, data: dict[str, object]) -> Response:
    """`jsonify(data)` of a `collect`, from the kept texts of its sections: the same
    bytes. An app whose JSON is not Flask's compact, sorted default (debug mode indents
    it) gets jsonify's own."""
    provider = app.json
    indents = provider.compact is False or (provider.compact is None and app.debug)
    if not isinstance(provider, DefaultJSONProvider) or indents or not provider.sort_keys:
        return provider.response(data)
    return app.response_class(f"{texts.document(data)}\n", mimetype=provider.mimetype)
