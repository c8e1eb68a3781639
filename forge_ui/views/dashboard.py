"""The dashboard: one page, its sections re-rendered and pushed live over /ws/dashboard."""

from flask import Blueprint, g, redirect, render_template, request, url_for
from markupsafe import Markup

from forge_ui import state
from forge_ui.context import hive
from hyperhive.broker import questions
from hyperhive.wire import notify

bp = Blueprint("dashboard", __name__)

BANNERS = ("alerts",)  # sections shown above the panels, each only when it has something


def render_sections(data: dict) -> dict[str, str]:
    """Each section's HTML: the same partial serves the first render and live updates."""
    out = {name: Markup(render_template(f"dash/_{name}.html", **data)) for name in state.SECTIONS}
    out["errors"] = Markup(render_template("dash/_errors.html", **data))
    return out


@bp.post("/questions/<int:question_id>/answer")
def answer(question_id: int):
    questions.answer(state.broker(hive()), question_id, request.form.get("answer"), g.actor)
    if hive().broker is None:  # not the daemon's broker: let the daemon wake its readers
        notify.wrote_messages(hive().home)
    return redirect(url_for("dashboard.index"))


@bp.get("/")
def index():
    sections = render_sections(state.collect(hive()))
    return render_template(
        "dashboard.html",
        sections=sections,
        banners=BANNERS,
        order=[name for name in state.SECTIONS if name not in BANNERS],
        title="Dashboard",
        runs_open=state.runs_open(hive()),
    )
