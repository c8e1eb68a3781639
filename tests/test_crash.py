"""Crash recovery (a real `hyperhive deploy` killed with SIGKILL mid-build) and the ways
a build fails: every build ends deployed or failed, and main moves only on success."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.hive import HYPERHIVE, commit_config, fake_program, fresh_commit, git, run_cli

from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import TAIL_LINES, deploy

NAME = "manager"
FAKE_LINE = "fake nix-instantiate: parsing slowly"

needs_nix = pytest.mark.skipif(
    shutil.which("nix-instantiate") is None, reason="nix-instantiate is not installed"
)


def wait_for(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def tags(home: Home, *patterns: str) -> list[str]:
    out = git(home.applied_dir(NAME), "for-each-ref", "--format=%(refname)", *patterns)
    return out.split()


def main_ref(home: Home) -> str | None:
    out = git(home.applied_dir(NAME), "for-each-ref", "--format=%(objectname)", "refs/heads/main")
    return out.strip() or None


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def quiet(home: Home) -> Home:
    """The hive without its post-receive: approving does not start a deploy by itself."""
    (home.applied_dir(NAME) / "hooks" / "post-receive").unlink()
    return home


def approved(home: Home, files: dict[str, str] | None = None, message: str = "change") -> int:
    """Propose (a commit of `files`, or something new on HEAD) and approve it; its id."""
    approvals = Approvals(home, NAME)
    commit = commit_config(home, NAME, files, message) if files else fresh_commit(home, NAME)
    approval_id = approvals.propose(commit, "manager").id
    approvals.approve(approval_id, "operator")
    return approval_id


def kill_mid_build(home: Home, tmp_path: Path, approval_id: int) -> None:
    """Run `hyperhive deploy` in its own process group with a nix-instantiate that hangs;
    SIGKILL the group once the build log shows the fake's output."""
    bindir = tmp_path / "slowbin"
    fake_program(
        bindir,
        "nix-instantiate",
        f"""\
        echo "{FAKE_LINE} $2"
        sleep 60
        """,
    )
    env = {
        **os.environ,
        "HYPERHIVE_HOME": str(home.root),
        "PATH": f"{bindir}:{os.environ['PATH']}",
    }
    log_path = home.build_log(NAME, approval_id)
    proc = subprocess.Popen(
        [HYPERHIVE, "deploy", "--here", f"{NAME}#{approval_id}"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: log_path.exists() and FAKE_LINE in log_path.read_text(),
            "the fake nix-instantiate's line in the build log",
        )
        # the line is in the log while the build still runs: it was streamed, not buffered
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        wait_for(lambda: group_gone(proc.pid), "the killed build's processes to go")
    assert proc.returncode == -signal.SIGKILL


def test_a_build_killed_mid_way_ends_failed_interrupted_on_the_next_deploy(
    quiet: Home, tmp_path: Path
):
    home = quiet
    first = approved(home)
    second = approved(home, {"agent.nix": "# second\n{ ... }: { }\n"})
    second_commit = Approvals(home, NAME).get(second).commit

    kill_mid_build(home, tmp_path, first)
    log_text = home.build_log(NAME, first).read_text()
    assert f"{FAKE_LINE} agent.nix" in log_text

    # the kill left building/<id> with no terminal sibling, and nothing deployed
    assert tags(home, f"refs/tags/*/{first}") == [
        f"refs/tags/approved/{first}",
        f"refs/tags/building/{first}",
        f"refs/tags/proposal/{first}",
    ]
    assert main_ref(home) is None
    assert Approvals(home, NAME).get(first).state == "building"

    # deploying another approval ends the interrupted one first, then builds
    proc = run_cli(home.root, "deploy", "--here", f"{NAME}#{second}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"deployed {NAME}#{second} {second_commit}\n"

    failed = git(home.applied_dir(NAME), "cat-file", "-p", f"refs/tags/failed/{first}")
    assert f"\nfailed {NAME}#{first}\n" in failed
    assert "\nActor: hyperhive\n" in failed
    assert "\nReason: interrupted\n" in failed
    assert f"\nBuild-Log: {home.build_log(NAME, first)}\n" in failed
    assert tags(home, f"refs/tags/deployed/{first}") == []
    assert tags(home, f"refs/tags/deployed/{second}") == [f"refs/tags/deployed/{second}"]
    assert main_ref(home) == second_commit
    assert git(home.meta_dir, "log", "-1", "--format=%s").strip() == (
        f"deploy {NAME}#{second} {second_commit[:12]}"
    )
    assert (home.deployed_dir(NAME) / "agent.nix").read_text().startswith("# second")
    assert not home.deployed_dir(NAME).with_name("deployed.new").exists()


def test_redeploying_the_interrupted_id_ends_it_and_refuses(quiet: Home, tmp_path: Path):
    home = quiet
    first = approved(home)
    kill_mid_build(home, tmp_path, first)

    proc = run_cli(home.root, "deploy", "--here", f"{NAME}#{first}")
    assert proc.returncode == 1
    assert f"cannot mark {NAME}#{first} building: it is already failed" in proc.stderr
    failed = git(home.applied_dir(NAME), "cat-file", "-p", f"refs/tags/failed/{first}")
    assert "\nReason: interrupted\n" in failed
    assert main_ref(home) is None
    # a new proposal of the same commit is the way to try again
    approvals = Approvals(home, NAME)
    again = approvals.propose(approvals.get(first).commit, "manager").id
    approvals.approve(again, "operator")
    assert again == first + 1
    assert run_cli(home.root, "deploy", "--here", f"{NAME}#{again}").returncode == 0
    assert main_ref(home) == Approvals(home, NAME).get(first).commit


# -- builds that fail ------------------------------------------------------------------


def deployed_first(home: Home, runtime: LocalRuntime) -> str:
    """Deploy manager#1 so that main exists; its commit."""
    Approvals(home, NAME).approve(1, "operator")
    assert deploy(home, NAME, 1, runtime).state == "deployed"
    return main_ref(home)


def failed_tag(home: Home, approval_id: int) -> tuple[str, list[str]]:
    """The failed tag's Reason trailer and its body lines."""
    ref = f"refs/tags/failed/{approval_id}"
    reason = git(
        home.applied_dir(NAME),
        "for-each-ref",
        "--format=%(contents:trailers:key=Reason,valueonly,unfold)",
        ref,
    ).strip()
    body = git(home.applied_dir(NAME), "for-each-ref", "--format=%(contents:body)", ref)
    *text, trailer_block = body.strip("\n").split("\n\n")
    assert trailer_block.startswith("Actor: hyperhive\nReason: ")  # the trailers come last
    return reason, "\n\n".join(text).splitlines()


def assert_nothing_moved(home: Home, main: str, meta_log: str) -> None:
    assert main_ref(home) == main
    assert git(home.meta_dir, "log", "--format=%H") == meta_log
    assert LocalRuntime(home).status(NAME) == {"state": "stopped", "revision": main}
    assert not home.deployed_dir(NAME).with_name("deployed.new").exists()


def test_a_config_without_agent_nix_fails(quiet: Home, runtime: LocalRuntime):
    home = quiet
    main = deployed_first(home, runtime)
    meta_log = git(home.meta_dir, "log", "--format=%H")
    git(home.config_dir(NAME), "rm", "-q", "agent.nix")
    failing = approved(home, {"other.nix": "{ }\n"}, "drop agent.nix")

    result = deploy(home, NAME, failing, runtime)
    assert result.state == "failed"
    reason, body = failed_tag(home, failing)
    assert "agent.nix is missing" in reason
    log_lines = home.build_log(NAME, failing).read_text().splitlines()
    assert body == [f"| {line}" for line in log_lines]  # the log tail, line for line
    assert body[-1].startswith("| build failed: agent.nix is missing")
    assert tags(home, f"refs/tags/deployed/{failing}") == []
    assert_nothing_moved(home, main, meta_log)
    assert (home.deployed_dir(NAME) / "agent.nix").is_file()


@needs_nix
def test_a_nix_file_that_does_not_parse_fails(quiet: Home, runtime: LocalRuntime):
    home = quiet
    main = deployed_first(home, runtime)
    meta_log = git(home.meta_dir, "log", "--format=%H")
    failing = approved(home, {"broken.nix": "{ this is = not nix"}, "broken")

    proc = run_cli(home.root, "deploy", "--here", f"{NAME}#{failing}")
    assert proc.returncode == 1
    assert f"{NAME}#{failing} failed: broken.nix does not parse" in proc.stderr
    reason, body = failed_tag(home, failing)
    assert reason.startswith("broken.nix does not parse (nix-instantiate exited ")
    # nix's own complaint is in the log and in the tag
    assert any("error" in line for line in body)
    assert "| $ nix-instantiate --parse broken.nix" in body
    assert_nothing_moved(home, main, meta_log)


def test_a_failing_nix_instantiate_fails_the_build(
    quiet: Home, runtime: LocalRuntime, tmp_path: Path, monkeypatch
):
    home = quiet
    main = deployed_first(home, runtime)
    meta_log = git(home.meta_dir, "log", "--format=%H")
    failing = approved(home, {"agent.nix": "# changed\n{ ... }: { }\n"})
    fake_program(
        tmp_path / "bin",
        "nix-instantiate",
        """\
        i=1
        while [ $i -le 80 ]; do echo "fake output $i"; i=$((i + 1)); done
        exit 1
        """,
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")

    assert deploy(home, NAME, failing, runtime).state == "failed"
    reason, body = failed_tag(home, failing)
    assert reason == "agent.nix does not parse (nix-instantiate exited 1)"
    log_lines = home.build_log(NAME, failing).read_text().splitlines()
    assert "fake output 1" in log_lines and "fake output 80" in log_lines
    # the tag carries only the last lines of the log, in order
    assert len(body) == TAIL_LINES
    assert body == [f"| {line}" for line in log_lines[-TAIL_LINES:]]
    assert "| fake output 80" in body and "| fake output 1" not in body
    assert_nothing_moved(home, main, meta_log)
    # the deployed config is still the first one
    assert not (home.deployed_dir(NAME) / "agent.nix").read_text().startswith("# changed")


class BrokenRuntime(LocalRuntime):
    def update(self, name, rev, emit):
        emit("about to break")
        raise RuntimeError("runtime bug")


def test_a_runtime_bug_still_ends_as_failed(quiet: Home, runtime: LocalRuntime):
    home = quiet
    main = deployed_first(home, runtime)
    meta_log = git(home.meta_dir, "log", "--format=%H")
    failing = approved(home, {"x.nix": "{ }\n"})
    assert deploy(home, NAME, failing, BrokenRuntime(home)).state == "failed"
    reason, body = failed_tag(home, failing)
    assert reason == "internal error: runtime bug"
    assert "| about to break" in body
    assert body[-2] == "| RuntimeError: runtime bug"  # the traceback, line by line
    log_lines = home.build_log(NAME, failing).read_text().splitlines()
    assert body == [f"| {line}" for line in log_lines[-TAIL_LINES:]]
    assert main_ref(home) == main
    assert git(home.meta_dir, "log", "--format=%H") == meta_log


def test_next_deploy_repairs_main_and_meta_left_behind_by_a_crash(
    quiet: Home, runtime: LocalRuntime
):
    """A crash after deployed/<id> but before main and meta moved: the next deploy brings
    them in line with the last deployed tag."""
    home = quiet
    main = deployed_first(home, runtime)
    git(home.applied_dir(NAME), "update-ref", "-d", "refs/heads/main")
    git(home.meta_dir, "update-ref", "refs/heads/main", "refs/heads/main~1")
    assert git(home.meta_dir, "log", "--format=%s").strip() == "init hive"

    git(home.config_dir(NAME), "rm", "-q", "agent.nix")
    failing = approved(home, {"other.nix": "{ }\n"}, "drop agent.nix")
    assert deploy(home, NAME, failing, runtime).state == "failed"

    assert main_ref(home) == main
    assert git(home.meta_dir, "log", "--format=%s").splitlines() == [
        f"deploy {NAME}#1 {main[:12]}",
        "init hive",
    ]
