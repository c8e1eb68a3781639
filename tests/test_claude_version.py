"""The harness's check of the claude it runs: `claude --version` at least 2.1.0."""

import json
import subprocess
import uuid
from pathlib import Path

import fake_claude
import pytest
from support.hive import fake_program

from hyperhive.harness.claude_version import (
    MIN_VERSION,
    UnsupportedClaude,
    parse_version,
    require_supported,
)


def test_versions_are_read_as_the_cli_prints_them():
    assert parse_version("2.1.3 (Claude Code)\n") == (2, 1, 3)
    assert parse_version("claude-code 2.10.0\n") == (2, 10, 0)
    assert parse_version("warning: x\n1.0.128 (Claude Code)\n") == (1, 0, 128)
    assert parse_version("Claude Code\n") is None
    assert parse_version("1.2.3.4") == (1, 2, 3)
    assert MIN_VERSION == (2, 1, 0)


@pytest.mark.parametrize(
    "script, result",
    [
        ('echo "2.1.0 (Claude Code)"', "2.1.0"),
        ('echo "2.1.17 (Claude Code)"', "2.1.17"),
        ('echo "3.0.0 (Claude Code)"', "3.0.0"),
        ('echo "2.0.99 (Claude Code)"', "is Claude Code 2.0.99; the harness needs 2.1.0 or newer"),
        ('echo "1.0.128 (Claude Code)"', "is Claude Code 1.0.128; the harness needs 2.1.0"),
        ('echo "Claude Code"', "printed no version ('Claude Code')"),
        ("echo 'unknown option' >&2; exit 2", "--version` exited 2: unknown option"),
        ("sleep 30", "cannot run"),
    ],
)
def test_require_supported(tmp_path: Path, monkeypatch, script: str, result: str):
    claude = fake_program(tmp_path / "bin", "claude", script + "\n")
    if result[0].isdigit():
        assert require_supported(str(claude)) == result
        return
    mark = f"HYPERHIVE_TEST_MARK={uuid.uuid4().hex}"  # in the environment of all it starts
    monkeypatch.setenv(*mark.split("="))
    with pytest.raises(UnsupportedClaude) as e:
        require_supported(str(claude), timeout=0.5)
    assert result in str(e.value)
    assert str(claude) in str(e.value)
    # a timed-out run leaves nothing behind: the shell's `sleep` ends with it
    assert not [p.name for p in Path("/proc").glob("[0-9]*") if _has(p, mark.encode())]


def _has(proc: Path, mark: bytes) -> bool:
    try:
        return mark in (proc / "environ").read_bytes().split(b"\0")
    except OSError:
        return False


def test_a_missing_claude_is_refused(tmp_path: Path):
    with pytest.raises(UnsupportedClaude, match="cannot run `/nonexistent/claude --version`"):
        require_supported("/nonexistent/claude")


ROOT = Path(__file__).resolve().parent.parent


def nix_eval(expr: str) -> object:
    out = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "--expr", expr],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_nix_and_the_harness_agree_on_the_minimum():
    lib = ROOT / "nix" / "lib.nix"
    got = nix_eval(
        f"let l = import {lib}; in {{ min = l.minClaudeVersion; "
        'ok = map l.claudeSupported [ "2.1.0" "2.1.328" "10.0.0" "2.0.77" "1.0.128" "" ]; }'
    )
    assert got["min"] == ".".join(map(str, MIN_VERSION))
    assert got["ok"] == [True, True, True, False, False, True]  # "": left to the harness


def test_the_default_claude_package_is_the_tested_cli_from_npm():
    # nix/claude-code.nix with a stub nixpkgs: what it fetches, for which platforms
    pkg = ROOT / "nix" / "claude-code.nix"
    stub = (
        '{ lib = { makeBinPath = l: builtins.concatStringsSep ":" l; licenses.unfree = 1; '
        "sourceTypes.binaryNativeCode = 1; }; "
        'stdenvNoCC = { mkDerivation = a: a; hostPlatform.system = "SYSTEM"; }; '
        "fetchurl = a: a; makeBinaryWrapper = 1; autoPatchelfHook = 1; "
        'procps = "p"; ripgrep = "r"; bubblewrap = "b"; socat = "s"; }'
    )
    drvs = {
        system: nix_eval(
            f"let d = import {pkg} {stub.replace('SYSTEM', system)}; in "
            "{ inherit (d) version src; platforms = d.meta.platforms; }"
        )
        for system in ("x86_64-linux", "aarch64-linux")
    }
    x86 = drvs["x86_64-linux"]
    assert x86["version"] == fake_claude.VERSION  # the tests' claude answers this version
    assert parse_version(x86["version"]) >= MIN_VERSION
    assert x86["platforms"] == ["aarch64-linux", "x86_64-linux"]
    for system, npm in (("x86_64-linux", "linux-x64"), ("aarch64-linux", "linux-arm64")):
        src = drvs[system]["src"]
        assert src["url"] == (
            f"https://registry.npmjs.org/@anthropic-ai/claude-code-{npm}/-/"
            f"claude-code-{npm}-{x86['version']}.tgz"
        )
        assert src["hash"].startswith("sha512-") and len(src["hash"]) == 95  # npm integrity
