"""What a `hyperhive` process imports before it does its work (bench/startup.py measures
the time): `--help`, `hyperhive mcp` (each `claude` turn starts one), `hyperhive harness`
and `hyperhive deploy` with a daemon to queue it (what the post-receive hook runs at each
approval) import none of the heavy packages they do not use. Checked in a fresh
interpreter through `sys.modules`, not by timing."""

import json
import subprocess
import sys

import pytest

# Packages that cost tenths of a second to a second and a half to import, and the parts of
# hyperhive that pull them in.
HEAVY = (
    "mcp",
    "pydantic",
    "anyio",
    "flask",
    "werkzeug",
    "jinja2",
    "pygments",
    "dulwich",
    "sqlite3",
    "forge_ui",
    "hyperhive.workflow",
    "hyperhive.gitstore",
    "hyperhive.broker",
    "hyperhive.daemon",
    "hyperhive.operator",
    "hyperhive.agents",
    "hyperhive.runtime.local",
    "hyperhive.runtime.nixos_container",
)

PRELUDE = """
import json, sys
def loaded():
    print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""
CASES = {
    "--help": """
from hyperhive.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
""",
    "mcp": """
from hyperhive.cli import main
assert main(["mcp", "--socket", sys.argv[1] + "/none.sock"]) == 1  # no daemon: refused
import hyperhive.mcp.server  # all it serves with, had a daemon answered
""",
    "harness": """
from hyperhive.cli import build_parser
build_parser().parse_args(["harness", "--state", sys.argv[1], "--etc", sys.argv[1]])
import hyperhive.harness.loop  # what cmd_harness runs
""",
    "deploy": """
import socket, threading
from pathlib import Path
run = Path(sys.argv[1]) / "run"
run.mkdir()
daemon = socket.socket(socket.AF_UNIX)
daemon.bind(str(run / "host.sock"))
daemon.listen(1)
def answer():  # the daemon queues the build
    conn, _ = daemon.accept()
    request = json.loads(conn.makefile("rb").readline())
    assert request == {"op": "deploy", "agent": "alice", "id": 3}, request
    conn.sendall(b'{"ok": true, "ahead": 0}\\n')
    conn.close()
threading.Thread(target=answer, daemon=True).start()
from hyperhive.cli import main
assert main(["deploy", "--home", sys.argv[1], "alice#3"]) == 0
""",
}


def heavy_imports(code: str, tmp_path) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + code + "\nloaded()\n", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    modules = json.loads(proc.stderr.splitlines()[-1])
    assert "hyperhive.cli" in modules
    return [m for m in modules if m in HEAVY or m.startswith(tuple(h + "." for h in HEAVY))]


@pytest.mark.parametrize("entry", list(CASES))
def test_an_entry_imports_nothing_heavy_it_does_not_use(entry, tmp_path):
    assert heavy_imports(CASES[entry], tmp_path) == []


def test_the_check_sees_a_heavy_import(tmp_path):
    """The same check on a command that needs the workflow finds it."""
    code = "import hyperhive.cli, hyperhive.workflow.approvals"
    assert {"dulwich", "hyperhive.workflow.approvals"} <= set(heavy_imports(code, tmp_path))
