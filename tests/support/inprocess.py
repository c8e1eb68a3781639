"""The `hyperhive` CLI's own `main`, called in the test's process as the console script
would call it: the same exit code, stdout and stderr as `run_cli`'s process, without the
0.15-0.3 s of a new interpreter and its imports. For tests whose subject is what a
command does, not the process; each command family keeps a real-process test
(run_cli) for the console script, the environment it reads at import and its exit."""

import io
import logging
import os
import subprocess
import sys
from contextlib import ExitStack, redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

from .hive import HYPERHIVE


def run_main(
    home: Path, *args: str, env: dict | None = None, input: str = "", check: bool = False
) -> subprocess.CompletedProcess:
    """`hyperhive *args` with HYPERHIVE_HOME=home and `env` set for the call, stdin
    `input`; a CompletedProcess as run_cli returns. The process-wide things main changes
    (umask, logging, the environment, the runtime read at import) are put back after."""
    from hyperhive import cli

    out, err = io.StringIO(), io.StringIO()
    # main's logging.basicConfig(stream=sys.stderr) is a no-op under pytest's handlers:
    # the same handler, on this call's stderr, for the call
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root, ours = logging.getLogger(), logging.getLogger("hyperhive")
    with ExitStack() as stack:
        stack.enter_context(
            mock.patch.dict(os.environ, {"HYPERHIVE_HOME": str(home), **(env or {})})
        )
        runtime = os.environ.get("HYPERHIVE_RUNTIME") or "local"  # as read at import
        stack.enter_context(mock.patch.object(cli, "DEFAULT_RUNTIME", runtime))
        umask = os.umask(0o022)  # (read by setting it: put it back at once, and after)
        os.umask(umask)
        stack.callback(os.umask, umask)
        stack.callback(ours.setLevel, ours.level)
        root.addHandler(handler)
        stack.callback(root.removeHandler, handler)
        stack.enter_context(redirect_stdout(out))
        stack.enter_context(redirect_stderr(err))
        stack.enter_context(mock.patch.object(sys, "stdin", io.StringIO(input)))
        try:
            code = cli.main(list(args))
        except SystemExit as e:  # argparse's usage error and --help
            if isinstance(e.code, str):  # the interpreter prints it and exits 1
                print(e.code, file=sys.stderr)
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    proc = subprocess.CompletedProcess([HYPERHIVE, *args], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"hyperhive {args} exited {code}: {proc.stderr}")
    return proc


def never_serve(monkeypatch) -> None:
    """For `up`'s main in this process, whose test expects a refusal: a start that went on
    past its settings fails the test here rather than serving in the test's process."""
    from hyperhive.daemon import up

    def past_the_settings() -> int:
        raise AssertionError("up went on past its settings")

    monkeypatch.setattr(up, "raise_fd_limit", past_the_settings)
