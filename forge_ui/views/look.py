"""The forge's look outside its pages: the favicon at the path browsers ask for."""

from flask import Blueprint, redirect, url_for

bp = Blueprint("look", __name__)


@bp.get("/favicon.ico")
def favicon():
    """Browsers ask for /favicon.ico whatever the page says: send them to the SVG."""
    response = redirect(url_for("static", filename="favicon.svg"), code=301)
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response
