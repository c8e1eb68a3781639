"""The fake claude (tests/fake_claude.py) as a `claude` on a PATH, and what its runs
recorded."""

import json
import sys
from pathlib import Path

FAKE_CLAUDE = Path(__file__).resolve().parents[1] / "fake_claude.py"


def claude_script(directory: Path, name: str = "claude", before: str = "") -> Path:
    """An executable `claude` that runs the fake with this interpreter (after the shell
    lines `before`)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f'#!/bin/sh\n{before}exec "{sys.executable}" "{FAKE_CLAUDE}" "$@"\n')
    path.chmod(0o755)
    return path


def fake_runs(fake_home: Path) -> list[dict]:
    """The runs the fake recorded in its FAKE_CLAUDE_HOME, oldest first."""
    path = fake_home / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
