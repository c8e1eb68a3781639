"""What a process sees from where it runs (tests/test_sandbox.py runs it in an agent's
sandbox: as the policy's `claude` before the fake one, and in the agent's terminal).

argv: a JSON spec, then the file to write the report to (JSON).

spec: {"read": [paths], "write": [paths], "kill": [pids], "agent": name, "list": [dirs]}
report: per path/pid "ok" or the error's errno name, the uid, the environment's names,
whether it can write /tmp/sandbox-probe-<report file name>, the processes it can see
(pid → command line), what agent.sock says to whoami and the first line git.sock's
daemon answers to a git request.
"""

import contextlib
import errno
import json
import os
import socket
import sys
from pathlib import Path

from hyperhive.daemon import hostsock


def attempt(fn) -> str:
    try:
        fn()
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    return "ok"


def git_first_line(agent: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect("/run/hyperhive/git.sock")
        s.sendall(
            f"GET /git/{agent}/config.git/info/refs?service=git-upload-pack HTTP/1.0\r\n"
            "Host: hive\r\n\r\n".encode()
        )
        return s.makefile("rb").readline().decode().strip()


def main() -> None:
    spec = json.loads(sys.argv[1])
    report: dict = {"uid": os.getuid(), "env": sorted(os.environ), "cwd": os.getcwd()}
    report["read"] = {p: attempt(lambda p=p: Path(p).read_bytes()) for p in spec["read"]}
    report["write"] = {p: attempt(lambda p=p: Path(p).write_text("x")) for p in spec["write"]}
    marker = f"/tmp/sandbox-probe-{Path(sys.argv[2]).name}"  # a /tmp of its own
    report["tmp"] = attempt(lambda: Path(marker).write_text("x"))
    report["kill"] = {str(pid): attempt(lambda pid=pid: os.kill(pid, 0)) for pid in spec["kill"]}
    report["list"] = {}
    for d in spec.get("list", []):
        try:
            report["list"][d] = sorted(os.listdir(d))
        except OSError as e:
            report["list"][d] = errno.errorcode.get(e.errno, str(e.errno))
    procs = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # it ended meanwhile
                procs[entry.name] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    report["procs"] = procs
    try:
        report["whoami"] = hostsock.call("/run/hyperhive/agent.sock", {"op": "whoami"})["name"]
    except Exception as e:  # what went wrong is the report
        report["whoami"] = f"error: {e}"
    try:
        report["git"] = git_first_line(spec["agent"])
    except OSError as e:
        report["git"] = f"error: {e}"
    Path(sys.argv[2]).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
