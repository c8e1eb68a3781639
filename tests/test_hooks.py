"""The hook contract: after every tag the engine writes, the applied repo's post-receive
runs with git's stdin (`<old> <new> <ref>` lines); a failing hook is recorded, never
rolls the tag back; the shipped hook turns approved/<id> into a deploy."""

import dataclasses
import json
from pathlib import Path

import pytest
from support.hive import commit_config, git, run_cli
from support.inprocess import run_main

from hyperhive.errors import AlreadyDecided, ShuttingDown
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime
from hyperhive.workflow import hooks
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import deploy
from hyperhive.workflow.states import State

NAME = "manager"
ZERO = "0" * 40


def hook_path(home: Home, name: str = NAME) -> Path:
    return home.applied_dir(name) / "hooks" / "post-receive"


def install_hook(home: Home, script: str, name: str = NAME) -> None:
    path = hook_path(home, name)
    path.write_text(script)
    path.chmod(0o755)


@pytest.fixture
def calls(home: Home, tmp_path: Path) -> Path:
    """A post-receive that records each run (stdin, argv, environment, cwd) into its own
    numbered directory."""
    out = tmp_path / "calls"
    out.mkdir()
    install_hook(
        home,
        f"""#!/bin/sh
dir='{out}'/$(ls '{out}' | wc -l)
mkdir "$dir"
cat > "$dir/stdin"
echo "$#" > "$dir/argc"
for a in "$@"; do echo "$a"; done > "$dir/argv"
pwd -P > "$dir/cwd"
echo "$GIT_DIR" > "$dir/git_dir"
echo "$HYPERHIVE_AGENT" > "$dir/agent"
echo "$HYPERHIVE_HOME" > "$dir/home"
""",
    )
    return out


def recorded(calls: Path) -> list[dict[str, str]]:
    runs = sorted(calls.iterdir(), key=lambda p: int(p.name))
    return [{f.name: f.read_text() for f in run.iterdir()} for run in runs]


def tag_sha(home: Home, ref: str, name: str = NAME) -> str:
    return git(home.applied_dir(name), "rev-parse", ref).strip()


def test_one_stdin_line_per_tag_the_engine_writes(home: Home, runtime: LocalRuntime, calls: Path):
    approvals = Approvals(home, NAME)
    commit_config(home, NAME, {"notes.md": "n\n"}, "notes")
    approvals.propose("HEAD", "manager")
    approvals.approve(2, "alice")
    assert deploy(home, NAME, 2, runtime).state == "deployed"

    runs = recorded(calls)
    refs = [f"refs/tags/{s}/2" for s in ("proposal", "approved", "building", "deployed")]
    assert [r["stdin"] for r in runs] == [f"{ZERO} {tag_sha(home, ref)} {ref}\n" for ref in refs]
    applied = str(home.applied_dir(NAME).resolve())
    for r in runs:
        assert r["argc"] == "0\n" and r["argv"] == ""  # post-receive takes no arguments
        assert r["cwd"].strip() == applied  # hooks run inside the bare repo, as in git
        assert r["git_dir"].strip() == str(home.applied_dir(NAME))
        assert r["agent"] == f"{NAME}\n"
        assert r["home"].strip() == str(home.root)
    # each <new> is the annotated tag object itself, not the commit it points at
    for ref in refs:
        assert git(home.applied_dir(NAME), "cat-file", "-t", tag_sha(home, ref)).strip() == "tag"


def test_denials_and_failed_builds_run_the_hook_too(home: Home, runtime: LocalRuntime, calls: Path):
    approvals = Approvals(home, NAME)
    approvals.deny(1, "alice", "no")
    commit_config(home, NAME, {"broken.nix": "{ this is not nix"}, "broken")
    approvals.propose("HEAD", "manager")
    approvals.approve(2, "alice")
    assert deploy(home, NAME, 2, runtime).state == "failed"
    refs = [
        "refs/tags/denied/1",
        "refs/tags/proposal/2",
        "refs/tags/approved/2",
        "refs/tags/building/2",
        "refs/tags/failed/2",
    ]
    assert [r["stdin"] for r in recorded(calls)] == [
        f"{ZERO} {tag_sha(home, ref)} {ref}\n" for ref in refs
    ]


def test_a_refused_transition_runs_no_hook(home: Home, calls: Path):
    Approvals(home, NAME).approve(1, "alice")
    with pytest.raises(AlreadyDecided, match="already approved"):
        Approvals(home, NAME).deny(1, "bob", "no")
    assert len(recorded(calls)) == 1


def test_a_hook_that_is_not_executable_is_not_run(home: Home, tmp_path: Path):
    marker = tmp_path / "ran"
    install_hook(home, f"#!/bin/sh\ntouch '{marker}'\n")
    hook_path(home).chmod(0o644)
    before = hooks.runs(home, NAME)
    Approvals(home, NAME).approve(1, "alice")
    assert not marker.exists()
    assert git(home.applied_dir(NAME), "for-each-ref", "refs/tags/approved/")
    assert hooks.runs(home, NAME) == before


FAILING = """#!/bin/sh
cat > /dev/null
echo "checking things"
echo "it went wrong" >&2
exit 3
"""


def test_a_failing_hook_keeps_the_tag_and_is_recorded(home: Home):
    install_hook(home, FAILING)
    before = len(hooks.runs(home, NAME))
    approval = Approvals(home, NAME).approve(1, "alice")
    assert approval.state == "approved"
    # the tag stays
    approved = tag_sha(home, "refs/tags/approved/1")
    assert git(home.applied_dir(NAME), "cat-file", "-t", approved).strip() == "tag"
    (run,) = hooks.runs(home, NAME)[before:]
    assert run.hook == "post-receive"
    assert run.exit == 3
    assert run.refs == ["refs/tags/approved/1"]
    assert run.tail == ["checking things", "it went wrong"]  # stdout and stderr, in order
    # the record is a plain JSON line in the agent's log directory
    lines = hooks.history_file(home, NAME).read_text().splitlines()
    assert json.loads(lines[-1])["exit"] == 3


def test_a_failing_hook_shows_in_the_history(home: Home):
    install_hook(home, FAILING)
    Approvals(home, NAME).approve(1, "alice")
    commit_config(home, NAME, {"x.md": "x\n"}, "x")
    Approvals(home, NAME).propose("HEAD", "manager")  # its hook run fails too

    proc = run_main(home.root, "history", NAME, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    first, second = data["approvals"]
    # every run of the approval's hooks is listed: the shipped one ran fine at init
    assert [(h["exit"], h["refs"]) for h in first["hooks"]] == [
        (0, ["refs/tags/proposal/1"]),
        (3, ["refs/tags/approved/1"]),
    ]
    assert first["hooks"][1]["tail"] == ["checking things", "it went wrong"]
    assert [(h["exit"], h["refs"]) for h in second["hooks"]] == [(3, ["refs/tags/proposal/2"])]

    text = run_main(home.root, "history", NAME, check=True).stdout
    block = text.split(f"{NAME}#2")[0]  # the lines of manager#1
    assert "post-receive exited 3: it went wrong" in block
    assert text.count("post-receive exited 3") == 2


def test_the_cli_warns_when_the_hook_fails(home: Home):
    install_hook(home, FAILING)
    proc = run_main(home.root, "approve", "manager#1")
    assert proc.returncode == 0  # the approval happened; the tag is not rolled back
    assert proc.stdout == "approved manager#1\n"
    assert "post-receive exited 3" in proc.stderr
    assert tag_sha(home, "refs/tags/approved/1")


def test_a_hook_that_cannot_start_is_recorded(home: Home):
    install_hook(home, "#!/nonexistent/interpreter\n")
    before = len(hooks.runs(home, NAME))
    Approvals(home, NAME).approve(1, "alice")
    assert tag_sha(home, "refs/tags/approved/1")
    (run,) = hooks.runs(home, NAME)[before:]
    assert run.exit != 0
    assert run.refs == ["refs/tags/approved/1"]
    assert any("cannot run" in line for line in run.tail)


# -- the shipped hook ------------------------------------------------------------------


def test_the_shipped_hook_is_installed_and_ignores_other_tags(home: Home):
    shipped = Path(hooks.__file__).resolve().parents[2] / "hooks" / "post-receive"
    assert hook_path(home).read_bytes() == shipped.read_bytes()
    # init proposed manager#1 through it: a proposal starts no build
    assert git(home.applied_dir(NAME), "for-each-ref", "--format=%(refname)").split() == [
        "refs/hyperhive/last-id",
        "refs/tags/proposal/1",
    ]
    (run,) = hooks.runs(home, NAME)
    assert (run.exit, run.refs) == (0, ["refs/tags/proposal/1"])


def test_the_shipped_hook_turns_an_approval_into_a_deploy(home: Home):
    applied = home.applied_dir(NAME)
    commit = Approvals(home, NAME).get(1).commit
    meta_before = git(home.meta_dir, "log", "--format=%H").split()

    proc = run_cli(home.root, "approve", "manager#1", env={"HYPERHIVE_ACTOR": "alice"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "approved manager#1\n"

    tags = git(applied, "for-each-ref", "--format=%(refname) %(taggername)", "refs/tags/")
    assert sorted(tags.splitlines()) == [
        "refs/tags/approved/1 alice",
        "refs/tags/building/1 hyperhive",
        "refs/tags/checked/1 hyperhive",  # approve checked it first: no daemon runs
        "refs/tags/deployed/1 hyperhive",
        "refs/tags/proposal/1 operator",
    ]
    assert git(applied, "rev-parse", "refs/heads/main").strip() == commit
    meta_after = git(home.meta_dir, "log", "--format=%H").split()
    assert meta_after[1:] == meta_before
    assert git(home.meta_dir, "log", "-1", "--format=%s").strip() == (
        f"deploy manager#1 {commit[:12]}"
    )
    pins = json.loads(git(home.meta_dir, "show", "main:hyperhive.json"))
    pin = pins["agents"][NAME]
    assert (pin["rev"], pin["approval"]) == (commit, 1)
    assert f"rev={commit}" in git(home.meta_dir, "show", "main:flake.nix")
    assert (home.deployed_dir(NAME) / "agent.nix").is_file()

    runs = hooks.runs(home, NAME)
    approved_runs = [r for r in runs if r.refs == ["refs/tags/approved/1"]]
    assert [r.exit for r in approved_runs] == [0]
    assert any("deployed manager#1" in line for line in approved_runs[0].tail)


def test_the_shipped_hook_reports_a_failed_deploy(home: Home):
    commit_config(home, NAME, {"agent.nix": "{ this is not nix"}, "broken")
    Approvals(home, NAME).propose("HEAD", "manager")
    proc = run_main(home.root, "approve", "manager#2", "--force")  # its check would fail too
    assert proc.returncode == 0
    assert "post-receive exited 1" in proc.stderr
    applied = home.applied_dir(NAME)
    assert git(applied, "for-each-ref", "--format=%(refname)", "refs/tags/failed/").split() == [
        "refs/tags/failed/2"
    ]
    assert "refs/heads/main" not in git(applied, "for-each-ref", "--format=%(refname)")
    history = json.loads(run_main(home.root, "history", NAME, "--json", check=True).stdout)
    hook_runs = history["approvals"][1]["hooks"]
    assert {(h["exit"], h["refs"][0]) for h in hook_runs} == {
        (0, "refs/tags/proposal/2"),
        (0, "refs/tags/building/2"),
        (0, "refs/tags/failed/2"),
        (1, "refs/tags/approved/2"),
    }
    (hook,) = [h for h in hook_runs if h["exit"]]
    assert any("failed" in line for line in hook["tail"])


# -- the shipped hook's effect, had without its process --------------------------------------


def no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, fail the test if a process is started."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a hook process was started: {args[0]}")

    monkeypatch.setattr(hooks.subprocess, "Popen", refuse)


def test_tags_that_are_not_approvals_start_no_hook_process(home: Home, monkeypatch):
    commit_config(home, NAME, {"agent.nix": "{ }\n"}, "another")
    no_process(monkeypatch)
    approvals = Approvals(home, NAME)
    approvals.propose("HEAD", "manager")
    approvals.deny(2, "alice", "not now")
    runs = hooks.runs(home, NAME)
    assert [(r.refs, r.exit, r.tail) for r in runs[-2:]] == [
        (["refs/tags/proposal/2"], 0, []),
        (["refs/tags/denied/2"], 0, []),
    ]


def test_in_the_daemon_an_approval_is_queued_without_a_process(home: Home, monkeypatch):
    no_process(monkeypatch)
    queued = []

    def submit(name: str, approval_id: int) -> int:
        queued.append((name, approval_id))
        return 3

    daemon_home = dataclasses.replace(home, deploys=submit)
    Approvals(daemon_home, NAME).approve(1, "alice")
    assert queued == [(NAME, 1)]
    run = hooks.runs(home, NAME)[-1]
    assert (run.refs, run.exit, run.tail) == (
        ["refs/tags/approved/1"],
        0,
        ["queued manager#1 on the daemon (3 ahead)"],
    )


def test_a_refused_queueing_is_the_hook_failing(home: Home, monkeypatch):
    no_process(monkeypatch)

    def submit(name: str, approval_id: int) -> int:
        raise ShuttingDown("the daemon is stopping; the build resumes at its next start")

    Approvals(dataclasses.replace(home, deploys=submit), NAME).approve(1, "alice")
    run = hooks.runs(home, NAME)[-1]
    assert (run.exit, run.tail) == (
        1,
        ["hyperhive: the daemon is stopping; the build resumes at its next start"],
    )
    assert Approvals(home, NAME).get(1).state == State.APPROVED  # the tag stays


def test_a_hook_the_operator_changed_always_runs(home: Home):
    shipped = hook_path(home).read_text()
    install_hook(home, shipped.replace("set -u\n", "set -u\necho custom hook ran\n"))
    queued = []
    daemon_home = dataclasses.replace(home, deploys=lambda *a: queued.append(a) or 0)
    approvals = Approvals(daemon_home, NAME)
    commit_config(home, NAME, {"agent.nix": "{ }\n"}, "another")
    approvals.propose("HEAD", "manager")
    assert hooks.runs(home, NAME)[-1].tail == ["custom hook ran"]
    assert queued == []
