"""Benchmark of the checks of proposals (workflow/checks.py, daemon/checker.py), local
runtime, real nix-instantiate; each figure beside a reference measured in the same run.

(a) Proposal -> check result: `Approvals.propose` (which publishes the proposal's
    `state` event, as inside the daemon) until its `checked/<id>` tag exists, the check
    run by the daemon's CheckWorker following the event bus, for a config of 1, 10 and 50
    `.nix` files (goal: under 1 s for the small one). References: the bare evaluation of
    the same checkout, `nix-instantiate --eval --strict --json` of the policy expression
    (one process), and the commands a check runs, timed bare (one `nix-instantiate --parse`
    of every file, then that evaluation).
(b) A build already running (the daemon's BuildWorker) while 20 checks are queued at
    once: the build's time (its `Duration`) alone beside its time with the 20 checks
    submitted 50 ms after it started (same config, made slow with many files to parse),
    and the time the 20 checks took from their submission.

Run: .venv/bin/python bench/checks.py [--quick] [--repeat N]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from transitions import GIT_ENV, policy_eval_argv

from hyperhive.agents import init_hive
from hyperhive.daemon.checker import CheckWorker
from hyperhive.daemon.worker import BuildWorker
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime
from hyperhive.settings import Checks
from hyperhive.wire.events import EventBus
from hyperhive.workflow import checks
from hyperhive.workflow.approvals import Approvals

NAME = "manager"
NIX = shutil.which("nix-instantiate")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True
    ).stdout


def write_config(home: Home, files: int, salt: str) -> None:
    """agent.nix importing `files - 1` modules, each declaring a recipient."""
    config = home.config_dir(NAME)
    mods = [f"mod{i}.nix" for i in range(files - 1)]
    imports = " ".join(f"./{m}" for m in mods)
    (config / "agent.nix").write_text(
        f"{{ ... }}:\n{{\n  imports = [ {imports} ];\n"
        f'  hyperhive.allowedRecipients = [ "operator" ];\n  hyperhive.model = "{salt}";\n}}\n'
    )
    for i, m in enumerate(mods):
        (config / m).write_text(f'{{ ... }}: {{ hyperhive.allowedRecipients = [ "a{i}" ]; }}\n')
    git(config, "add", "-A")
    git(config, "commit", "-qm", f"config {salt}")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def row(who: str, label: str, values: list[float]) -> None:
    values = sorted(values)
    p50 = statistics.median(values)
    p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
    print(f"  {who:<4} {label:<58} p50 {ms(p50)}  p90 {ms(p90)}  (n={len(values)})")


def wait_tag(home: Home, approval_id: int, timeout: float = 120) -> float:
    ref = home.applied_dir(NAME) / "refs" / "tags" / "checked" / str(approval_id)
    deadline = time.monotonic() + timeout
    while not ref.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no check of {NAME}#{approval_id} within {timeout}s")
        time.sleep(0.002)
    return time.monotonic()


def references(home: Home, files: int) -> tuple[float, float]:
    """The bare evaluation, and parse + evaluation, of the deployed-to-be checkout."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        git(home.config_dir(NAME), "archive", "HEAD", "-o", str(root / "c.tar"))
        subprocess.run(["tar", "-xf", "c.tar"], cwd=root, check=True)
        (root / "c.tar").unlink()
        argv = policy_eval_argv(NIX, root / "agent.nix")
        env = {**os.environ, "NIX_PATH": ""}
        began = time.monotonic()
        subprocess.run(argv, cwd=root, env=env, check=True, capture_output=True)
        evaluation = time.monotonic() - began
        began = time.monotonic()
        files = sorted(f.name for f in root.glob("*.nix"))
        subprocess.run([NIX, "--parse", *files], cwd=root, check=True, capture_output=True)
        subprocess.run(argv, cwd=root, env=env, check=True, capture_output=True)
        return evaluation, time.monotonic() - began


def proposal_to_result(repeat: int, sizes: list[int]) -> None:
    print("(a) proposal -> check result, local runtime (CheckWorker on the event bus)")
    for files in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            # the home carries the bus, as in the daemon: proposals publish on it
            home = Home(Path(tmp) / "hive", bus=EventBus())
            runtime = LocalRuntime(home)
            init_hive(home, runtime, "operator")
            worker = CheckWorker(home, runtime, None, Checks(workers=2, timeout_seconds=120))
            worker.start(home.bus)
            ours, bare, whole = [], [], []
            try:
                for i in range(repeat):
                    write_config(home, files, f"m{i}")
                    began = time.monotonic()
                    a = Approvals(home, NAME).propose("HEAD", "bench")
                    ours.append(wait_tag(home, a.id) - began)
                    check = checks.latest(home, NAME, a.id)
                    assert check.result == "passed", check.reason
                    e, w = references(home, files)
                    bare.append(e)
                    whole.append(w)
            finally:
                worker.stop()
            row("ours", f"{files:>2} .nix files: propose -> checked/<id> tag", ours)
            row("ref", f"{files:>2} .nix files: nix-instantiate --eval (policy) alone", bare)
            row("ref", f"{files:>2} .nix files: --parse all + --eval (the check's cmds)", whole)


def submit_all(
    worker: CheckWorker, pending: list[int], done: threading.Event, took: list[float]
) -> None:
    """Queue a check of every pending proposal at once; time until all are done."""
    began = time.monotonic()
    for approval_id in pending:
        worker.submit(NAME, approval_id, rerun=True)
    while worker.status()["queued"] or worker.status()["running"]:
        time.sleep(0.01)
    took.append(time.monotonic() - began)
    done.set()


def build_beside_checks(repeat: int, files: int, queued: int) -> None:
    print(f"(b) a running build ({files} .nix files) with {queued} checks queued at once")
    alone, beside, checks_took = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp) / "hive")
        runtime = LocalRuntime(home)
        init_hive(home, runtime, "operator")
        (home.applied_dir(NAME) / "hooks" / "post-receive").unlink()  # no deploy by hook
        builds = BuildWorker(home, runtime)  # as in the daemon: checks wait for its builds
        worker = CheckWorker(
            home,
            runtime,
            None,
            Checks(workers=2, timeout_seconds=300),
            building=lambda: bool(builds.status()["running"]),
        )
        worker.start()  # no bus: only what is submitted
        pending = []
        for i in range(queued):  # the proposals the checks will be of
            write_config(home, files, f"q{i}")
            pending.append(Approvals(home, NAME).propose("HEAD", "bench").id)
        try:
            for i in range(repeat * 2):
                with_checks = i % 2 == 1
                write_config(home, files, f"b{i}")
                approvals = Approvals(home, NAME)
                a = approvals.propose("HEAD", "bench")
                approvals.approve(a.id, "bench")
                done = threading.Event()
                if with_checks:  # once the build runs
                    args = (worker, pending, done, checks_took)
                    threading.Timer(0.05, submit_all, args).start()
                builds.submit(NAME, a.id)
                while Approvals(home, NAME).get(a.id).state not in ("deployed", "failed"):
                    time.sleep(0.005)
                result = Approvals(home, NAME).get(a.id)
                assert result.state == "deployed", result.states
                took = float(result.states["deployed"].trailers["Duration"].rstrip("s"))
                (beside if with_checks else alone).append(took)
                if with_checks:
                    done.wait(600)
        finally:
            worker.stop()
            builds.stop()
    row("ref", f"build alone ({files} files)", alone)
    row("ours", f"build with {queued} checks queued at its start", beside)
    row("ours", f"the {queued} checks, submit -> all done (2 workers)", checks_took)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: small and few")
    parser.add_argument("--repeat", type=int, default=None)
    args = parser.parse_args()
    if NIX is None:
        print("nix-instantiate is not on PATH: the checks would not evaluate", file=sys.stderr)
        return 1
    repeat = args.repeat or (2 if args.quick else 10)
    print(f"host load average: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cpus)")
    proposal_to_result(repeat, [1] if args.quick else [1, 10, 50])
    build_beside_checks(1 if args.quick else 3, 5 if args.quick else 40, 4 if args.quick else 20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
