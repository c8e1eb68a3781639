"""The local runtime's harness processes: one `hyperhive harness` per running agent.

Each runs in its own session (so its process group, `claude` and the MCP servers under
it, is stopped as one), in the agent's state directory, its output appended to
`logs/<name>/harness.log` (moved to `harness.log.1` by a start that finds it over 16
MiB), with `--exit-with-parent --lifeline FD` (runtime/lifeline.py) so it never outlives
the daemon that started it, not even one that died before it ran. Its pid
is recorded in `agents/<name>/harness.pid`: a stop from another process (`hyperhive agent
destroy` in the CLI) finds it there, and a stop removes the file before signalling, which
is how the process that started the harness tells an exit it asked for from a crash.

With `[local] sandbox` on (the default) the harness runs in a bubblewrap sandbox
(runtime/sandbox.py) built at each start from the deployed policy: it sees its state at
/state, its sockets at /run/hyperhive and its policy at /etc/hyperhive, as in a
container, and gets those paths; harness.pid then holds bwrap's pid, whose command line
names the agent's run directory. A stop asks the harness itself to end (through the
process group of bwrap's pid 1, which --new-session gave it); bwrap ending any other way
(killed, or its daemon gone: --die-with-parent) takes the whole sandbox with it.

Before each start the deployed policy is written to `agents/<name>/etc/` as `policy.json`
and `extra-mcp.json`, the shapes nix/lib.nix renders into `/etc/hyperhive/` of a container,
so the harness reads the same files on both runtimes.
"""

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hyperhive.home import Home
from hyperhive.policy import POLICY_KEYS, deployed_policy
from hyperhive.resources import hyperhive_command
from hyperhive.runtime import lifeline, sandbox
from hyperhive.settings import load_settings
from hyperhive.tokens import state_file

log = logging.getLogger("hyperhive.runtime.local")

STOP_SECONDS = 10.0  # SIGTERM, then SIGKILL after this
TAIL_BYTES = 64 * 1024
MAX_LOG_BYTES = 16 << 20  # a start finding harness.log past this moves it to harness.log.1

# (agent name, exit status) of a harness that exited without being asked to
ExitHandler = Callable[[str, int], None]

# bwrap's --die-with-parent is PR_SET_PDEATHSIG, which fires when the *thread* that
# forked it ends: harnesses are forked by this one thread, which lives as long as the
# process, never by a request's or a job's.
_launcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="harness-launcher")


@dataclass
class Running:
    proc: subprocess.Popen
    revision: str


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class Harnesses:
    def __init__(self, home: Home):
        self.home = home
        self.lock = threading.Lock()
        self.running: dict[str, Running] = {}
        self.on_exit: ExitHandler | None = None
        # The daemon's git remote (set by it before it starts any harness): the harness
        # and its claude get it and the agent's token file, as a container's unit sets them.
        self.git_url: str | None = None

    # -- where things are ---------------------------------------------------------------

    def etc_dir(self, name: str) -> Path:
        return self.home.agent_dir(name) / "etc"

    def pid_file(self, name: str) -> Path:
        return self.home.agent_dir(name) / "harness.pid"

    def log_file(self, name: str) -> Path:
        return self.home.log_dir(name) / "harness.log"

    def sandboxed(self) -> bool:
        """`[local] sandbox` of hyperhive.toml, read at each start."""
        return load_settings(self.home).local.sandbox

    def sandbox(self, name: str, env: dict[str, str]) -> sandbox.Sandbox:
        """The agent's sandbox as its deployed policy has it: the directory of the claude
        it names (null: `claude` on the PATH of `env`)."""
        claude = deployed_policy(self.home, name).get("claude") or "claude"
        self.home.agent_socket(name).parent.mkdir(parents=True, exist_ok=True)
        return sandbox.Sandbox(
            name=name,
            state=self.home.state_dir(name),
            run=self.home.agent_socket(name).parent,
            etc=self.etc_dir(name),
            hidden=self.home.root,
            programs=sandbox.program_paths(claude, env.get("PATH")),
        )

    def argv(self, name: str, sandboxed: bool = False) -> list[str]:
        """The harness's command line, with the paths it sees (in a sandbox: a
        container's)."""
        socket = self.home.agent_socket(name)
        paths = (socket, self.home.state_dir(name), self.etc_dir(name))
        if sandboxed:
            paths = (sandbox.RUN / socket.name, sandbox.STATE, sandbox.ETC)
        return [
            *hyperhive_command(),
            "harness",
            *("--socket", str(paths[0]), "--state", str(paths[1]), "--etc", str(paths[2])),
            "--exit-with-parent",
            "--lifeline",
            str(lifeline.read_end()),
        ]

    def write_etc(self, name: str) -> None:
        """The deployed policy as the harness reads it (nix/lib.nix renderPolicy and
        renderExtraMcp shapes: an option not declared is null, the harness's default)."""
        policy = deployed_policy(self.home, name)
        files = {
            "policy.json": {k: policy.get(k) for k in POLICY_KEYS},
            "extra-mcp.json": policy.get("extraMcpServers") or {},
        }
        etc = self.etc_dir(name)
        etc.mkdir(parents=True, exist_ok=True)
        for file, value in files.items():
            tmp = etc / f"{file}.new"
            tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, etc / file)

    def env(self, name: str, sandboxed: bool = False) -> dict[str, str]:
        """The harness's environment: the daemon's with the agent's variables added, or
        in a sandbox only its allow-list (sandbox.sandbox_env) and those."""
        env = {"HYPERHIVE_AGENT": name}
        if self.git_url:
            token = state_file(self.home, name).absolute()
            if sandboxed:
                token = sandbox.STATE / token.relative_to(self.home.state_dir(name).absolute())
            env["HYPERHIVE_GIT_URL"] = self.git_url
            env["HYPERHIVE_TOKEN_FILE"] = str(token)
        return sandbox.sandbox_env(os.environ, env) if sandboxed else {**os.environ, **env}

    def command(self, name: str) -> tuple[list[str], dict[str, str]]:
        """The command line and environment that start the agent's harness."""
        sandboxed = self.sandboxed()
        env = self.env(name, sandboxed)
        argv = self.argv(name, sandboxed)
        if sandboxed:
            argv = self.sandbox(name, env).command(argv)
        return argv, env

    # -- the processes -----------------------------------------------------------------

    def recorded_pid(self, name: str) -> int | None:
        """The pid in harness.pid if that process is alive and is this agent's harness
        (open: its socket is an argument; in a sandbox: bwrap's, its run directory is)."""
        try:
            pid = int(self.pid_file(name).read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        socket = self.home.agent_socket(name)
        ours = {str(socket).encode(), str(socket.parent).encode()}
        return pid if b"harness" in cmdline and ours & set(cmdline) and _alive(pid) else None

    def is_running(self, name: str) -> bool:
        with self.lock:
            current = self.running.get(name)
            if current is not None and current.proc.poll() is None:
                return True
        return self.recorded_pid(name) is not None

    def start(self, name: str, revision: str) -> bool:
        """Run the agent's harness at `revision`: nothing when it runs that one already, a
        restart when it runs another. True when a harness was started."""
        with self.lock:
            current = self.running.get(name)
            if current is not None and current.proc.poll() is None:
                if current.revision == revision:
                    return False
                log.info("%s: restarting the harness for revision %s", name, revision)
                self._stop_locked(name)
            elif current is not None:
                # exited, its reaper not through yet: it reports the crash, and the
                # supervisor restarts the harness after the backoff
                return False
            elif (stray := self.recorded_pid(name)) is not None:
                # left by a daemon that died before its harness noticed
                log.warning(
                    "%s: stopping a harness this daemon did not start (pid %d)", name, stray
                )
                self._stop_locked(name)
            self.write_etc(name)
            argv, env = self.command(name)
            logfile = self.log_file(name)
            logfile.parent.mkdir(parents=True, exist_ok=True)
            _rotate(logfile)
            with logfile.open("ab") as out:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                out.write(f"--- {stamp} harness of {name} starts at {revision}\n".encode())
                out.flush()
                proc = _launcher.submit(
                    subprocess.Popen,
                    argv,
                    cwd=self.home.state_dir(name),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    pass_fds=(lifeline.read_end(),),
                ).result()
            self.pid_file(name).write_text(f"{proc.pid}\n")
            self.running[name] = Running(proc, revision)
        threading.Thread(
            target=self._reap, args=(name, proc), name=f"harness-{name}", daemon=True
        ).start()
        log.info("%s: harness started (pid %d), log %s", name, proc.pid, logfile)
        return True

    def _reap(self, name: str, proc: subprocess.Popen) -> None:
        code = proc.wait()
        with self.lock:
            current = self.running.get(name)
            # A stop removes the pid file before it signals: still there means unasked.
            ours = current is not None and current.proc is proc
            crashed = ours and self._names(name, proc.pid)
            if ours:
                del self.running[name]
                # under the lock: no start of the same command line in between (a stop
                # did this itself)
                sandbox.kill_leftovers(b"".join(os.fsencode(a) + b"\0" for a in proc.args))
            if crashed:
                self.pid_file(name).unlink(missing_ok=True)
        _kill_group(proc.pid, signal.SIGKILL)  # what it left behind (a claude, MCP servers)
        if crashed:
            log.error("%s: the harness exited unexpectedly (status %d)", name, code)
            if self.on_exit is not None:
                try:
                    self.on_exit(name, code)
                except Exception:
                    log.exception("%s: reporting the harness exit failed", name)

    def _names(self, name: str, pid: int) -> bool:
        try:
            return int(self.pid_file(name).read_text().strip()) == pid
        except (OSError, ValueError):
            return False

    def stop(self, name: str) -> bool:
        """Stop the agent's harness (ours or one recorded by another process); True when
        one was running."""
        with self.lock:
            return self._stop_locked(name)

    def _stop_locked(self, name: str) -> bool:
        current = self.running.pop(name, None)
        pid = current.proc.pid if current is not None else self.recorded_pid(name)
        self.pid_file(name).unlink(missing_ok=True)  # first: the exit is asked for
        if pid is None or (current is not None and current.proc.poll() is not None):
            return False
        group, cmdline = sandbox.stop_group(pid), b""  # the harness's group, not bwrap's
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        _kill_group(group, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while (current.proc.poll() is None) if current is not None else _alive(pid):
            if time.monotonic() >= deadline:
                log.warning(
                    "%s: the harness ignored SIGTERM for %.0f s: killing it", name, STOP_SECONDS
                )
                break
            time.sleep(0.05)
        _kill_group(pid, signal.SIGKILL)
        if group != pid:  # the sandbox's pid 1, should bwrap have died before it could
            _kill_group(group, signal.SIGKILL)  # pass its own end on: the namespace ends
        if cmdline:
            sandbox.kill_leftovers(cmdline)
        if current is not None:
            current.proc.wait()
        log.info("%s: harness stopped", name)
        return True

    def stop_many(self, names: list[str]) -> list[str]:
        """Stop these agents' harnesses together: SIGTERM to every one, then one wait for
        all of them (SIGKILL after STOP_SECONDS). One by one, a daemon's stop with 200
        agents took longer than its graceful timeout (bench/swarm.py). Those that ran."""
        with self.lock:
            stopping, others = {}, []
            for name in names:
                current = self.running.get(name)
                if current is None:
                    others.append(name)  # recorded by another process, if at all
                    continue
                del self.running[name]
                self.pid_file(name).unlink(missing_ok=True)  # first: the exit is asked for
                if current.proc.poll() is None:
                    stopping[name] = current.proc
            for name in others:
                if self._stop_locked(name):
                    stopping[name] = None
            for proc in filter(None, stopping.values()):
                _kill_group(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_SECONDS
            ours = {name: proc for name, proc in stopping.items() if proc is not None}
            for name, proc in ours.items():
                try:
                    proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("%s: the harness ignored SIGTERM: killing it", name)
            for name, proc in ours.items():
                _kill_group(proc.pid, signal.SIGKILL)  # what it left behind too
                proc.wait()
                log.info("%s: harness stopped", name)
        return sorted(stopping)

    def tail(self, name: str, lines: int = 40) -> list[str]:
        """The last lines of the agent's harness log."""
        try:
            with self.log_file(name).open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL_BYTES))
                data = f.read()
        except FileNotFoundError:
            return []
        return data.decode(errors="replace").splitlines()[-lines:]


def _rotate(log: Path) -> None:
    """A log past MAX_LOG_BYTES becomes `<log>.1` (replacing the one before): the logs of
    an agent stay bounded however often it is restarted."""
    with contextlib.suppress(FileNotFoundError):
        if log.stat().st_size > MAX_LOG_BYTES:
            os.replace(log, log.with_name(log.name + ".1"))


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
