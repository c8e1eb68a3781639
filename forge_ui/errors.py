"""Error pages and JSON errors; a HiveError answers with its status from
hyperhive.errors.STATUS."""

from flask import Flask, jsonify, render_template
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from forge_ui.auth import wants_json
from hyperhive.errors import HiveError, disk_full, status_of


def respond(code: int, message: str):
    if wants_json():
        return jsonify({"error": message}), code
    return render_template("error.html", code=code, message=message, title=f"{code}"), code


def init_app(app: Flask) -> None:
    @app.errorhandler(HiveError)
    def hive_error(e: HiveError):
        return respond(status_of(e), str(e))

    @app.errorhandler(OSError)
    def os_error(e: OSError):
        if (full := disk_full(e)) is None:
            raise e  # any other failure stays a 500 with its traceback logged
        return respond(507, str(full))

    @app.errorhandler(CSRFError)
    def csrf_error(e: CSRFError):
        return respond(403, f"CSRF check failed: {e.description}")

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(e: RequestEntityTooLarge):
        limit = app.config["MAX_CONTENT_LENGTH"]
        return respond(413, f"the request body is over the forge's limit of {limit} bytes")

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        return respond(e.code or 500, e.description or e.name)
