"""Which Claude Code the harness drives: `claude --version` at least MIN_VERSION.

The harness relies on the 2.1 CLI: `-p` with `--output-format stream-json --verbose`,
`--mcp-config` with `--strict-mcp-config`, `--resume`, and the `--allowedTools` grammar of
its policies (`Bash(<pattern>)`, `mcp__<server>__<tool>`). An older CLI (nixpkgs carried
1.x `claude-code` for long) may parse some of these differently and run with other
permissions than the policy says, so it is refused up front, naming what was found.
"""

import os
import re
import signal
import subprocess

from hyperhive.errors import ClaudeNotRunnable, UnsupportedClaude

MIN_VERSION = (2, 1, 0)
TIMEOUT = 60.0  # seconds for `claude --version` (a first run may unpack itself)
_VERSION = re.compile(r"(?<![\d.])(\d+)\.(\d+)\.(\d+)")


def parse_version(output: str) -> tuple[int, int, int] | None:
    """The version `claude --version` printed ("2.1.3 (Claude Code)"), from its first line
    that has one."""
    for line in output.splitlines():
        if match := _VERSION.search(line):
            major, minor, patch = map(int, match.groups())
            return major, minor, patch
    return None


def dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def check(found: tuple[int, int, int] | None, claude: str, output: str) -> str:
    """The supported version's text, or UnsupportedClaude saying what was found."""
    if found is None:
        said = output.strip().splitlines()[:1] or ["nothing"]
        raise UnsupportedClaude(
            f"`{claude} --version` printed no version ({said[0][:200]!r}): the harness "
            f"needs Claude Code {dotted(MIN_VERSION)} or newer"
        )
    if found < MIN_VERSION:
        raise UnsupportedClaude(
            f"{claude} is Claude Code {dotted(found)}; the harness needs "
            f"{dotted(MIN_VERSION)} or newer (set hyperhive.claudePackage, or "
            "hyperhive.claude, to a newer one)"
        )
    return dotted(found)


def require_supported(claude: str, timeout: float = TIMEOUT) -> str:
    """Run `claude --version` and return the version if the harness supports it; raise
    UnsupportedClaude (naming the version found, or why there is none) otherwise."""
    try:
        proc = subprocess.Popen(
            [claude, "--version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # a group of its own: what it started ends with it
        )
    except OSError as e:
        raise ClaudeNotRunnable(f"cannot run `{claude} --version`: {e}") from None
    with proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as e:
            # subprocess.run kills the process only: a wrapper script's children (a shell
            # running node, say) lived on, holding the pipes
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise UnsupportedClaude(f"cannot run `{claude} --version`: {e}") from None
    if proc.returncode != 0:
        said = (err.strip() or out.strip()).splitlines()[-1:] or [""]
        raise UnsupportedClaude(f"`{claude} --version` exited {proc.returncode}: {said[0][:200]}")
    return check(parse_version(out), claude, out)
