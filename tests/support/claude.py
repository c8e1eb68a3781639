"""The fake claude (tests/fake_claude.py) as a `claude` on a PATH, and what its runs
recorded."""

import json
import shlex
import sys
from pathlib import Path

FAKE_CLAUDE = Path(__file__).resolve().parents[1] / "fake_claude.py"


def claude_script(
    directory: Path, name: str = "claude", before: str = "", env: dict[str, str] | None = None
) -> Path:
    """An executable `claude` that runs the fake with this interpreter (after the shell
    lines `before`), with `env` set in the script itself: an agent's sandbox passes on
    only its allow-list of the daemon's environment (no FAKE_CLAUDE_*)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in (env or {}).items())
    path.write_text(f'#!/bin/sh\n{exports}{before}exec "{sys.executable}" "{FAKE_CLAUDE}" "$@"\n')
    path.chmod(0o755)
    return path


def fake_runs(fake_home: Path) -> list[dict]:
    """The runs the fake recorded in its FAKE_CLAUDE_HOME, oldest first."""
    path = fake_home / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
