"""The dashboard: one page, its sections re-rendered and pushed live over /ws/dashboard."""

import functools
import time
from collections.abc import Iterable

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from jinja2 import Environment, meta, nodes
from markupsafe import Markup

from forge_ui import state
from forge_ui.context import hive
from hyperhive.broker import questions
from hyperhive.wire import notify

bp = Blueprint("dashboard", __name__)

BANNERS = ("alerts",)  # sections shown above the panels, each only when it has something


# What a template may read of the session or the request: a section whose template (with
# what it includes) names none of them renders the same for every dashboard.
PER_SESSION = {"csrf_token", "session", "g", "request", "csp_nonce", "get_flashed_messages"}


def render_sections(
    data: dict, names: Iterable[str] | None = None, versions: dict[str, str] | None = None
) -> dict[str, str]:
    """Each section's HTML (or those in `names`; `errors` is one too): the same partial
    serves the first render and live updates. A section that reads nothing of the
    session is rendered once per version (of `versions`) for every dashboard; one that
    does (a form's CSRF token) is rendered for each."""
    wanted = [*state.SECTIONS, "errors"] if names is None else names
    # section -> (version, script root, html): the newest render of each (one at 50
    # agents x 200 tags is half a megabyte)
    rendered: dict[str, tuple] = current_app.extensions.setdefault("dashboard_html", {})
    out = {}
    for name in wanted:
        key = ((versions or {}).get(name), request.script_root)
        keep = key[0] is not None and shared(current_app.jinja_env, name)
        known = rendered.get(name) if keep else None
        if known is not None and known[:2] == key:
            out[name] = known[2]
            continue
        out[name] = Markup(render_template(f"dash/_{name}.html", **data))
        if keep:
            rendered[name] = (*key, out[name])
    return out


@functools.cache
def shared(env: Environment, name: str) -> bool:
    """Section `name`'s template reads nothing of the session or the request."""
    return not (_names(env, f"dash/_{name}.html") & PER_SESSION)


def _names(env: Environment, template: str) -> set[str]:
    """The names a template reads from its context, with the templates it includes."""
    tree = env.parse(env.loader.get_source(env, template)[0])
    names = {n.name for n in tree.find_all(nodes.Name)}  # globals such as csrf_token too
    for included in meta.find_referenced_templates(tree):
        names |= _names(env, included) if included else {"session"}  # unknown: not shared
    return names


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
        sections=render_sections(data, versions=versions),
        versions=versions,
        now=int(time.time()),
        banners=BANNERS,
        order=[name for name in state.SECTIONS if name not in BANNERS],
        title="Dashboard",
        runs_open=state.runs_open(hive()),
    )
