"""The check of a proposal on the nixos-container runtime: the candidate flake on a ref
of its own, the policy evaluated, the container's system built with `nix build` (a fake
`nix` that behaves like the real one: progress on stderr, the store path on stdout, a
failing builder), nothing created, switched or started, a hanging build killed at the
time limit."""

import os
import time
from pathlib import Path

import pytest
from support.hive import fake_program, git
from support.nixos_fake import NAME, SEP, Fake, Recorder, fake, make_runtime  # noqa: F401

from hyperhive.home import Home
from hyperhive.workflow import checks
from hyperhive.workflow.approvals import Approvals

# `nix build --no-link --print-out-paths <flake>#…toplevel` as nix 2.x prints it; a
# broken config fails in its builder, $FAKE_NC/hang makes it hang (its pid in
# $FAKE_NC/nix.pid).
FAKE_NIX = r"""
for a in "$@"; do printf '%s\037' "$a"; done >> "$FAKE_NC/nix-argv"; echo >> "$FAKE_NC/nix-argv"
for a in "$@"; do [ "$a" = build ] && building=1; done
[ -n "$building" ] || { echo "fake nix: only build" >&2; exit 1; }
echo "building '/nix/store/bbbb-nixos-system-h-manager.drv'..." >&2
if [ -e "$FAKE_NC/hang" ]; then echo $$ > "$FAKE_NC/nix.pid"; sleep 600; fi
if [ -e "$FAKE_NC/broken" ]; then
    echo "error: builder for '/nix/store/bbbb-nixos-system-h-manager.drv' failed" \
         "with exit code 1;" >&2
    echo "       last 1 log lines:" >&2
    echo "       > error: attribute 'nonexistent' missing" >&2
    exit 1
fi
echo "/nix/store/aaaa-nixos-system-h-manager-24.05"
"""


@pytest.fixture
def nix(tmp_path: Path, fake: Fake) -> Path:  # noqa: F811
    return fake_program(tmp_path / "nixbin", "nix", FAKE_NIX)


def nix_calls(fake: Fake) -> list[list[str]]:  # noqa: F811
    path = fake.root / "nix-argv"
    return [line.split(SEP)[:-1] for line in path.read_text().splitlines()] if path.exists() else []


def test_a_check_builds_the_system_and_switches_nothing(home: Home, fake: Fake, nix: Path):  # noqa: F811
    rec = Recorder()
    runtime = make_runtime(home, fake, rec, nix=str(nix))
    check = checks.run(home, NAME, 1, runtime, 60)
    assert check.result == "passed" and check.policy == {"allowedRecipients": ["operator"]}
    assert check.runtime == "NixosContainerRuntime"
    [argv] = nix_calls(fake)
    flake, _, attr = argv[-1].partition("#")
    assert argv[:5] == ["--extra-experimental-features", "nix-command flakes", "build",
                        "--no-link", "--print-out-paths"]  # fmt: skip
    assert attr == f'nixosConfigurations."{NAME}".config.system.build.toplevel'
    assert "ref=refs/hyperhive/check/manager/" in flake and rec.evaluated == [(flake, NAME)]
    assert fake.actions() == []  # no container created, updated or started
    # the candidate's ref is gone; main and the build ref were never touched
    assert git(home.meta_dir, "for-each-ref", "refs/hyperhive/").strip() == ""
    log = Path(check.log).read_text()
    assert "/nix/store/aaaa-nixos-system-h-manager-24.05" in log and "building '" in log
    assert Approvals(home, NAME).get(1).state == "proposal"


def test_a_failing_build_fails_the_check_with_its_lines(home: Home, fake: Fake, nix: Path):  # noqa: F811
    fake.flag("broken")
    check = checks.run(home, NAME, 1, make_runtime(home, fake, Recorder(), nix=str(nix)), 60)
    assert check.result == "failed"
    assert check.reason == "`nix build` of manager's system exited 1"
    assert any("attribute 'nonexistent' missing" in line for line in check.tail)
    assert "Result: failed" in git(home.applied_dir(NAME), "cat-file", "-p", "checked/1")


def test_a_hanging_build_is_killed_at_the_time_limit(home: Home, fake: Fake, nix: Path):  # noqa: F811
    fake.flag("hang")
    began = time.monotonic()
    check = checks.run(home, NAME, 1, make_runtime(home, fake, Recorder(), nix=str(nix)), 1)
    assert time.monotonic() - began < 30
    assert check.result == "failed" and check.reason == "timed out after 1s: stopped"
    pid = int((fake.root / "nix.pid").read_text())
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)  # killed with its group: reaped by its parent's end
    assert not os.path.exists(f"/proc/{pid}")
