"""The whole CLI path end to end in a temp home: the full cycle, the exit codes and what
reads the environment at import as real processes; the other refusals and usage errors
through the CLI's own main in this process (support/inprocess.py)."""

import json
import os

import pytest
from support.hive import commit_config, git, run_cli
from support.inprocess import run_main

from hyperhive.home import Home


def init(root):
    proc = run_main(root, "init")
    assert proc.returncode == 0, proc.stderr
    assert "manager#1" in proc.stdout
    return root


@pytest.fixture
def hive(tmp_path):
    return init(tmp_path / "hive")


@pytest.fixture(scope="module")
def untouched(tmp_path_factory):
    """One hive for the module's refusals and usage errors: each checks that it wrote
    nothing, so none sees another's."""
    return init(tmp_path_factory.mktemp("untouched") / "hive")


def test_init_twice_is_harmless(hive):
    before = git(hive / "applied" / "manager.git", "for-each-ref")
    proc = run_cli(hive, "init")
    assert proc.returncode == 0
    assert "already initialized" in proc.stdout
    assert git(hive / "applied" / "manager.git", "for-each-ref") == before


def test_full_cycle(tmp_path):
    # each command a real process, from the first
    hive = tmp_path / "hive"
    proc = run_cli(hive, "init")
    assert proc.returncode == 0, proc.stderr
    assert "manager#1" in proc.stdout
    # manager#1 was proposed by init; approving it deploys it through the shipped hook.
    proc = run_cli(hive, "approve", "manager#1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "approved manager#1"

    proc = run_cli(hive, "agent", "create", "coder")
    assert proc.returncode == 0, proc.stderr
    assert "coder#1" in proc.stdout

    from hyperhive.home import Home

    home = Home(hive)
    commit = commit_config(home, "coder", {"agent.nix": "{ ... }: { }\n"}, "tidy agent.nix")
    proc = run_cli(hive, "propose", "coder")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "coder#2"

    pending = json.loads(run_cli(hive, "approvals", "--json", check=True).stdout)
    assert [(a["target"], a["state"]) for a in pending] == [
        ("coder#1", "proposal"),
        ("coder#2", "proposal"),
    ]
    assert pending[1]["commit"] == commit
    assert pending[1]["subject"] == "tidy agent.nix"

    assert run_cli(hive, "deny", "coder#1", "--reason", "superseded by #2").returncode == 0
    assert run_cli(hive, "approve", "coder#2").returncode == 0

    applied = hive / "applied" / "coder.git"
    assert git(applied, "rev-parse", "main").strip() == commit
    tags = git(applied, "for-each-ref", "--format=%(refname)", "refs/tags").split()
    assert sorted(tags) == sorted(
        [
            "refs/tags/proposal/1",
            "refs/tags/denied/1",
            "refs/tags/proposal/2",
            "refs/tags/checked/2",  # approve ran its check first: no daemon runs
            "refs/tags/approved/2",
            "refs/tags/building/2",
            "refs/tags/deployed/2",
        ]
    )
    denied = git(applied, "cat-file", "-p", "denied/1")
    assert "Reason: superseded by #2" in denied and "Actor: operator" in denied

    history = json.loads(run_cli(hive, "history", "coder", "--json", check=True).stdout)
    assert history["agent"] == "coder"
    states = {a["target"]: [s["state"] for s in a["states"]] for a in history["approvals"]}
    assert states == {
        "coder#1": ["proposal", "denied"],
        "coder#2": ["proposal", "approved", "building", "deployed"],
    }
    text = run_cli(hive, "history", "coder", check=True).stdout
    assert "superseded by #2" in text and "coder#2  deployed" in text

    agents = {a["name"]: a for a in json.loads(run_cli(hive, "agent", "list", "--json").stdout)}
    assert agents["coder"]["deployed_commit"] == commit
    assert agents["coder"]["deployed_approval"] == 2
    runtime = {"host": "local", "state": "stopped", "revision": commit, "error": None}
    assert agents["coder"]["runtime"] == runtime
    assert (hive / "agents" / "coder" / "deployed" / "agent.nix").read_text() == ("{ ... }: { }\n")

    # One meta commit per deploy, pinning every deployed agent.
    meta_log = git(hive / "meta.git", "log", "--format=%s").splitlines()
    assert [s.split()[:2] for s in meta_log] == [
        ["deploy", "coder#2"],
        ["deploy", "manager#1"],
        ["init", "hive"],
    ]
    pins = json.loads(git(hive / "meta.git", "show", "main:hyperhive.json"))["agents"]
    assert (pins["coder"]["rev"], pins["coder"]["approval"]) == (commit, 2)
    assert pins["coder"]["policy"]["allowedRecipients"] is None
    assert isinstance(pins["coder"]["time"], int)
    assert set(pins) == {"manager", "coder"}
    assert f"rev={commit}" in git(hive / "meta.git", "show", "main:flake.nix")


def test_approvals_all_lists_every_state(hive):
    run_main(hive, "deny", "manager#1", "--reason", "not yet", check=True)
    assert run_main(hive, "approvals", check=True).stdout == ""
    lines = run_main(hive, "approvals", "--all", check=True).stdout.splitlines()
    assert len(lines) == 1 and lines[0].split()[:2] == ["manager#1", "denied"]


@pytest.mark.parametrize("bad", ["../x", "A", "", "a" * 40, "a/b", "x y", "-x", "1abc"])
def test_bad_agent_names_are_usage_errors(untouched, bad):
    hive = untouched
    before = sorted(p.name for p in (hive / "agents").iterdir())
    proc = run_main(hive, "agent", "create", "--", bad)
    assert proc.returncode == 2
    assert "invalid agent name" in proc.stderr
    assert sorted(p.name for p in (hive / "agents").iterdir()) == before
    assert run_main(hive, "history", "--", bad).returncode == 2


@pytest.mark.parametrize("bad", ["manager", "manager#", "manager#x", "manager#0", "#1", "A#1"])
def test_bad_targets_are_usage_errors(untouched, bad):
    proc = run_main(untouched, "approve", bad)
    assert proc.returncode == 2
    assert "NAME#ID" in proc.stderr or "invalid agent name" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["approve", "manager#9"], "unknown approval manager#9"),
        (["approve", "ghost#1"], "unknown agent 'ghost'"),
        (["propose", "manager", "deadbeef"], "unknown commit 'deadbeef'"),
        (["propose", "ghost"], "unknown agent"),
        (["deploy", "manager#1"], "cannot mark manager#1 building: it is proposal, not approved"),
        (["deny", "manager#1", "--reason", " "], "a denial needs a reason"),
        (["agent", "create", "manager"], "already exists"),
    ],
)
def test_refusals_exit_1_with_one_line_and_write_nothing(untouched, args, message):
    applied = untouched / "applied" / "manager.git"
    before = git(applied, "for-each-ref")
    proc = run_main(untouched, *args)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert message in proc.stderr
    assert git(applied, "for-each-ref") == before


def test_second_decision_names_who_decided(hive):
    run_main(hive, "deny", "manager#1", "--reason", "no", env={"HYPERHIVE_ACTOR": "alice"})
    for args in (["approve", "manager#1"], ["deny", "manager#1", "--reason", "again"]):
        proc = run_main(hive, *args, env={"HYPERHIVE_ACTOR": "bob"})
        assert proc.returncode == 1
        assert "already denied by alice" in proc.stderr


def test_not_initialized_is_a_refusal(tmp_path):
    proc = run_cli(tmp_path / "nothing", "approvals")  # a real process's exit 1
    assert proc.returncode == 1
    assert "no hive at" in proc.stderr
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize("bad", ["70000", "-1", "http"])
def test_a_port_out_of_range_is_a_usage_error_before_anything_starts(untouched, bad):
    proc = run_main(untouched, "up", "--port", bad)
    assert proc.returncode == 2
    assert f"expected a port number (0 to 65535), not '{bad}'" in proc.stderr
    assert not (untouched / "run" / "host.sock").exists()


def test_missing_reason_is_a_usage_error(untouched):
    proc = run_cli(untouched, "deny", "manager#1")  # a real process's exit 2
    assert proc.returncode == 2
    assert "--reason" in proc.stderr


def test_unknown_runtime_is_refused(untouched):
    hive = untouched  # real processes: the runtime is read at import
    proc = run_cli(hive, "approvals", env={"HYPERHIVE_RUNTIME": "docker"})
    assert proc.returncode == 0  # the runtime matters only where something runs
    proc = run_cli(hive, "agent", "list", env={"HYPERHIVE_RUNTIME": "docker"})
    assert proc.returncode == 1 and "unknown runtime 'docker'" in proc.stderr


def test_a_hive_is_closed_to_other_users_whatever_the_callers_umask(tmp_path):
    """hive.db, logs, state and tokens are nobody else's business (UMASK, as NixOS's unit)."""
    root = tmp_path / "hive"
    run_cli(root, "init", check=True, preexec_fn=lambda: os.umask(0o002))
    umask = os.umask(0o002)  # main in this process, as called with that umask
    try:
        for args in (
            ["send", "operator", "manager", "hello"],
            ["approve", "manager#1"],  # deploys here: a build log, the deployed checkout
            ["token", "issue", "manager", "--state"],
        ):
            run_main(root, *args, check=True)
    finally:
        os.umask(umask)
    assert (root / "hive.db").exists() and list((root / "logs").rglob("*.log"))
    open_to_others = [
        str(p.relative_to(root))
        for p in [root, *root.rglob("*")]
        if not p.is_symlink() and p.lstat().st_mode & 0o007
    ]
    assert open_to_others == []


def test_a_home_open_to_others_is_closed(tmp_path):
    home = Home(tmp_path / "hive")
    home.root.mkdir(mode=0o755)
    home.root.chmod(0o755)
    assert home.close_to_others() is True
    assert home.root.stat().st_mode & 0o777 == 0o750
    assert home.close_to_others() is False
