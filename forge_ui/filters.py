"""Jinja filters for times, ages and commit ids."""

import time
from datetime import UTC, datetime

from flask import Flask
from markupsafe import Markup


def age(ts: int | float | None, now: float | None = None) -> str:
    """'5s', '3m', '2h', '4d' since `ts`: dense enough for a table cell."""
    if not ts:
        return "-"
    seconds = max(0, int((now or time.time()) - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def live_age(ts: int | float | None) -> Markup | str:
    """`age` in an element the page's script keeps current (static/forge.js `hive.ages`):
    a page updated live never needs the server again just because time passed."""
    if not ts:
        return "-"
    return Markup('<time class="age" data-ts="%d">%s</time>') % (int(ts), age(ts))


def utc(ts: int | float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def short(sha: str | None) -> str:
    return (sha or "-")[:12]


def init_app(app: Flask) -> None:
    app.add_template_filter(age)
    app.add_template_filter(live_age)
    app.add_template_filter(utc)
    app.add_template_filter(short)
