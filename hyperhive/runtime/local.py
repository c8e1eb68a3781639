"""The embedded runtime for any Linux machine: an agent is a directory on the host.

A build checks the config out into a staging directory, validates it (every `.nix` file
must parse when `nix-instantiate` is on PATH; `agent.nix` must exist), evaluates its
`hyperhive.*` policy (runtime/policy.py: a restriction it cannot evaluate fails the build)
and swaps it into `agents/<name>/deployed/` only when all of that succeeded; the policy
goes to `agents/<name>/policy.json` and the revision to `deployed.rev` with the swap.

`create` only makes the state directory; the agent exists in this runtime (a deployed
checkout) from its first successful `update`, which also creates it if `create` was
never called. `destroy` stops the harness and removes the deployed checkout,
`deployed.rev`, `policy.json` and the harness's `etc/`.

`start` runs the agent's harness (`hyperhive harness`, runtime/local_harness.py) as a
subprocess of this process, at the deployed revision (a restart when it runs an older
one); `stop` ends it. The daemon starts them (daemon/supervisor.py); `status` says
`running` while the harness runs, `stopped` when it does not (agents.runtime_state adds
what the daemon knows is wrong: `failing`, `crash-looping`).

`shell` is a login shell in the agent's state directory: in its sandbox, as its harness
sees the world (runtime/sandbox.py), or with the sandbox off as the agent's user where
there is one (see `shell_account`).
"""

import os
import pwd
import shutil
import tempfile
from pathlib import Path

from hyperhive.errors import RuntimeCommandError, UnknownAgent, UnsafeTree
from hyperhive.gitstore.history import checkout
from hyperhive.gitstore.repos import open_repo
from hyperhive.home import Home
from hyperhive.runtime import policy, record, sandbox
from hyperhive.runtime.base import AgentDirs, BuildError, Emit, Shell
from hyperhive.runtime.local_harness import ExitHandler, Harnesses
from hyperhive.runtime.stream import run_streamed

PARSE_BATCH = 256  # .nix files parsed by one nix-instantiate (its command line stays short)


class LocalRuntime(AgentDirs):
    supervised = True  # agents are processes of the daemon (runtime/base.py)

    def __init__(self, home: Home):
        self.home = home
        self.harnesses = Harnesses(home)

    def update(self, name: str, rev: str, emit: Emit) -> None:
        self.begin_update(name)
        dest = self.home.deployed_dir(name)
        staging = dest.with_name("deployed.new")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            with record.staged(self.home, name, rev):
                found = self._evaluate(name, rev, staging, emit)
                policy.write_pending(self.home, name, found)
                self._swap(staging, dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        emit(f"deployed {rev} to {dest}")

    def check(self, name: str, rev: str, emit: Emit) -> dict:
        """What `update` does short of the swap: the checkout (into a directory of its
        own, removed after), every `.nix` file parsed, the policy evaluated; the policy."""
        self.home.require_agent(name)
        with tempfile.TemporaryDirectory(prefix="check-", dir=self.home.agent_dir(name)) as tmp:
            return self._evaluate(name, rev, Path(tmp), emit)

    def _evaluate(self, name: str, rev: str, root: Path, emit: Emit) -> dict:
        """Check `rev` out into `root`, validate it and evaluate its policy (a build and a
        check do the same)."""
        emit(f"checking out {rev} into {root}")
        try:
            with open_repo(self.home.applied_dir(name)) as repo:
                files = checkout(repo, rev.encode(), root)
        except UnsafeTree as e:
            raise BuildError(str(e)) from None
        emit(f"{len(files)} files")
        self._validate(root, files, emit)
        return policy.extract(root, emit)

    def destroy(self, name: str) -> None:
        self.harnesses.stop(name)
        shutil.rmtree(self.harnesses.etc_dir(name), ignore_errors=True)
        dest = self.home.deployed_dir(name)
        record.forget(self.home, name)
        for d in (dest, dest.with_name("deployed.new"), dest.with_name("deployed.old")):
            shutil.rmtree(d, ignore_errors=True)

    def _validate(self, root: Path, files: list[str], emit: Emit) -> None:
        if "agent.nix" not in files:
            raise BuildError("agent.nix is missing: every agent config declares itself there")
        nix = shutil.which("nix-instantiate")
        if nix is None:
            emit("nix-instantiate is not on PATH: .nix files are not parsed")
            return
        rels = sorted(f for f in files if f.endswith(".nix"))
        # One process parses many (a process each cost most of a check of a config with
        # many files); only when a batch fails is it parsed file by file, to name the file.
        for batch in (rels[i : i + PARSE_BATCH] for i in range(0, len(rels), PARSE_BATCH)):
            emit(f"$ nix-instantiate --parse {' '.join(batch)}")
            if run_streamed([nix, "--parse", *batch], emit, cwd=root) == 0:
                continue
            for rel in batch:
                emit(f"$ nix-instantiate --parse {rel}")
                code = run_streamed([nix, "--parse", rel], emit, cwd=root)
                if code != 0:
                    raise BuildError(f"{rel} does not parse (nix-instantiate exited {code})")
            raise BuildError(f"{', '.join(batch)} do not parse together")

    @staticmethod
    def _swap(staging: Path, dest: Path) -> None:
        old = dest.with_name("deployed.old")
        shutil.rmtree(old, ignore_errors=True)
        if dest.exists():
            dest.rename(old)
        staging.rename(dest)
        shutil.rmtree(old, ignore_errors=True)

    def status(self, name: str) -> dict:
        if self.home.is_destroyed(name):
            return {"state": "destroyed", "revision": None}
        revision = record.deployed_revision(self.home, name)
        if not self.home.deployed_dir(name).is_dir() or revision is None:
            return {"state": "not deployed", "revision": None}
        state = "running" if self.harnesses.is_running(name) else "stopped"
        return {"state": state, "revision": revision}

    @property
    def sandboxed(self) -> bool:
        """Whether agents run in their sandbox (`[local] sandbox`, read each time)."""
        return self.harnesses.sandboxed()

    def start(self, name: str, emit: Emit | None = None) -> None:
        revision = record.deployed_revision(self.home, name)
        if self.home.is_destroyed(name) or revision is None:
            raise RuntimeCommandError(f"agent {name} is not deployed: nothing to start")
        try:
            started = self.harnesses.start(name, revision)
        except sandbox.SandboxUnavailable as e:
            raise RuntimeCommandError(f"{name} not started: {sandbox.refusal(str(e))}") from None
        except OSError as e:
            raise RuntimeCommandError(f"cannot start the harness of {name}: {e}") from None
        if started and emit is not None:
            emit(f"harness of {name} started at {revision}")

    def stop(self, name: str, emit: Emit | None = None) -> None:
        if self.harnesses.stop(name) and emit is not None:
            emit(f"harness of {name} stopped")

    def stop_many(self, names: list[str]) -> list[str]:
        """Stop these agents' harnesses together (the daemon's stop); those that ran."""
        return self.harnesses.stop_many(names)

    def watch(self, on_exit: ExitHandler) -> None:
        """`on_exit(name, status)` is called when a harness exits unasked."""
        self.harnesses.on_exit = on_exit

    def log_tail(self, name: str, lines: int = 40) -> list[str]:
        return self.harnesses.tail(name, lines)

    def shell(self, name: str) -> Shell:
        """A login shell (bash, else sh) on a PTY, in the agent's state directory: where
        the agent works and what persists (a deploy swaps `deployed/` away from under a
        shell's working directory), with TERM=xterm-256color and a UTF-8 locale. In the
        agent's sandbox (`[local] sandbox`, the default) it is the harness's: the same
        mounts, namespaces and environment allow-list, its state at /state."""
        self.home.require_agent(name)
        if self.home.is_destroyed(name):
            raise UnknownAgent(f"agent {name} was destroyed (its state is kept): it has no shell")
        state = self.home.state_dir(name)
        if not state.is_dir():
            raise RuntimeCommandError(f"agent {name} has no state directory ({state})")
        program = shutil.which("bash") or shutil.which("sh")
        if program is None:
            raise RuntimeCommandError("neither bash nor sh is on PATH: no shell to start")
        lang = os.environ.get("LANG", "")
        terminal = {
            "SHELL": program,
            "TERM": "xterm-256color",
            "COLORTERM": "truecolor",
            "LANG": lang if "utf-8" in lang.lower().replace("utf8", "utf-8") else "C.UTF-8",
        }
        try:
            if self.sandboxed:
                self.harnesses.write_etc(name)  # what it mounts at /etc/hyperhive
                env = {**self.harnesses.env(name, sandboxed=True), **terminal}
                wrap = self.harnesses.sandbox(name, env).command([])
                return Shell.spawn([program, "-l"], env=env, cwd=state, wrap=wrap)
            user, account = shell_account(state)
            env = {
                "PATH": os.environ.get("PATH", os.defpath),
                **account,
                **terminal,
                "HYPERHIVE_AGENT": name,
            }
            return Shell.spawn([program, "-l"], env=env, cwd=state, user=user)
        except sandbox.SandboxUnavailable as e:
            raise RuntimeCommandError(f"no shell for {name}: {sandbox.refusal(str(e))}") from None
        except OSError as e:
            raise RuntimeCommandError(f"cannot start a shell for {name}: {e}") from None


def shell_account(state: Path) -> tuple[tuple[int, int, list[int]] | None, dict[str, str]]:
    """Who the local shell runs as: `(uid, gid, groups)` to switch to (None: stay the
    daemon's user) and USER, LOGNAME, HOME.

    The local runtime has no user of its own for an agent; the owner of the agent's state
    directory stands for one. When the daemon runs as root and that owner is someone else,
    the shell is theirs (HOME: their home, else the state directory). Otherwise (the
    daemon's own user, as `make run` and the tests are) it stays the daemon's user with
    that user's HOME, never the state directory: a login shell runs the dotfiles in HOME,
    and the agent writes its state directory."""
    uid, gid = (st := state.stat()).st_uid, st.st_gid
    if os.geteuid() == 0 and uid != 0:
        try:
            pw = pwd.getpwuid(uid)
        except KeyError:  # a bare uid, as a user-namespaced container's files are
            return (uid, gid, [gid]), {"USER": str(uid), "LOGNAME": str(uid), "HOME": str(state)}
        home = pw.pw_dir if os.path.isdir(pw.pw_dir) else str(state)
        groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
        return (uid, pw.pw_gid, groups), {"USER": pw.pw_name, "LOGNAME": pw.pw_name, "HOME": home}
    try:
        pw = pwd.getpwuid(os.geteuid())
        me, home = pw.pw_name, pw.pw_dir
    except KeyError:
        me, home = str(os.geteuid()), "/"
    home = os.environ.get("HOME") or home
    return None, {"USER": me, "LOGNAME": me, "HOME": home}
