"""The dashboard: one page, its sections re-rendered and pushed live over /ws/dashboard."""

import time
from collections.abc import Iterable

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from markupsafe import Markup

from forge_ui import state
from forge_ui.context import hive
from hyperhive.broker import questions
from hyperhive.wire import notify

bp = Blueprint("dashboard", __name__)

BANNERS = ("alerts",)  # sections shown above the panels, each only when it has something


def render_sections(data: dict, names: Iterable[str] | None = None) -> dict[str, str]:
    """Each section's HTML (or those in `names`; `errors` is one too): the same partial
    serves the first render and live updates. Rendered per session (a form's CSRF
    token), so what sockets share is the data, never the HTML."""
    wanted = [*state.SECTIONS, "errors"] if names is None else names
    return {name: Markup(render_template(f"dash/_{name}.html", **data)) for name in wanted}


@bp.post("/questions/<int:question_id>/answer")
def answer(question_id: int):
    questions.answer(state.broker(hive()), question_id, request.form.get("answer"), g.actor)
    if hive().broker is None:  # not the daemon's broker: let the daemon wake its readers
        notify.wrote_messages(hive().home)
    return redirect(url_for("dashboard.index"))


@bp.get("/")
def index():
    # A load of its own, which the open dashboards then share: its socket, opened right
    # after, finds the same versions and has nothing to send until something changes.
    data, versions = current_app.extensions["state"].snapshot(max_age=0)
    return render_template(
        "dashboard.html",
        sections=render_sections(data),
        versions=versions,
        now=int(time.time()),
        banners=BANNERS,
        order=[name for name in state.SECTIONS if name not in BANNERS],
        title="Dashboard",
        runs_open=state.runs_open(hive()),
    )
