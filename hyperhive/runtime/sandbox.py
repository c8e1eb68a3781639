"""The local runtime's wall around an agent: a bubblewrap (`bwrap`) sandbox.

An agent's harness (and so its `claude`, the MCP servers and every command they run) and
its web terminal start inside one, built from the agent's policy and the hive's home:

- read-only: the system (`/usr` and the `/bin`, `/lib*` beside it, the parts of `/etc` a
  program needs), the Python environment that runs `hyperhive` (the venv, its base
  interpreter, and the source tree of an editable install: all resolved, symlinks too) and
  the directory of the `claude` the policy names (resolved the same way);
- read-write: the agent's state directory at `/state` and a fresh, private `/tmp` (and
  an empty `/run`); everything else, `/` itself included, is read-only;
- the agent's run directory (`agent.sock`, `git.sock`) at `/run/hyperhive` and its deployed
  policy (`policy.json`, `extra-mcp.json`) at `/etc/hyperhive`, both read-only: the paths
  a container has, so the harness runs with its defaults;
- nothing else: not the rest of the hive home (covered by an empty tmpfs should a mount
  above hold it), no other agent, not the daemon's HOME;
- new pid, ipc, uts (hostname = the agent's name), mount and user namespaces;
  `--die-with-parent` (the daemon gone, everything in it is killed), `--new-session`;
  as root, uid 65534 inside, every capability dropped (`--cap-drop ALL`);
- the network is the host's: the model API needs it.

The environment comes from an allow-list (`sandbox_env`), handed to bwrap as its own
environment, which it passes on: not `--setenv`, whose values would sit in bwrap's
command line, which every user of the host can read (an API key).
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hyperhive import resources
from hyperhive.errors import SandboxUnavailable

STATE = Path("/state")  # where the agent's state is inside, as in a container
RUN = Path("/run/hyperhive")  # its agent.sock and git.sock
ETC = Path("/etc/hyperhive")  # policy.json, extra-mcp.json
PACKAGE = "bubblewrap"  # the Debian package that has bwrap
ROOT_UID = 65534  # who an agent is inside when the daemon runs as root (nobody)
PROBE_SECONDS = 10.0
CHILD_SECONDS = 5.0  # a bwrap just started has its pid 1 and command within this

# The parts of /etc a program needs: names, TLS, time, the dynamic linker, Debian's
# alternatives (/usr/bin/awk is a link through /etc/alternatives), a login shell's files.
ETC_FILES = (
    "resolv.conf",
    "hosts",
    "host.conf",
    "gai.conf",
    "nsswitch.conf",
    "passwd",
    "group",
    "localtime",
    "timezone",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "profile",
    "profile.d",
    "bash.bashrc",
    "inputrc",
    "gitconfig",
    "mime.types",
    "os-release",
    "terminfo",
)
SYSTEM_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")  # beside /usr

ENV_NAMES = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "COLORTERM",
        *(f"{p}_proxy" for p in ("http", "https", "ftp", "all", "no")),
        *(f"{p}_PROXY" for p in ("HTTP", "HTTPS", "FTP", "ALL", "NO")),
    }
)
ENV_PREFIXES = ("HYPERHIVE_", "ANTHROPIC_", "CLAUDE_", "LC_")


def refusal(reason: str, settings_file: Path | str = "hyperhive.toml") -> str:
    """The one line `hyperhive up` and a start say when they cannot sandbox."""
    return (
        f"cannot sandbox the agents: {reason}; install the Debian package `{PACKAGE}`, "
        f"or run them unsandboxed with `[local] sandbox = false` in {settings_file}"
    )


def bwrap() -> str:
    """bwrap's path, or SandboxUnavailable."""
    found = shutil.which("bwrap")
    if found is None:
        raise SandboxUnavailable("bwrap is not on PATH")
    return found


def check() -> None:
    """Make a sandbox as an agent's would be (its namespaces, a read-only system) and run
    `true` in it; SandboxUnavailable with bwrap's own words when that fails."""
    argv = [bwrap(), *_namespaces("probe"), "--ro-bind", "/", "/", "--proc", "/proc", "true"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SandboxUnavailable(f"bwrap cannot run: {e}") from None
    if proc.returncode != 0:
        said = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise SandboxUnavailable(f"bwrap cannot create its namespaces here ({said})")


def _namespaces(hostname: str) -> list[str]:
    args = ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    args += ["--hostname", hostname, "--die-with-parent", "--new-session"]
    if os.geteuid() == 0:  # root stays host root in the user namespace: not root inside
        args += ["--uid", str(ROOT_UID), "--gid", str(ROOT_UID), "--cap-drop", "ALL"]
    return args


def python_paths() -> list[Path]:
    """What the running `hyperhive` needs to run again: the interpreter's prefixes (a venv
    and its base), the resolved interpreter, and the source tree of an editable install
    (the package and prompts/ beside it)."""
    found = [Path(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)]
    found += [Path(sys.executable).parent, Path(os.path.realpath(sys.executable)).parent]
    found.append(resources.ROOT)
    return found


def program_paths(program: str | None, path_env: str | None) -> list[Path]:
    """The directory of `program` (absolute, or looked up on `path_env`) and of what it
    resolves to: a `claude` that is a link into its package finds that package."""
    if program is None:
        return []
    found = program if os.path.isabs(program) else shutil.which(program, path=path_env)
    if found is None:
        return []
    return [Path(found).parent, Path(os.path.realpath(found)).parent]


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """Absolute, existing paths, each given once and none inside another."""
    out: list[Path] = []
    for p in sorted({Path(os.path.abspath(p)) for p in paths if os.path.exists(p)}):
        if not any(p == o or p.is_relative_to(o) for o in out):
            out.append(p)
    return out


def sandbox_env(environ: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The allow-listed part of `environ` (PATH, LANG, TERM, proxies, `HYPERHIVE_*`,
    `ANTHROPIC_*`, `CLAUDE_*`, `LC_*`), HOME = /state, then `extra`."""
    env = {k: v for k, v in environ.items() if k in ENV_NAMES or k.startswith(ENV_PREFIXES)}
    env.setdefault("PATH", os.defpath)
    env["HOME"] = str(STATE)
    env.update(extra)
    return env


@dataclass(frozen=True)
class Sandbox:
    """One agent's sandbox: its host directories and what else it may read."""

    name: str
    state: Path  # the agent's state: /state, read-write
    run: Path  # its run directory: /run/hyperhive, read-only
    etc: Path  # its deployed policy: /etc/hyperhive, read-only
    hidden: Path  # the hive home: never visible, even below a read-only mount
    programs: list[Path] = field(default_factory=list)  # the claude's directories

    def mounts(self) -> list[str]:
        """bwrap's arguments for the file system (order matters: later covers earlier)."""
        args = ["--ro-bind", "/usr", "/usr"]
        for name in SYSTEM_LINKS:
            host = Path("/") / name
            if host.is_symlink():  # merged /usr (Debian 12 on): keep the link
                args += ["--symlink", os.readlink(host), str(host)]
            elif host.is_dir():
                args += ["--ro-bind", str(host), str(host)]
        for name in ETC_FILES:
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        # before the binds below: one of them may be under /tmp (a test's claude)
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run"]
        shared = [*python_paths(), *self.programs]
        if any(os.path.realpath(p).startswith("/nix/store/") for p in shared):
            shared.append(Path("/nix/store"))  # a Nix closure: the store is read-only anyway
        bound = _outermost([*shared, *map(os.path.realpath, shared)])
        for path in bound:  # what /usr holds is there already; / itself never
            real = Path(os.path.realpath(path))
            if real != Path("/") and not real.is_relative_to("/usr"):
                args += ["--ro-bind", str(path), str(path)]
        hidden = Path(os.path.realpath(self.hidden))
        if any(hidden.is_relative_to(p) for p in bound):
            args += ["--tmpfs", str(hidden)]
        args += ["--ro-bind", str(self.run), str(RUN)]
        args += ["--ro-bind", str(self.etc), str(ETC)]
        args += ["--bind", str(self.state), str(STATE), "--chdir", str(STATE)]
        # bwrap's root is a tmpfs of its own: read-only too, so /etc, /usr's siblings and
        # the rest take no writes (only /state, /tmp and /run do)
        return [*args, "--remount-ro", "/"]

    def command(self, argv: list[str]) -> list[str]:
        """`argv` (in-sandbox paths) run inside this sandbox; with none, the command line
        that runs what is put after it."""
        return [bwrap(), *_namespaces(self.name), *self.mounts(), "--", *argv]


def stop_group(pid: int) -> int:
    """The process group to ask to stop the command that `pid` runs: `pid`'s own, or
    when `pid` is a bwrap of ours, that of the bwrap that is pid 1 inside: `--new-session`
    made it a session and group of its own, which the command it forks is in. Pid 1 of a
    namespace ignores the signal, the command gets it. Signalled itself, the outer bwrap
    would just die and its sandbox be killed with it.

    A bwrap just started is waited for (up to CHILD_SECONDS) until its pid 1 leads its
    group and has forked the command: a signal before would miss the command."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "bwrap":
            return pid
    except OSError:
        return pid
    deadline = time.monotonic() + CHILD_SECONDS
    while True:
        children = _children(pid)
        if len(children) == 1 and _leads_its_group(children[0]) and _children(children[0]):
            return children[0]
        if time.monotonic() >= deadline:
            return pid
        time.sleep(0.01)


def kill_leftovers(cmdline: bytes) -> None:
    """SIGKILL what is left of a sandbox whose bwrap died (killed right after its start)
    before its pid 1 had armed --die-with-parent: that pid 1 runs bwrap's very command line
    (`cmdline`, as /proc has it), and the namespace ends with it.

    Only an orphan is left over: a process in another pid namespace than ours (a bwrap
    is in ours) whose parent does not run that command line (a live sandbox's pid 1 is
    its bwrap's child). A harness started anew with the same command line, by this daemon
    or another, is spared whenever this runs."""
    if os.path.basename(cmdline.split(b"\0", 1)[0]) != b"bwrap":
        return
    ours = os.readlink("/proc/self/ns/pid")
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "cmdline").read_bytes() != cmdline or os.readlink(proc / "ns/pid") == ours:
                continue
            if Path(f"/proc/{_parent(int(proc.name))}/cmdline").read_bytes() == cmdline:
                continue
            os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (which may hold spaces and ")"):
    [0] the state, [1] the parent's pid, [2] the process group."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _parent(pid: int) -> int:
    return int(_stat(pid)[1])


def _leads_its_group(pid: int) -> bool:
    try:
        return int(_stat(pid)[2]) == pid
    except (OSError, IndexError):
        return False


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if _parent(int(proc.name)) == pid:
                out.append(int(proc.name))
        except (OSError, IndexError):
            continue
    return out
