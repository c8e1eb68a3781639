"""The nixos-container runtime against a fake `nixos-container` on PATH that behaves like
the real one: builds print lines with pauses, a broken config fails the build, every
call's argv is recorded."""

import dataclasses
import json
import os
import select
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from support.hive import commit_config, fake_program, fresh_commit, git
from support.nixos_fake import (  # noqa: F401 (fake: a fixture)
    BASE,
    CONTAINER,
    NAME,
    SEP,
    Fake,
    Recorder,
    fake,
    make_runtime,
)

from hyperhive.errors import RuntimeCommandError
from hyperhive.home import Home
from hyperhive.policy import deployed_policy
from hyperhive.runtime.base import BuildError
from hyperhive.runtime.kinds import runtime_class
from hyperhive.runtime.nixos_container import (
    NixosContainerRuntime,
    container_name,
    parse_status,
)
from hyperhive.wire.events import EventBus
from hyperhive.workflow import meta
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import deploy


@pytest.fixture
def quiet(home: Home) -> Home:
    """The hive without its post-receive: approving does not start a deploy by itself."""
    (home.applied_dir(NAME) / "hooks" / "post-receive").unlink()
    return home


def approved(home: Home) -> tuple[int, str]:
    approvals = Approvals(home, NAME)
    approval = approvals.propose(fresh_commit(home, NAME), "manager")  # something new
    approvals.approve(approval.id, "operator")
    return approval.id, approval.commit


def wait_for(check, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return result


def flake_url(home: Home) -> str:
    sha = git(home.meta_dir, "rev-parse", f"refs/hyperhive/build/{NAME}").strip()
    return f"git+file://{home.meta_dir.resolve()}?ref=refs/hyperhive/build/{NAME}&rev={sha}"


# -- names, status parsing, the registry ----------------------------------------------------


def test_container_names_and_status_words():
    assert container_name("manager") == "h-manager"
    with pytest.raises(Exception, match="invalid|name"):
        container_name("../etc")
    assert parse_status("up\n") == "up"
    assert parse_status("down\n") == "down"
    assert parse_status("gone\n") is None
    assert parse_status("") is None
    assert runtime_class("nixos-container") is NixosContainerRuntime


def test_status_of_a_missing_up_and_down_container(home: Home, fake: Fake):
    rt = make_runtime(home, fake, Recorder())
    assert rt.status(NAME) == {"state": "not deployed", "revision": None}
    (fake.root / "conf").mkdir()
    (fake.root / "conf" / f"{CONTAINER}.conf").write_text("")
    assert rt.status(NAME) == {"state": "down", "revision": None}
    rt.start(NAME)
    assert rt.status(NAME)["state"] == "up"
    rt.stop(NAME)
    assert rt.status(NAME)["state"] == "down"
    assert fake.calls() == [
        ["status", CONTAINER],
        ["status", CONTAINER],
        ["start", CONTAINER],
        ["status", CONTAINER],
        ["stop", CONTAINER],
        ["status", CONTAINER],
    ]


def test_status_when_nixos_container_itself_fails(home: Home, tmp_path: Path, monkeypatch):
    fake_program(tmp_path / "bin2", "nixos-container", "echo 'Permission denied' >&2; exit 13\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin2'}:{os.environ['PATH']}")
    status = NixosContainerRuntime(home).status(NAME)
    assert status["state"] == "unknown"
    assert "exited 13: Permission denied" in status["error"]


def test_a_failing_start_says_which_command(home: Home, fake: Fake):
    rt = make_runtime(home, fake, Recorder())
    with pytest.raises(RuntimeCommandError, match=r"`nixos-container start h-manager` exited 1"):
        rt.start(NAME)


# -- deploys ----------------------------------------------------------------------------


def test_first_deploy_creates_configures_starts_and_owns_state(quiet: Home, fake: Fake):
    home = quiet
    rec = Recorder()
    approval_id, commit = approved(home)
    result = deploy(home, NAME, approval_id, make_runtime(home, fake, rec))
    assert result.state == "deployed"

    url = flake_url(home)
    target = f"{url}#{NAME}"
    assert fake.calls() == [
        ["status", CONTAINER],
        ["create", CONTAINER, "--auto-start", "--flake", target],
        ["status", CONTAINER],
        ["start", CONTAINER],
    ]
    # the candidate meta commit pins exactly the revision being built; main then follows
    candidate = git(home.meta_dir, "show", f"refs/hyperhive/build/{NAME}:hyperhive.json")
    assert json.loads(candidate)["agents"][NAME]["rev"] == commit
    flake = git(home.meta_dir, "show", f"refs/hyperhive/build/{NAME}:flake.nix")
    assert f"rev={commit}" in flake
    assert meta.pins(home)[NAME]["rev"] == commit
    # policy evaluated from the same flake, stored for the broker and in the meta pin
    assert rec.evaluated == [(url, NAME)]
    assert deployed_policy(home, NAME) == {"allowedRecipients": ["operator"]}
    assert meta.pins(home)[NAME]["policy"] == {"allowedRecipients": ["operator"]}
    # user namespace and the state bind mount in the container's conf
    conf = fake.conf()
    assert 'PRIVATE_USERS="pick"' in conf
    state = home.state_dir(NAME).resolve()
    sockets = (home.run_dir / "agents" / NAME).resolve()
    flags = (
        "--private-users=pick --private-users-ownership=chown "
        f"--bind={state}:/state --bind={sockets}:/run/hyperhive"
    )
    assert f'EXTRA_NSPAWN_FLAGS="{flags}"' in conf
    assert sockets.is_dir()  # nspawn refuses to bind a missing source
    assert "HOST_ADDRESS=10.233.1.1" in conf  # nixos-container's own settings are kept
    # the state directory goes to the container's agent user
    assert rec.bases == [CONTAINER]
    assert [c.path for c in rec.chowned[0]] == [home.state_dir(NAME)]
    assert {(c.uid, c.gid) for c in rec.chowned[0]} == {(BASE + 1000, BASE + 100)}
    rt = make_runtime(home, fake, rec)
    assert rt.status(NAME) == {"state": "up", "revision": commit}
    log = home.build_log(NAME, approval_id).read_text()
    assert "built /nix/store/aaaa-nixos-system-h-manager" in log
    assert "host IP is 10.233.1.1, container IP is 10.233.1.2" in log  # stderr too


def test_second_deploy_updates_and_does_not_restart_a_running_container(quiet: Home, fake: Fake):
    home = quiet
    rec = Recorder()
    rt = make_runtime(home, fake, rec)
    first, _ = approved(home)
    assert deploy(home, NAME, first, rt).state == "deployed"
    (home.config_dir(NAME) / "notes.md").write_text("more\n")
    git(home.config_dir(NAME), "add", "-A")
    git(home.config_dir(NAME), "-c", "user.name=m", "-c", "user.email=m@h", "commit", "-qm", "x")
    second, commit = approved(home)
    fake.root.joinpath("argv").unlink()

    assert deploy(home, NAME, second, rt).state == "deployed"
    target = f"{flake_url(home)}#{NAME}"
    assert fake.calls() == [
        ["status", CONTAINER],
        ["update", CONTAINER, "--flake", target],
        ["status", CONTAINER],
    ]
    conf = fake.conf()
    assert conf.count("PRIVATE_USERS=") == 1 and conf.count("EXTRA_NSPAWN_FLAGS=") == 1
    assert "reloading container..." in home.build_log(NAME, second).read_text()
    assert rt.status(NAME) == {"state": "up", "revision": commit}
    assert len(rec.chowned) == 2  # ownership applied at every update


def test_a_stopped_container_is_started_by_the_update(quiet: Home, fake: Fake):
    home = quiet
    rt = make_runtime(home, fake, Recorder())
    first, _ = approved(home)
    assert deploy(home, NAME, first, rt).state == "deployed"
    rt.stop(NAME)
    second, _ = approved(home)
    assert deploy(home, NAME, second, rt).state == "deployed"
    assert fake.actions()[-2:] == ["update", "start"]


def test_output_is_streamed_before_the_build_exits(quiet: Home, fake: Fake):
    home = dataclasses.replace(quiet, bus=EventBus())  # as in the daemon (Hive)
    approval_id, _ = approved(home)
    fake.flag("gate")
    result: list = []
    thread = threading.Thread(
        target=lambda: result.append(
            deploy(home, NAME, approval_id, make_runtime(home, fake, Recorder()))
        )
    )
    first = f"building the system configuration of {CONTAINER}..."
    topic = f"log:{NAME}:{approval_id}"
    with home.bus.subscribe(topic) as sub:
        try:
            thread.start()
            log_path = home.build_log(NAME, approval_id)
            wait_for(lambda: log_path.exists() and first in log_path.read_text(), "the first line")
            # the fake still waits for its release: the line came while the build runs
            assert thread.is_alive() and not fake.root.joinpath("release").exists()
            while (event := sub.get(timeout=10)) != (topic, first):
                assert event is not None, "the first line was not published"
            assert "built /nix/store" not in log_path.read_text()
            fake.flag("release")
            thread.join(30)
        finally:
            fake.flag("release")
            thread.join(30)
    assert result[0].state == "deployed"
    assert f"built /nix/store/aaaa-nixos-system-{CONTAINER}" in log_path.read_text()


def test_a_broken_config_ends_as_failed_with_the_tail(quiet: Home, fake: Fake):
    home = quiet
    rec = Recorder()
    rt = make_runtime(home, fake, rec)
    first, good = approved(home)
    assert deploy(home, NAME, first, rt).state == "deployed"
    meta_log = git(home.meta_dir, "log", "--format=%H", "main")
    fake.flag("broken")
    rec.policy = {"allowedRecipients": []}
    failing, _ = approved(home)

    assert deploy(home, NAME, failing, rt).state == "failed"
    applied = home.applied_dir(NAME)
    tag = git(applied, "cat-file", "-p", f"failed/{failing}")
    target = f"{flake_url(home)}#{NAME}"
    assert f"Reason: `nixos-container update {CONTAINER} --flake {target}` exited 1" in tag
    assert "| error: attribute 'nonexistent' missing" in tag
    assert "| nixos-container: failed to build container from flake" in tag
    assert f"| $ nixos-container update {CONTAINER} --flake {target}" in tag
    # nothing moved: main, meta, the deployed revision and policy are the previous ones
    assert git(applied, "rev-parse", "main").strip() == good
    assert git(home.meta_dir, "log", "--format=%H", "main") == meta_log
    assert rt.status(NAME) == {"state": "up", "revision": good}
    assert deployed_policy(home, NAME) == {"allowedRecipients": ["operator"]}
    assert not (home.agent_dir(NAME) / "policy.json.new").exists()


def test_a_failing_first_create_leaves_no_container(quiet: Home, fake: Fake):
    home = quiet
    fake.flag("broken")
    approval_id, _ = approved(home)
    rt = make_runtime(home, fake, Recorder())
    assert deploy(home, NAME, approval_id, rt).state == "failed"
    tag = git(home.applied_dir(NAME), "cat-file", "-p", f"failed/{approval_id}")
    assert f"Reason: `nixos-container create {CONTAINER} --auto-start --flake " in tag
    assert fake.actions() == ["create"]
    assert rt.status(NAME) == {"state": "not deployed", "revision": None}
    assert deployed_policy(home, NAME) == {"allowedRecipients": None}


def test_a_container_that_does_not_start_fails_the_build(quiet: Home, fake: Fake):
    home = quiet
    fake.flag("nostart")
    approval_id, _ = approved(home)
    assert deploy(home, NAME, approval_id, make_runtime(home, fake, Recorder())).state == "failed"
    tag = git(home.applied_dir(NAME), "cat-file", "-p", f"failed/{approval_id}")
    assert f"Reason: `nixos-container start {CONTAINER}` exited 1" in tag
    assert f"| Job for container@{CONTAINER}.service failed" in tag


def test_a_policy_that_does_not_check_fails_before_building(quiet: Home, fake: Fake):
    home = quiet
    approval_id, _ = approved(home)
    rec = Recorder(policy={"allowedRecipients": "everyone"})
    assert deploy(home, NAME, approval_id, make_runtime(home, fake, rec)).state == "failed"
    tag = git(home.applied_dir(NAME), "cat-file", "-p", f"failed/{approval_id}")
    assert "Reason: hyperhive.allowedRecipients must be null or a list of strings" in tag
    assert fake.actions() == []


NAMES = ["a", "manager", "ninechars", "tencharsxx", "researcher", "a-very-long-agent-name-of-31-ch"]


def test_long_names_get_short_container_names():
    assert container_name("ninechars") == "h-ninechars"
    long = container_name("researcher")
    assert long.startswith("h_rese") and len(long) == 11
    assert len({container_name(n) for n in NAMES}) == len(NAMES)
    assert all(len(container_name(n)) <= 11 for n in NAMES)


@pytest.mark.skipif(shutil.which("nix-instantiate") is None, reason="needs nix-instantiate")
def test_container_names_and_nspawn_flags_agree_with_nix_lib(home: Home):
    lib = Path(__file__).resolve().parent.parent / "nix" / "lib.nix"
    rt = NixosContainerRuntime(home)
    names = " ".join(f'"{n}"' for n in NAMES)
    expr = (
        f"let lib = import {lib}; in {{ names = map lib.containerName [ {names} ]; "
        f'flags = lib.nspawnFlags {{ home = "{home.root.resolve()}"; name = "{NAME}"; }}; }}'
    )
    out = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "--expr", expr],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    nix = json.loads(out)
    assert nix["names"] == [container_name(n) for n in NAMES]
    assert nix["flags"] == rt.nspawn_flags(NAME)


def test_a_destroyed_agent_is_not_deployed(home: Home, fake: Fake):
    home.destroyed_file(NAME).touch()
    rt = make_runtime(home, fake, Recorder())
    with pytest.raises(BuildError, match="destroyed"):
        rt.update(NAME, "0" * 40, lambda line: None)
    assert rt.status(NAME) == {"state": "destroyed", "revision": None}


def test_destroy_removes_the_container_and_keeps_the_state(quiet: Home, fake: Fake):
    home = quiet
    rt = make_runtime(home, fake, Recorder())
    approval_id, _ = approved(home)
    assert deploy(home, NAME, approval_id, rt).state == "deployed"
    (home.state_dir(NAME) / "notes.md").write_text("keep me\n")
    rt.destroy(NAME)
    rt.destroy(NAME)  # idempotent
    assert fake.actions()[-2:] == ["destroy", "destroy"]
    assert fake.calls()[-1] == ["destroy", CONTAINER]
    assert rt.status(NAME) == {"state": "not deployed", "revision": None}
    assert deployed_policy(home, NAME) == {"allowedRecipients": None}
    assert (home.state_dir(NAME) / "notes.md").read_text() == "keep me\n"


# -- policy evaluation with nix --------------------------------------------------------------


FAKE_NIX = r"""
for a in "$@"; do printf '%s\037' "$a"; done >> "$FAKE_NIX_ARGV"; echo >> "$FAKE_NIX_ARGV"
echo "evaluating derivation..." >&2
if [ -n "$FAKE_NIX_FAIL" ]; then
    echo "error: The option \`hyperhive.bogus' does not exist." >&2
    echo "       at /nix/store/xxx/agent.nix:2:3:" >&2
    exit 1
fi
echo '{"allowedBash":null,"allowedRecipients":["operator"],"extraMcpServers":{},"model":null}'
"""


def test_nix_eval_of_the_meta_flake(home: Home, tmp_path: Path, monkeypatch):
    fake_program(tmp_path / "nixbin", "nix", FAKE_NIX)
    monkeypatch.setenv("FAKE_NIX_ARGV", str(tmp_path / "nix-argv"))
    rt = NixosContainerRuntime(home, nix=str(tmp_path / "nixbin" / "nix"))
    lines: list[str] = []
    raw = rt.nix_eval("git+file:///h/meta.git?ref=x&rev=y", NAME, lines.append)
    assert raw == {
        "allowedBash": None,
        "allowedRecipients": ["operator"],
        "extraMcpServers": {},
        "model": None,
    }
    argv = (tmp_path / "nix-argv").read_text().split(SEP)[:-1]
    url = f"git+file:///h/meta.git?ref=x&rev=y#hyperhive.policies.{NAME}"
    assert argv[-3:] == ["eval", "--json", url]
    assert "evaluating derivation..." in lines  # stderr streamed, stdout parsed

    monkeypatch.setenv("FAKE_NIX_FAIL", "1")
    with pytest.raises(BuildError) as e:
        rt.nix_eval("git+file:///h/meta.git", NAME, lines.append)
    assert "cannot evaluate the hyperhive.* options: The option `hyperhive.bogus'" in str(e.value)
    assert "(at /nix/store/xxx/agent.nix:2:3)" in str(e.value)


def test_the_leader_uid_map_gives_the_base(home: Home, tmp_path: Path, monkeypatch):
    fake_program(tmp_path / "mbin", "machinectl", 'echo "$*" > "$FAKE_MC"; echo Leader=4242\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'mbin'}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MC", str(tmp_path / "mc-argv"))
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "uid_map").write_text("         0     655360      65536\n")
    rt = NixosContainerRuntime(home, proc=proc)
    assert rt.leader_uid_base(CONTAINER) == 655360
    assert (tmp_path / "mc-argv").read_text().split() == ["show", CONTAINER, "-p", "Leader"]
    (proc / "4242" / "uid_map").write_text("         0          0 4294967295\n")
    assert rt.leader_uid_base(CONTAINER) == 0
    (proc / "4242" / "uid_map").unlink()
    with pytest.raises(BuildError, match="cannot read the uid mapping of h-manager"):
        rt.leader_uid_base(CONTAINER)


# -- the terminal --------------------------------------------------------------------------


def read_until(fd: int, text: bytes, timeout: float = 10.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while text not in out:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {text!r} in {out!r}")
        if select.select([fd], [], [], left)[0]:
            try:
                out += os.read(fd, 4096)
            except OSError:  # EIO: the child closed the PTY
                break
    return out


# A stand-in for util-linux nsenter that behaves as the real one towards a container:
# options as nsenter(1) spells them; --target must be a running process (here one of
# $FAKE_PROC); --setuid/--setgid are ids in the entered user namespace, so on the host they
# are <the leader's uid_map base> + id with --user and the bare ids without (host uid 0 is
# host root); --root takes the leader's root (here $FAKE_ROOT, entered with bwrap, the
# ids set inside a new user namespace). The host ids it runs as go to $FAKE_NC/host-ids.
FAKE_NSENTER = r"""
target= user= root= uid=0 gid=0
while [ $# -gt 0 ]; do
    case "$1" in
    -t|--target) target=$2; shift 2 ;;
    --target=*) target=${1#*=}; shift ;;
    -U|--user) user=1; shift ;;
    -m|--mount|-u|--uts|-i|--ipc|-n|--net|-p|--pid|-C|--cgroup|-w|--wd) shift ;;
    -r|--root) root=1; shift ;;
    -S|--setuid) uid=$2; shift 2 ;;
    --setuid=*) uid=${1#*=}; shift ;;
    -G|--setgid) gid=$2; shift 2 ;;
    --setgid=*) gid=${1#*=}; shift ;;
    --) shift; break ;;
    *) echo "nsenter: unrecognized option '$1'" >&2; exit 1 ;;
    esac
done
[ -n "$target" ] || { echo "nsenter: no target PID specified for --target" >&2; exit 1; }
[ -r "$FAKE_PROC/$target/uid_map" ] || {
    echo "nsenter: cannot open /proc/$target/ns/user: No such file or directory" >&2; exit 1; }
base=0
[ -n "$user" ] && base=$(awk '$1 == 0 { print $2 }' "$FAKE_PROC/$target/uid_map")
echo "$((base + uid)) $((base + gid))" > "$FAKE_NC/host-ids"
[ -n "$root" ] || exec "$@"
exec bwrap --bind "$FAKE_ROOT" / --ro-bind /usr /usr --proc /proc --dev /dev \
    --unshare-user --uid "$uid" --gid "$gid" -- "$@"
"""


@pytest.fixture
def container_root(tmp_path: Path, fake: Fake, monkeypatch) -> Path:
    """A running h-manager for the fake nsenter: leader 4242 with its uid_map, a root
    with the container's paths (/run/current-system/sw/bin, /state, /home/agent)."""
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "uid_map").write_text(f"         0     {BASE}      65536\n")
    root = tmp_path / "container-root"
    sw = root / "run" / "current-system" / "sw" / "bin"
    sw.mkdir(parents=True)
    for tool in ("env", "bash", "id"):
        (sw / tool).symlink_to(shutil.which(tool))
    for d in ("state", "home/agent", "usr"):
        (root / d).mkdir(parents=True)
    for link in ("bin", "lib", "lib64", "sbin"):
        if Path("/" + link).is_symlink():  # merged /usr: /bin -> usr/bin
            (root / link).symlink_to(os.readlink("/" + link))
    fake_program(tmp_path / "bin", "nsenter", FAKE_NSENTER)
    fake_program(tmp_path / "bin", "machinectl", "echo Leader=4242\n")
    monkeypatch.setenv("FAKE_PROC", str(proc))
    monkeypatch.setenv("FAKE_ROOT", str(root))
    return root


SHELL_ARGV = [
    "nsenter",
    "--target=4242",
    "--user",
    "--mount",
    "--uts",
    "--ipc",
    "--net",
    "--pid",
    "--root",
    "--wd",
    "--setuid=1000",
    "--setgid=100",
    "--",
    "/run/current-system/sw/bin/env",
    "-i",
    "-C",
    "/state",
    "HOME=/home/agent",
    "USER=agent",
    "LOGNAME=agent",
    "SHELL=/run/current-system/sw/bin/bash",
    "PATH=/run/wrappers/bin:/run/current-system/sw/bin",
    "TERM=xterm-256color",
    "COLORTERM=truecolor",
    "LANG=C.UTF-8",
    f"HYPERHIVE_AGENT={NAME}",
    "/run/current-system/sw/bin/bash",
    "--login",
]


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="the fake nsenter enters with bwrap")
def test_the_shell_is_the_agent_user_inside_the_user_namespace(
    home: Home, fake: Fake, container_root: Path
):
    shell = make_runtime(home, fake, Recorder()).shell(NAME)
    try:
        assert shell.argv == SHELL_ARGV
        shell.resize(40, 120)
        os.write(shell.master, b'echo "ids=$(id -u):$(id -g) $(pwd) $HOME $HYPERHIVE_AGENT"\n')
        out = read_until(shell.master, b" manager\r\n")
        assert b"ids=1000:100 /state /home/agent manager" in out
        os.write(shell.master, b"exit 3\n")
        assert shell.process.wait(10) == 3
    finally:
        shell.close()
    # on the host it is the agent's mapped ids, the ones its /state is chowned to
    assert (fake.root / "host-ids").read_text().split() == [str(BASE + 1000), str(BASE + 100)]
    assert fake.calls() == []  # not nixos-container root-login


def test_without_the_user_namespace_the_fake_is_host_root(
    home: Home, fake: Fake, container_root: Path
):
    # the fake is faithful: what root-login's nsenter (no --user) would run as
    argv = [a for a in SHELL_ARGV if a not in ("--user", "--setuid=1000", "--setgid=100")]
    argv[argv.index("--root")] = "--mount"
    out = subprocess.run(argv[:-2] + ["/bin/true"], capture_output=True, text=True)
    assert (fake.root / "host-ids").read_text().split() == ["0", "0"]
    assert out.returncode != 0  # the container's env is not the host's


def test_closing_a_shell_hangs_it_up(home: Home, fake: Fake, container_root: Path):
    shell = make_runtime(home, fake, Recorder()).shell(NAME)
    read_until(shell.master, b"$")  # bash's prompt: it waits for input
    assert shell.close() != 0  # SIGHUP ended it


def test_no_shell_for_a_container_that_is_down(home: Home, fake: Fake, tmp_path: Path):
    fake_program(tmp_path / "bin", "machinectl", "echo 'No machine h-manager known' >&2; exit 1\n")
    with pytest.raises(RuntimeCommandError, match="cannot find the leader of h-manager"):
        make_runtime(home, fake, Recorder()).shell(NAME)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_deploy_really_gives_the_state_to_the_mapped_agent_user(quiet: Home, fake: Fake):
    home = quiet
    (home.state_dir(NAME) / "sub").mkdir(parents=True)
    (home.state_dir(NAME) / "sub" / "notes.md").write_text("notes\n")
    rec = Recorder()
    rt = NixosContainerRuntime(
        home, policy_eval=rec.evaluate, uid_base=rec.base, conf_dir=fake.root / "conf"
    )
    approval_id, _ = approved(home)
    assert deploy(home, NAME, approval_id, rt).state == "deployed"
    for path in (home.state_dir(NAME), home.state_dir(NAME) / "sub" / "notes.md"):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (BASE + 1000, BASE + 100)
    assert (home.agent_dir(NAME).stat().st_uid, home.agent_dir(NAME).stat().st_gid) == (0, 0)
    log = home.build_log(NAME, approval_id).read_text()
    assert f"state: 3 paths owned by {BASE + 1000}:{BASE + 100} (3 changed)" in log


# -- the candidate flake, fetched by the real nix -------------------------------------------

# nixpkgs as the meta flake uses it: `lib.nixosSystem`, here returning the agent's
# hyperhive.* options from its agent.nix (the second module) without evaluating NixOS.
STUB_NIXPKGS_FLAKE = """{
  outputs = _: {
    lib.nixosSystem = args: {
      config.hyperhive = (import (builtins.elemAt args.modules 1) { }).hyperhive or { };
    };
  };
}
"""


@pytest.mark.skipif(shutil.which("nix") is None, reason="needs nix")
def test_the_real_nix_fetches_a_candidate_that_is_not_on_main(
    quiet: Home, tmp_path: Path, monkeypatch
):
    """The candidate's agent revision is on no branch yet (main moves after the deploy):
    `ref=main&rev=<it>` fails with Nix before 2.20 ("Cannot find Git revision"). The flake
    the runtime writes is evaluated by the installed nix, offline, through the agent's
    agent.nix at that revision."""
    home = quiet
    stub = tmp_path / "nixpkgs"
    stub.mkdir()
    (stub / "flake.nix").write_text(STUB_NIXPKGS_FLAKE)
    source = tmp_path / "hyperhive-src"
    shutil.copytree(Path(__file__).resolve().parent.parent / "nix", source / "nix")
    monkeypatch.setenv("HYPERHIVE_SOURCE", str(source))
    monkeypatch.setenv("HYPERHIVE_NIXPKGS", str(stub))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nix's git cache: fresh
    commit_config(home, NAME, {"agent.nix": '{ ... }: { hyperhive.model = "candidate"; }\n'}, "m")
    approval_id, rev = approved(home)
    applied = home.applied_dir(NAME)
    assert git(applied, "branch", "--contains", rev).strip() == ""  # not on main: no main yet

    rt = NixosContainerRuntime(home)
    lines: list[str] = []
    url = rt.candidate_flake(NAME, rev, lines.append)
    assert url == flake_url(home)
    assert git(applied, "rev-parse", f"refs/hyperhive/pins/{rev}").strip() == rev
    # the policy evaluation the build runs, with the real nix: agent.nix at `rev`
    assert rt.nix_eval(url, NAME, lines.append)["model"] == "candidate"
    env = {**os.environ, "NIX_CONFIG": "experimental-features = nix-command flakes"}
    meta_json = subprocess.run(
        ["nix", "flake", "metadata", "--json", url],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    ).stdout
    locked = json.loads(meta_json)["locks"]["nodes"][f"agent-{NAME}"]["locked"]
    assert (locked["rev"], locked["ref"]) == (rev, f"refs/hyperhive/pins/{rev}")
    # the candidate commit carries its own lock (main's inputs kept, this one added)
    lock = json.loads(git(home.meta_dir, "show", f"refs/hyperhive/build/{NAME}:flake.lock"))
    assert lock["nodes"][f"agent-{NAME}"]["locked"]["rev"] == rev
