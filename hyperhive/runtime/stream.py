"""Run a command and hand each output line to a callback the moment it is printed."""

import subprocess
from pathlib import Path

from hyperhive.runtime.base import Emit


def run_streamed(argv: list[str], emit: Emit, cwd: Path | None = None) -> int:
    """Run `argv` with stdout and stderr merged, emitting lines as they arrive; exit code."""
    proc = subprocess.Popen(
        argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    with proc.stdout:
        for raw in iter(proc.stdout.readline, b""):
            emit(raw.decode(errors="replace").rstrip("\n"))
    return proc.wait()
