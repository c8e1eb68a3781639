"""The NixOS runtime: each agent is an imperative `nixos-container` named `h-<name>`,
built from the meta flake's `nixosConfigurations.<name>`.

What a build (`update(name, rev, emit)`) does, every step's output streamed to `emit`
line by line as it is printed:

The container is `h-<name>` (longer names: see `container_name`, as nix/lib.nix).

1. Meta candidate. The meta repo's main pins every agent's *deployed* revision and moves
   only after a successful deploy (workflow/deploy.py), so the revision being built is
   not on main yet. The build commits a candidate to `refs/hyperhive/build/<name>` in
   meta.git: main's tree with this agent pinned at `rev` (`workflow.meta.tree_files`:
   flake.nix re-rendered, `hyperhive.json` updated, flake.lock relocked from main's so
   inputs already locked are not bumped). Every agent input is fetched by a ref that
   points at its revision (`refs/hyperhive/pins/<rev>` in the applied repo, written
   first), and the meta flake by the build ref, which points at the candidate: Nix
   before 2.20 fetches a ref and finds the rev in it, later ones fetch the rev. Everything
   is built from that exact commit:
   `git+file://<home>/meta.git?ref=refs/hyperhive/build/<name>&rev=<sha>#<name>`.
2. Policy. `nix eval --json <flake>#hyperhive.policies.<name>` (nix/meta-flake.nix: the
   agent's `config.hyperhive` in the stored shape), checked by `policy.normalize` and
   stored like the local runtime's (`policy.json` beside `deployed.rev`, swapped in only
   when the whole build succeeded), so the broker's `deployed_policy` works for both
   runtimes. Injectable (`policy_eval`).
3. `nixos-container create h-<name> --auto-start --flake <flake>` when the container does
   not exist, `nixos-container update h-<name> --flake <flake>` when it does.
4. The container's conf gets `PRIVATE_USERS=pick` (user-namespaced: uid 0 inside is an
   unprivileged uid on the host) and `EXTRA_NSPAWN_FLAGS` (nix/lib.nix `nspawnFlags`):
   the agent's state directory at `/state`, `run/agents/<name>/` at `/run/hyperhive`.
5. `nixos-container start h-<name>` unless it is up.
6. The state directory is chowned to the host ids of the container's `agent` user
   (runtime/ownership.py), the uid base read from the running container (injectable).

Any failing step raises BuildError naming the command and its exit code; the previous
policy and `deployed.rev` stay. `create` only makes the state directory: the container
needs a deployed config, so the first `update` creates it.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from dulwich.object_store import iter_tree_contents

from hyperhive.errors import RuntimeCommandError
from hyperhive.gitstore import refs
from hyperhive.gitstore.history import write_commit
from hyperhive.gitstore.repos import open_repo
from hyperhive.home import Home
from hyperhive.names import ENGINE, check_agent_name
from hyperhive.runtime import ownership, policy, record, stream
from hyperhive.runtime.base import AgentDirs, BuildError, Emit, Shell
from hyperhive.runtime.stream import run_streamed
from hyperhive.workflow import meta

log = logging.getLogger("hyperhive.runtime.nixos")

PREFIX = "h-"
# nixos-container refuses longer names (the host side veth is `ve-<container>`).
MAX_CONTAINER_NAME = 11
BUILD_REF = "refs/hyperhive/build/"
CHECK_REF = "refs/hyperhive/check/"  # a check's candidate: <name>/<random>, gone after
ACTOR = ENGINE
STATE_MOUNT = "/state"  # nix/lib.nix stateDir
SOCKET_MOUNT = "/run/hyperhive"  # the directory of nix/lib.nix agentSocket
AGENT_UID = 1000  # the `agent` user inside the container (nix/lib.nix agentUid)
AGENT_GID = 100  # its primary group, `users` (nix/lib.nix agentGid)
AGENT_USER = "agent"  # nix/lib.nix agentUser
CONTAINER_BIN = "/run/current-system/sw/bin"  # inside the container
CONF_DIRS = (Path("/etc/nixos-containers"), Path("/etc/containers"))
POLICY_ATTR = "hyperhive.policies.{name}"
NIX_FLAGS = ["--extra-experimental-features", "nix-command flakes"]

PolicyEval = Callable[[str, str, Emit], object]
UidBase = Callable[[str], int]
Chowner = Callable[[list[ownership.Chown]], int]


def container_name(name: str) -> str:
    """The container of agent `name` (nix/lib.nix `containerName` is the same rule):
    `h-<name>` when that fits nixos-container's 11 characters (names up to 9); longer
    names become `h_` + their first 4 characters + the first 5 hex digits of
    sha256(name) — 11 characters, never a short name's container ("_" is not in names)."""
    check_agent_name(name)
    if len(PREFIX) + len(name) <= MAX_CONTAINER_NAME:
        return PREFIX + name
    return "h_" + name[:4] + hashlib.sha256(name.encode()).hexdigest()[:5]


def parse_status(output: str) -> str | None:
    """`nixos-container status` output: "up", "down", or None (it printed "gone")."""
    words = output.split()
    word = words[-1] if words else ""
    return word if word in ("up", "down") else None


class NixosContainerRuntime(AgentDirs):
    supervised = False  # containers run on their own; the daemon polls their status
    sandboxed = True  # each agent is a container

    def __init__(
        self,
        home: Home,
        *,
        program: str = "nixos-container",
        nix: str = "nix",
        nsenter: str = "nsenter",
        policy_eval: PolicyEval | None = None,
        uid_base: UidBase | None = None,
        chown: Chowner = ownership.apply,
        conf_dir: Path | None = None,
        proc: Path = Path("/proc"),
        agent_uid: int = AGENT_UID,
        agent_gid: int = AGENT_GID,
    ):
        self.home = home
        self.program = program
        self.nix = nix
        self.nsenter = nsenter
        self.policy_eval = policy_eval or self.nix_eval
        self.uid_base = uid_base or self.leader_uid_base
        self.chown = chown
        self.conf_dir = conf_dir
        self.proc = proc
        self.agent_uid, self.agent_gid = agent_uid, agent_gid

    # -- the Runtime interface ------------------------------------------------------------

    def update(self, name: str, rev: str, emit: Emit) -> None:
        self.begin_update(name)
        container = container_name(name)
        try:
            with record.staged(self.home, name, rev):
                flake = self.candidate_flake(name, rev, emit)
                target = f"{flake}#{name}"
                policy.write_pending(self.home, name, self._policy(flake, name, emit))
                if self.container_state(name) is None:
                    self._run(["create", container, "--auto-start", "--flake", target], emit)
                else:
                    self._run(["update", container, "--flake", target], emit)
                self.configure(name, emit)
                if self.container_state(name) != "up":
                    self._run(["start", container], emit)
                self.own_state(name, emit)
        except RuntimeCommandError as e:
            raise BuildError(str(e)) from None
        emit(f"{container} runs {rev}")

    def check(self, name: str, rev: str, emit: Emit) -> dict:
        """What `update` builds, without creating, switching or starting anything: the
        candidate flake (on a ref of its own, deleted after), the policy evaluated and the
        container's system built (`nix build` of its toplevel, streamed); the policy."""
        self.home.require_agent(name)
        ref = f"{CHECK_REF}{name}/{uuid.uuid4().hex[:12]}"  # checks of one agent run side by side
        try:
            flake = self.candidate_flake(name, rev, emit, ref)
            found = self._policy(flake, name, emit)
            attr = f'{flake}#nixosConfigurations."{name}".config.system.build.toplevel'
            argv = [self.nix, *NIX_FLAGS, "build", "--no-link", "--print-out-paths", attr]
            emit(f"$ {' '.join(argv)}")
            try:
                code = run_streamed(argv, emit)
            except OSError as e:
                raise BuildError(f"cannot run {self.nix}: {e}") from None
            if code != 0:
                raise BuildError(f"`nix build` of {name}'s system exited {code}")
        finally:
            with open_repo(self.home.meta_dir) as repo:
                if sha := refs.read(repo, ref.encode()):
                    refs.delete(repo, ref.encode(), sha)
        return found

    def destroy(self, name: str) -> None:
        container = container_name(name)
        lines: list[str] = []
        code = self._call(["destroy", container], lines.append)
        if code != 0:  # nixos-container exits 0 for a container that does not exist
            raise RuntimeCommandError(
                f"`{self.program} destroy {container}` exited {code}: {' / '.join(lines[-3:])}"
            )
        record.forget(self.home, name)

    def status(self, name: str) -> dict:
        if self.home.is_destroyed(name):
            return {"state": "destroyed", "revision": None}
        try:
            state = self.container_state(name)
        except RuntimeCommandError as e:
            return {"state": "unknown", "revision": None, "error": str(e)}
        if state is None:
            return {"state": "not deployed", "revision": None}
        return {"state": state, "revision": record.deployed_revision(self.home, name)}

    def start(self, name: str, emit: Emit | None = None) -> None:
        self._command(["start", container_name(name)], emit)

    def stop(self, name: str, emit: Emit | None = None) -> None:
        self._command(["stop", container_name(name)], emit)

    def log_tail(self, name: str, lines: int = 40) -> list[str]:
        """The host journal of `container@<container>.service` (the container's console;
        it is there after the container went down, unlike the container's own journal)."""
        unit = f"container@{container_name(name)}.service"
        argv = ["journalctl", "-u", unit, "-n", str(lines), "--no-pager", "-o", "cat"]
        try:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return [f"(no log: `{' '.join(argv)}` failed: {e})"]
        said = proc.stdout.splitlines()[-lines:]
        return said or [f"(no log: `{' '.join(argv)}` exited {proc.returncode})"]

    def shell(self, name: str) -> Shell:
        """A login shell of the container's `agent` user on a PTY (`shell_argv`)."""
        if self.home.is_destroyed(name):
            raise RuntimeCommandError(f"agent {name} was destroyed: it has no container")
        return Shell.spawn(self.shell_argv(name))

    def shell_argv(self, name: str) -> list[str]:
        """nsenter into every namespace of the running container's leader, its USER
        namespace included, as the agent's ids there (1000:100, on the host the picked
        base + those): the shell can do what the agent can and its files belong to the
        agent. `nixos-container root-login` is nsenter without --user (older nixpkgs) or
        `systemd-run --machine` as root: either way root, host root with the former.

        `--root`/`--wd` without a value take the leader's (the container's /); the
        container's own env then clears the host environment and goes to /state."""
        container = container_name(name)
        leader = self.leader(container)
        agent = AGENT_USER
        return [
            self.nsenter,
            f"--target={leader}",
            "--user",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--pid",
            "--root",
            "--wd",
            f"--setuid={self.agent_uid}",
            f"--setgid={self.agent_gid}",
            "--",
            f"{CONTAINER_BIN}/env",
            "-i",
            "-C",
            STATE_MOUNT,
            f"HOME=/home/{agent}",
            f"USER={agent}",
            f"LOGNAME={agent}",
            f"SHELL={CONTAINER_BIN}/bash",
            f"PATH=/run/wrappers/bin:{CONTAINER_BIN}",
            "TERM=xterm-256color",
            "COLORTERM=truecolor",
            "LANG=C.UTF-8",
            f"HYPERHIVE_AGENT={name}",
            f"{CONTAINER_BIN}/bash",
            "--login",
        ]

    # -- the steps ------------------------------------------------------------------------

    def container_state(self, name: str) -> str | None:
        """The container's state: "up", "down", or None when `h-<name>` does not exist
        (`nixos-container status` prints "gone"); RuntimeCommandError when it cannot tell."""
        argv = [self.program, "status", container_name(name)]
        try:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RuntimeCommandError(f"`{' '.join(argv)}` failed: {e}") from None
        state = parse_status(proc.stdout)
        if state is None and proc.returncode != 0 and "gone" not in proc.stdout.split():
            said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:]
            raise RuntimeCommandError(
                f"`{' '.join(argv)}` exited {proc.returncode}: {' '.join(said)}"
            )
        return state

    def candidate_flake(self, name: str, rev: str, emit: Emit, ref: str | None = None) -> str:
        """Commit meta's main tree with `name` pinned at `rev` to `ref` (default
        refs/hyperhive/build/<name>) and return the flake URL of that exact commit (see the
        module docstring)."""
        ref = ref or BUILD_REF + name
        with open_repo(self.home.meta_dir) as repo:
            head = repo.refs[meta.MAIN]
            files = {
                entry.path.decode(): repo[entry.sha].data
                for entry in iter_tree_contents(repo.object_store, repo[head].tree)
            }
            pins = json.loads(files[meta.PINS_FILE])["agents"]
            pins[name] = {**pins.get(name, {}), "rev": rev}
            try:  # flake.nix, hyperhive.json and the lock, which keeps what main had locked
                files.update(meta.tree_files(self.home, pins, files.get("flake.lock")))
            except KeyError:
                raise BuildError(f"{rev} is not a commit of {name}'s applied repo") from None
            message = f"build {name} {rev[:12]}\n\nAgent: {name}\nRevision: {rev}\n"
            commit = write_commit(repo, files, message, ACTOR, [head])
            refs.cas(repo, ref.encode(), refs.read(repo, ref.encode()), commit)
        url = f"git+file://{self.home.meta_dir.resolve()}?ref={ref}&rev={commit.decode()}"
        emit(f"meta candidate {commit.decode()[:12]}: {name} at {rev}")
        return url

    def _policy(self, flake: str, name: str, emit: Emit) -> dict:
        found = policy.normalize(self.policy_eval(flake, name, emit))
        emit(f"policy: {json.dumps(found, sort_keys=True)}")
        return found

    def nix_eval(self, flake: str, name: str, emit: Emit) -> object:
        """`nix eval --json <flake>#hyperhive.policies.<name>`: stderr streamed to `emit`,
        stdout parsed as JSON. nix/meta-flake.nix defines that output as the agent's
        `nixosConfigurations.<name>.config.hyperhive` in the stored shape (lib.nix
        `deployedPolicy`); the raw options also hold `name` and packages."""
        attr = f"{flake}#{POLICY_ATTR.format(name=check_agent_name(name))}"
        argv = [self.nix, *NIX_FLAGS, "eval", "--json", attr]
        emit(f"$ {' '.join(argv)}")
        stderr: list[str] = []
        with tempfile.TemporaryFile() as out:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.PIPE,
                    start_new_session=stream.own_group(),  # a check's time limit kills its group
                )
            except OSError as e:
                raise BuildError(f"cannot run {self.nix}: {e}") from None
            with stream.limited(proc):
                with proc.stderr:
                    for raw in iter(lambda: proc.stderr.readline(stream.MAX_LINE), b""):
                        line = raw.decode(errors="replace").rstrip("\n")
                        stderr.append(line)
                        del stderr[:-200]  # nix_error reads the last lines
                        emit(line)
                code = proc.wait()
            out.seek(0)
            data = out.read()
        if code != 0:
            message = policy.nix_error("\n".join(stderr))
            raise BuildError(f"cannot evaluate the hyperhive.* options: {message}")
        try:
            return json.loads(data)
        except ValueError as e:
            raise BuildError(f"nix eval printed no JSON policy: {e}") from None

    def conf_file(self, name: str) -> Path:
        container = container_name(name)
        dirs = (self.conf_dir,) if self.conf_dir else CONF_DIRS
        for d in dirs:
            if (d / f"{container}.conf").is_file():
                return d / f"{container}.conf"
        raise BuildError(f"{container}.conf is in none of {', '.join(map(str, dirs))}")

    def socket_dir(self, name: str) -> Path:
        """The host directory bind-mounted at /run/hyperhive in the container."""
        return self.home.run_dir / "agents" / check_agent_name(name)

    def nspawn_flags(self, name: str) -> list[str]:
        """nix/lib.nix `nspawnFlags`: a private user namespace whose range nspawn picks
        (recorded by chowning the container's root), the state at /state and the agent's
        socket directory at /run/hyperhive."""
        state = self.home.state_dir(name).resolve()
        sockets = self.socket_dir(name).resolve()
        for path in (state, sockets):
            if re.search(r"[\s\"'\\:$`]", str(path)):
                raise BuildError(f"{path} cannot be bind-mounted: it has odd characters")
        return [
            "--private-users=pick",
            "--private-users-ownership=chown",
            f"--bind={state}:{STATE_MOUNT}",
            f"--bind={sockets}:{SOCKET_MOUNT}",
        ]

    def nspawn_settings(self, name: str) -> dict[str, str]:
        """What goes into the container's conf. PRIVATE_USERS=pick also makes
        container@.service idmap its /nix binds; the flag is repeated in
        EXTRA_NSPAWN_FLAGS for nixpkgs versions that do not know PRIVATE_USERS."""
        return {"PRIVATE_USERS": "pick", "EXTRA_NSPAWN_FLAGS": " ".join(self.nspawn_flags(name))}

    def configure(self, name: str, emit: Emit) -> None:
        """Set the user-namespace mapping and the state bind mount in the container's conf
        (read by container@.service at start)."""
        path = self.conf_file(name)
        settings = self.nspawn_settings(name)
        self.socket_dir(name).mkdir(parents=True, exist_ok=True)  # nspawn needs the source
        kept = [
            line for line in path.read_text().splitlines() if line.split("=", 1)[0] not in settings
        ]
        text = "\n".join([*kept, *(f'{k}="{v}"' for k, v in settings.items())]) + "\n"
        tmp = path.with_name(path.name + ".hyperhive")
        tmp.write_text(text)
        os.replace(tmp, path)
        for key, value in settings.items():
            emit(f"{path.name}: {key}={value}")

    def leader(self, container: str) -> int:
        """The pid of the running container's init (`machinectl show -p Leader`, as
        nixos-container itself finds it); RuntimeCommandError when it does not run."""
        machinectl = shutil.which("machinectl") or "machinectl"
        argv = [machinectl, "show", container, "-p", "Leader"]
        try:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RuntimeCommandError(f"cannot find the leader of {container}: {e}") from None
        match = re.search(r"^Leader=(\d+)$", proc.stdout, re.M)
        if proc.returncode != 0 or not match:
            raise RuntimeCommandError(
                f"cannot find the leader of {container} (is it up? machinectl exited "
                f"{proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()})"
            )
        return int(match.group(1))

    def leader_uid_base(self, container: str) -> int:
        """The host uid of the running container's uid 0, from its leader's uid_map."""
        try:
            leader = self.leader(container)
        except RuntimeCommandError as e:
            raise BuildError(str(e)) from None
        uid_map = self.proc / str(leader) / "uid_map"
        try:
            return ownership.base_from_id_map(uid_map.read_text())
        except (OSError, ownership.OwnershipError) as e:
            raise BuildError(f"cannot read the uid mapping of {container}: {e}") from None

    def own_state(self, name: str, emit: Emit) -> None:
        container = container_name(name)
        base = self.uid_base(container)
        state = self.home.state_dir(name)
        try:
            chowns = ownership.plan(state, base, self.agent_uid, self.agent_gid)
            changed = self.chown(chowns)
        except (OSError, ownership.OwnershipError) as e:
            raise BuildError(f"cannot give {state} to {container}'s agent user: {e}") from None
        uid, gid = ownership.host_ids(base, self.agent_uid, self.agent_gid)
        emit(f"state: {len(chowns)} paths owned by {uid}:{gid} ({changed} changed)")

    # -- running nixos-container ----------------------------------------------------------

    def _call(self, args: list[str], emit: Emit) -> int:
        argv = [self.program, *args]
        emit(f"$ {' '.join(argv)}")
        try:
            return run_streamed(argv, emit)
        except OSError as e:
            emit(f"cannot run {self.program}: {e}")
            return 127

    def _run(self, args: list[str], emit: Emit) -> None:
        code = self._call(args, emit)
        if code != 0:
            raise BuildError(f"`{self.program} {' '.join(args)}` exited {code}")

    def _command(self, args: list[str], emit: Emit | None) -> None:
        lines: list[str] = []

        def out(line: str) -> None:
            lines.append(line)
            if emit is None:
                log.info("%s", line)
            else:
                emit(line)

        code = self._call(args, out)
        if code != 0:
            raise RuntimeCommandError(
                f"`{self.program} {' '.join(args)}` exited {code}: {' / '.join(lines[-3:])}"
            )
