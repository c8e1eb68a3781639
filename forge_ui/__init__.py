"""The forge web UI: a Flask app factory. For now the JSON state API the dashboard will use."""

from collections.abc import Callable

from flask import Flask, jsonify

from hyperhive.agents import list_agents
from hyperhive.home import Home
from hyperhive.runtime.base import Runtime
from hyperhive.workflow.approvals import Approvals


def create_app(home: Home, runtime: Runtime, builds: Callable[[], dict] | None = None) -> Flask:
    """`builds` reports the daemon's build queue (`BuildWorker.status`), when there is one."""
    app = Flask(__name__)

    @app.get("/api/state")
    def state():
        return jsonify(
            {
                "agents": list_agents(home, runtime),
                "approvals": [
                    a.to_json() for n in home.agent_names() for a in Approvals(home, n).all(True)
                ],
                "builds": builds() if builds else {"running": {}, "queued": {}},
            }
        )

    @app.errorhandler(404)
    @app.errorhandler(405)
    def http_error(e):
        return jsonify({"error": e.description}), e.code

    return app
