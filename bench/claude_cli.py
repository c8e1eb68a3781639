"""What a turn of the pinned Claude Code CLI costs before the model is even asked: a
`claude -p` run with the harness's flags against the local Messages API stand-in
(tests/anthropic_standin.py), wall and CPU time per run (the CLI's own and its MCP
servers'), beside references measured in the same run: `claude --version` (the binary's
bare start) and tests/fake_claude.py (what the fast tests run instead).

Needs `make claude-cli`. `--quick` runs each case twice instead of five times.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from anthropic_standin import StandIn  # noqa: E402

from hyperhive.harness.claude_config import claude_env, permission_args  # noqa: E402

CLAUDE = ROOT / ".cache" / "claude-code" / "node_modules" / ".bin" / "claude"
FAKE = ROOT / "tests" / "fake_claude.py"
ECHO = {"command": sys.executable, "args": ["-I", str(ROOT / "tests" / "echo_mcp.py")]}


def timed(args: list[str], prompt: str, env: dict, cwd: Path) -> tuple[float, float]:
    """(wall, CPU of the children) seconds of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(args, input=prompt, capture_output=True, text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {proc.stdout[-500:]} {proc.stderr[-500:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    if not CLAUDE.exists():
        raise SystemExit(f"{CLAUDE} is missing: run `make claude-cli`")
    runs = 2 if "--quick" in sys.argv else 5
    state = Path(tempfile.mkdtemp(prefix="bench-claude-"))
    with StandIn() as standin:
        base = {"PATH": os.environ["PATH"], "HOME": str(state),
                "ANTHROPIC_BASE_URL": standin.url, "ANTHROPIC_API_KEY": "sk-bench",
                "DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "FAKE_CLAUDE_HOME": str(state / "fake")}  # fmt: skip
        env = claude_env(state, base)
        flags = ["-p", "--output-format", "stream-json", "--verbose"]
        perms = permission_args("agent", {"echo": {"allowedTools": ["*"]}}, {}, state)
        mcp = json.dumps({"mcpServers": {"echo": {**ECHO, "env": {}}}})
        none = json.dumps({"mcpServers": {}})
        cases = [
            ("ours", "claude turn, harness flags + 1 MCP server",
             [str(CLAUDE), *flags, *perms, "--mcp-config", mcp, "--strict-mcp-config"]),
            ("ours", "claude turn, harness flags, no MCP server",
             [str(CLAUDE), *flags, *perms, "--mcp-config", none, "--strict-mcp-config"]),
            ("ref", "claude --version (bare start)", [str(CLAUDE), "--version"]),
            ("ref", "tests/fake_claude.py turn, no MCP server",
             [sys.executable, str(FAKE), *flags, "--mcp-config", none]),
        ]  # fmt: skip
        print(f"pinned Claude Code CLI, {runs} runs each (median wall / median CPU per run)")
        for who, label, args in cases:
            walls, cpus = [], []
            for _ in range(runs):
                wall, cpu = timed(args, "hello\n", env, state)
                walls.append(wall)
                cpus.append(cpu)
            walls.sort()
            cpus.sort()
            print(f"  {who:4} {label:45} {walls[len(walls) // 2] * 1000:7.0f} ms wall"
                  f" {cpus[len(cpus) // 2] * 1000:7.0f} ms CPU")  # fmt: skip


if __name__ == "__main__":
    main()
