"""The local runtime's sandbox (hyperhive/runtime/sandbox.py), with the real bwrap and
real processes: what an agent sees from inside, from its harness's claude and from its
terminal; a deploy rebuilds it from the new policy; no bwrap, no agents."""

import contextlib
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from support.claude import claude_script
from support.daemon import Daemon
from support.hive import commit_config, run_cli
from support.procs import read_until
from support.wait import wait_for

from hyperhive.errors import RuntimeCommandError
from hyperhive.home import Home
from hyperhive.runtime import sandbox
from hyperhive.runtime.local import LocalRuntime
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import deploy

PROBE = Path(__file__).with_name("sandbox_probe.py")


def probe_claude(directory: Path, spec: dict, report: str) -> Path:
    """A `claude` that first runs the probe with `spec` (kept beside it: its directory is
    what the sandbox mounts of it), writing `report` in the state, then is the fake."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "spec.json").write_text(json.dumps(spec))
    probe = f'"{sys.executable}" "{PROBE}" "$(cat "$(dirname "$0")/spec.json")" /state/{report}'
    run = f'[ "$1" = --version ] || {probe}\n'  # a turn's run, not the harness's version check
    # MCP servers only for a tool call (in the script: the sandbox drops FAKE_*)
    return claude_script(directory, before=run, env={"FAKE_CLAUDE_MCP": "lazy"})


def home_entries(hidden_from: list[Path]) -> list[str]:
    """What the daemon's HOME holds besides the way to the interpreter's files."""
    home = Path.home()
    keep = {p.relative_to(home).parts[0] for p in hidden_from if p.is_relative_to(home)}
    return [str(home / n) for n in sorted(os.listdir(home)) if n not in keep][:20]


def shut(report: dict, spec: dict) -> None:
    """Everything the spec lists is out of reach."""
    assert all(v != "ok" for v in report["read"].values()), report["read"]
    assert all(v != "ok" for v in report["write"].values()), report["write"]
    assert set(report["kill"].values()) == {"ESRCH"}  # not in its pid namespace
    procs = report["procs"]
    assert len(procs) < 12 and all(int(p) < 100 for p in procs), procs
    daemon = Path(f"/proc/{spec['kill'][0]}/cmdline").read_bytes().replace(b"\0", b" ")
    assert daemon.decode() not in procs.values()
    assert "1" in procs  # bwrap's pid 1: a pid namespace of its own
    if os.geteuid() == 0:
        assert report["uid"] == sandbox.ROOT_UID  # not root inside
    assert "SECRET_OF_THE_DAEMON" not in report["env"] and "ANTHROPIC_API_KEY" in report["env"]


@pytest.fixture
def hive(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CLAUDE_MCP", "lazy")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-passed-on")
    monkeypatch.setenv("SECRET_OF_THE_DAEMON", "not for agents")
    root = tmp_path / "hive"
    run_cli(root, "init", check=True)
    run_cli(root, "agent", "create", "alice", check=True)
    run_cli(root, "agent", "create", "bob", check=True)
    home = Home(root)
    (home.state_dir("bob") / "notes.md").write_text("bob's secret notes\n")
    daemons = []
    yield home, bindir, daemons
    for d in daemons:
        d.kill()


def test_an_agent_sees_its_state_and_sockets_and_nothing_else(hive, tmp_path):
    home, bindir, daemons = hive
    root = home.root
    outside = tmp_path / "outside.txt"
    outside.write_text("the host's\n")
    spec = {
        "agent": "alice",
        "read": [
            str(root / "operator.json"),
            str(root / "hive.db"),
            str(home.state_dir("bob") / "notes.md"),
            str(home.agent_dir("alice") / "policy.json"),
            str(outside),
            "/etc/shadow",
            *home_entries(sandbox.python_paths()),
        ],
        "write": [
            "/etc/hyperhive-probe",
            "/usr/hyperhive-probe",
            str(Path(sys.prefix) / "hyperhive-probe"),
            str(PROBE.with_name("hyperhive-probe")),  # the source tree: read-only
            "/etc/hyperhive/policy.json",
            "/run/hyperhive/hyperhive-probe",
            str(home.state_dir("bob") / "notes.md"),
            str(home.state_dir("alice") / "host-path"),  # its state, by the host's path
        ],
        "list": [str(root), str(Path.home()), "/state", "/tmp"],
        "kill": [],
    }
    daemons.append(Daemon(root).start())
    spec["kill"] = [daemons[0].proc.pid, os.getpid()]
    probe_claude(bindir, spec, "probe.json")
    state = home.state_dir("alice")
    (state / "from-the-host").write_text("seen at /state\n")
    run_cli(root, "approve", "alice#1", check=True)
    run_cli(root, "send", "operator", "alice", "hello", check=True)
    report = json.loads(wait_for(lambda: _read(state / "probe.json"), what="the probe"))

    shut(report, spec)
    assert report["list"][str(root)] == "ENOENT"  # no hive home at all
    assert {".hyperhive", "from-the-host"} <= set(report["list"]["/state"])
    assert report["cwd"] == "/state" and report["whoami"] == "alice"
    assert report["tmp"] == "ok" and not Path("/tmp/sandbox-probe-probe.json").exists()
    assert report["git"].startswith("HTTP/1.") and " 401 " in report["git"]  # its daemon
    # the claude it named ran: the fake behind the probe wrote its turn into the state
    runs = wait_for(lambda: _read(state / ".fake-claude" / "runs.jsonl"), what="the turn")
    assert json.loads(runs.splitlines()[0])["exit"] == 0
    assert not (home.state_dir("alice") / "host-path").exists()

    # The terminal: the same walls, seen from an interactive shell.
    shell = LocalRuntime(home).shell("alice")
    try:
        cmd = shlex.join([sys.executable, str(PROBE), json.dumps(spec), "/state/term.json"])
        os.write(shell.master, f"{cmd}; echo PROBE=$?\n".encode())
        assert read_until(shell.master, rb"PROBE=(\d+)\r\n").group(1) == b"0"
    finally:
        shell.close()
    term = json.loads((state / "term.json").read_text())
    shut(term, spec)
    assert term["whoami"] == "alice" and term["git"].startswith("HTTP/1.")
    assert term["tmp"] == "ok" and "sandbox-probe-probe.json" not in term["list"]["/tmp"]
    assert term["uid"] == report["uid"]

    # A policy naming another claude: the harness restarts in a sandbox that has it
    # (and not the old one's directory).
    first = int((home.agent_dir("alice") / "harness.pid").read_text())
    other = tmp_path / "opt" / "claude-2"
    spec2 = {**spec, "list": [str(bindir), str(other)]}
    claude = probe_claude(other, spec2, "probe2.json")
    nix = f'{{ ... }}: {{ hyperhive.claude = "{claude}"; hyperhive.allowedBash = [ "ls *" ]; }}\n'
    commit_config(home, "alice", {"agent.nix": nix}, "its own claude")
    run_cli(root, "propose", "alice", check=True)
    run_cli(root, "approve", "alice#2", check=True)
    wait_for(lambda: _pid(home) not in (None, first), what="the restart")
    run_cli(root, "send", "operator", "alice", "again", check=True)
    second = json.loads(wait_for(lambda: _read(state / "probe2.json"), what="the new probe"))
    shut(second, spec2)
    assert second["list"][str(bindir)] == "ENOENT"
    assert second["list"][str(other)] == ["claude", "spec.json"]
    policy = json.loads((home.agent_dir("alice") / "etc" / "policy.json").read_text())
    assert policy["claude"] == str(claude) and policy["allowedBash"] == ["ls *"]


def _read(path: Path) -> str | None:
    try:
        return path.read_text() or None
    except FileNotFoundError:
        return None


def _pid(home: Home) -> int | None:
    try:
        return int((home.agent_dir("alice") / "harness.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None


def test_a_stop_ends_the_harness_gracefully_and_everything_in_its_sandbox(home, runtime):
    (home.applied_dir("manager") / "hooks" / "post-receive").unlink()
    Approvals(home, "manager").approve(1, "operator")
    deploy(home, "manager", 1, runtime)
    runtime.start("manager")
    try:
        outer = int((home.agent_dir("manager") / "harness.pid").read_text())
        log = runtime.harnesses.log_file("manager")
        wait_for(lambda: "no answer to whoami" in log.read_text(), what="the harness")
        inside = _descendants(outer)
        assert len(inside) == 2  # bwrap's pid 1 and the harness
    finally:
        runtime.stop("manager")
    assert "stopping (SIGTERM)" in log.read_text()  # asked, not killed with bwrap
    assert not any(_running(p) for p in [outer, *inside])


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        out += kids
        todo += kids
    return out


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_environment_is_an_allow_list():
    env = sandbox.sandbox_env(
        {
            "PATH": "/usr/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "HYPERHIVE_GIT_URL": "u",
            "ANTHROPIC_API_KEY": "k",
            "CLAUDE_CODE_OAUTH_TOKEN": "t",
            "https_proxy": "p",
            "NO_PROXY": "n",
            "AWS_SECRET_ACCESS_KEY": "no",
            "SSH_AUTH_SOCK": "/tmp/ssh",
            "XDG_RUNTIME_DIR": "/run/user/0",
        },
        {"HYPERHIVE_AGENT": "alice"},
    )
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/state",
        "LANG": "C.UTF-8",
        "HYPERHIVE_GIT_URL": "u",
        "ANTHROPIC_API_KEY": "k",
        "CLAUDE_CODE_OAUTH_TOKEN": "t",
        "https_proxy": "p",
        "NO_PROXY": "n",
        "HYPERHIVE_AGENT": "alice",
    }


def test_a_home_below_a_mounted_directory_stays_hidden(tmp_path):
    """A claude kept in a directory that also holds the hive home: the directory is
    mounted, the home in it covered by an empty tmpfs."""
    shared = tmp_path / "shared"
    (shared / "hive" / "agents").mkdir(parents=True)
    (shared / "hive" / "operator.json").write_text("{}")
    claude = claude_script(shared)
    for d in ("state", "run", "etc"):
        (tmp_path / d).mkdir()
    box = sandbox.Sandbox(
        name="alice",
        state=tmp_path / "state",
        run=tmp_path / "run",
        etc=tmp_path / "etc",
        hidden=shared / "hive",
        programs=sandbox.program_paths(str(claude), None),
    )
    import subprocess

    ls = subprocess.run(
        box.command(["/bin/sh", "-c", f"ls -A {shared} {shared}/hive"]),
        capture_output=True,
        text=True,
        env=sandbox.sandbox_env(os.environ, {}),
        timeout=30,
    )
    assert ls.returncode == 0, ls.stderr
    assert ls.stdout.split() == [f"{shared}:", "claude", "hive", f"{shared}/hive:"]


def test_no_bwrap_no_agents(tmp_path):
    """`hyperhive up` refuses in one line naming the package and the switch, before it
    creates anything; so does a bwrap that cannot make its namespaces; a start without
    bwrap starts nothing."""
    empty = tmp_path / "empty"
    empty.mkdir()
    root = tmp_path / "hive"
    up = run_cli(root, "up", "--port", "0", env={"PATH": str(empty)})
    assert up.returncode == 1
    (line,) = up.stderr.splitlines()
    assert "bwrap is not on PATH" in line and "`bubblewrap`" in line
    assert f"`[local] sandbox = false` in {root}/hyperhive.toml" in line
    assert not root.exists()

    broken = tmp_path / "broken"
    broken.mkdir()
    fake = broken / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    up = run_cli(root, "up", "--port", "0", env={"PATH": f"{broken}:{os.environ['PATH']}"})
    assert up.returncode == 1
    (line,) = up.stderr.splitlines()
    assert "cannot create its namespaces here (bwrap: No permissions" in line
    assert "`[local] sandbox = false`" in line and not root.exists()


def test_a_start_without_bwrap_starts_nothing(home, runtime, monkeypatch, tmp_path):
    (home.applied_dir("manager") / "hooks" / "post-receive").unlink()
    Approvals(home, "manager").approve(1, "operator")
    deploy(home, "manager", 1, runtime)
    nobwrap = tmp_path / "nobwrap"  # a PATH with a shell, without bwrap
    nobwrap.mkdir()
    (nobwrap / "bash").symlink_to(shutil.which("bash"))
    monkeypatch.setenv("PATH", str(nobwrap))
    refused = "manager not started: cannot sandbox.*`bubblewrap`"
    with pytest.raises(RuntimeCommandError, match=refused):
        runtime.start("manager")
    with pytest.raises(RuntimeCommandError, match="no shell for manager: cannot sandbox"):
        runtime.shell("manager")
    assert not (home.agent_dir("manager") / "harness.pid").exists()
    assert runtime.status("manager")["state"] == "stopped"
    # the switch: open, as the operator chose
    (home.root / "hyperhive.toml").write_text("[local]\nsandbox = false\n")
    assert not runtime.sandboxed
    runtime.shell("manager").close()


def test_leftovers_are_the_orphaned_sandboxes_only(tmp_path):
    """kill_leftovers ends a sandbox's pid 1 whose bwrap died before it armed
    --die-with-parent (here: never armed), and spares a live sandbox with the very same
    command line, its bwrap and its pid 1: a harness started anew by another daemon."""
    import signal
    import subprocess

    bwrap = shutil.which("bwrap")
    argv = [bwrap, "--unshare-user", "--unshare-pid", "--new-session", "--dev-bind", "/", "/"]
    argv += ["sleep", "60"]
    cmdline = b"".join(os.fsencode(a) + b"\0" for a in argv)
    old, new = (subprocess.Popen(argv, start_new_session=True) for _ in range(2))
    firsts = []
    try:
        firsts += [sandbox.stop_group(p.pid) for p in (old, new)]  # each one's pid 1
        assert all(f not in (old.pid, new.pid) for f in firsts)
        orphan, live = firsts
        old.kill()
        old.wait()
        wait_for(lambda: sandbox._parent(orphan) != old.pid, what="the orphan's new parent")
        sandbox.kill_leftovers(cmdline)
        wait_for(lambda: not _running(orphan), what="the orphan's end")
        assert new.poll() is None and _running(live)
    finally:
        for pid in (*firsts, old.pid, new.pid):  # a namespace ends with its pid 1
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        old.wait(), new.wait()
