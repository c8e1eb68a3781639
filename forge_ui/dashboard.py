"""The dashboard: one page, its sections re-rendered and pushed live over /ws/dashboard."""

from flask import Blueprint, render_template
from markupsafe import Markup

from forge_ui import hive, state

bp = Blueprint("dashboard", __name__)


def render_sections(data: dict) -> dict[str, str]:
    """Each section's HTML: the same partial serves the first render and live updates."""
    out = {name: Markup(render_template(f"dash/_{name}.html", **data)) for name in state.SECTIONS}
    out["errors"] = Markup(render_template("dash/_errors.html", **data))
    return out


@bp.get("/")
def index():
    sections = render_sections(state.collect(hive()))
    return render_template(
        "dashboard.html", sections=sections, order=list(state.SECTIONS), title="Dashboard"
    )
