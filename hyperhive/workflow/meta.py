"""The meta repo: one commit per deploy, pinning every agent's deployed revision."""

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dulwich.object_store import tree_lookup_path
from dulwich.repo import Repo

from hyperhive.gitstore import refs
from hyperhive.gitstore.history import write_commit
from hyperhive.gitstore.repos import init_bare, open_repo
from hyperhive.home import Home
from hyperhive.names import format_target
from hyperhive.runtime.policy import deployed_policy
from hyperhive.workflow.lock import locked, transition_lock

log = logging.getLogger("hyperhive.meta")

MAIN = b"refs/heads/main"
PINS_FILE = "hyperhive.json"
LOCK_TIMEOUT = 300  # seconds: locking fetches each new revision from its applied repo
ACTOR = "hyperhive"


@dataclass(frozen=True)
class NixosInputs:
    """Where a NixOS host's meta flake finds nixpkgs and hyperhive's nix/ files."""

    source: str
    nixpkgs: str
    system: str = "x86_64-linux"


def nixos_inputs() -> NixosInputs | None:
    """Set by the host module (`HYPERHIVE_SOURCE`, `HYPERHIVE_NIXPKGS`); None elsewhere,
    where the meta flake only pins revisions."""
    source, nixpkgs = os.environ.get("HYPERHIVE_SOURCE"), os.environ.get("HYPERHIVE_NIXPKGS")
    if not (source and nixpkgs):
        return None
    return NixosInputs(source, nixpkgs, os.environ.get("HYPERHIVE_SYSTEM") or "x86_64-linux")


def render_flake(home: Home, pins: dict[str, dict], nixos: NixosInputs | None = None) -> str:
    """flake.nix pinning each agent's applied repo at its deployed revision; on a NixOS
    host its outputs are nix/meta-flake.nix's `nixosConfigurations.<name>`."""
    inputs = "".join(
        f'    "agent-{name}" = {{\n'
        f'      url = "git+file://{home.applied_dir(name)}?ref=main&rev={pin["rev"]}";\n'
        f"      flake = false;\n"
        f"    }};\n"
        for name, pin in sorted(pins.items())
    )
    if nixos is None:
        revisions = "".join(f'      "{n}" = "{p["rev"]}";\n' for n, p in sorted(pins.items()))
        outputs = (
            f"  outputs = inputs: {{\n    hyperhive.revisions = {{\n{revisions}    }};\n  }};\n"
        )
    else:
        inputs = (
            f'    nixpkgs.url = "path:{nixos.nixpkgs}";\n'
            f"    hyperhive = {{\n"
            f'      url = "path:{nixos.source}";\n'
            f"      flake = false;\n"
            f"    }};\n" + inputs
        )
        outputs = (
            '  outputs = inputs: import "${inputs.hyperhive}/nix/meta-flake.nix" {\n'
            "    inherit inputs;\n"
            "    agents = (builtins.fromJSON (builtins.readFile ./hyperhive.json)).agents;\n"
            f'    system = "{nixos.system}";\n'
            "  };\n"
        )
    return (
        "# Written by hyperhive on every deploy: the deployed revision of every agent.\n"
        "# Do not edit; propose a change to the agent's config repo instead.\n"
        "{\n"
        '  description = "hyperhive meta flake";\n'
        f"  inputs = {{\n{inputs}  }};\n"
        f"{outputs}"
        "}\n"
    )


def lock_flake(flake: bytes, previous_lock: bytes | None) -> bytes | None:
    """flake.lock for `flake`, starting from the previous lock so inputs already locked
    are kept (`nix flake lock` only adds, relocks changed and drops removed inputs)."""
    nix = shutil.which("nix")
    if nix is None:
        raise LockError("nix is not on PATH")
    with tempfile.TemporaryDirectory(prefix="hyperhive-meta-") as tmp:
        (Path(tmp) / "flake.nix").write_bytes(flake)
        if previous_lock:
            (Path(tmp) / "flake.lock").write_bytes(previous_lock)
        proc = subprocess.run(
            [
                nix,
                "--extra-experimental-features",
                "nix-command flakes",
                "flake",
                "lock",
                f"path:{tmp}",
            ],
            capture_output=True,
            text=True,
            timeout=LOCK_TIMEOUT,
        )
        if proc.returncode != 0:
            last = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            raise LockError(f"nix flake lock: {last[0]}")
        lock = Path(tmp) / "flake.lock"
        return lock.read_bytes() if lock.exists() else None  # no inputs: nothing to lock


class LockError(Exception):
    pass


def _files(home: Home, pins: dict[str, dict], previous_lock: bytes | None) -> dict[str, bytes]:
    """The meta tree: flake.nix, its lock (when nix can make it) and the pins."""
    flake = render_flake(home, pins, nixos_inputs()).encode()
    files = {
        "flake.nix": flake,
        PINS_FILE: (json.dumps({"agents": pins}, indent=2, sort_keys=True) + "\n").encode(),
    }
    try:
        if (lock := lock_flake(flake, previous_lock)) is not None:
            files["flake.lock"] = lock
    except (LockError, OSError, subprocess.SubprocessError) as e:
        log.error("meta flake.lock not updated: %s", e)
        if previous_lock:
            files["flake.lock"] = previous_lock  # stale; the next deploy with nix fixes it
    return files


def _read(repo: Repo, head: bytes, path: str) -> bytes | None:
    try:
        _, sha = tree_lookup_path(repo.__getitem__, repo[head].tree, path.encode())
    except KeyError:
        return None
    return repo[sha].data


def init(home: Home) -> None:
    repo = init_bare(home.meta_dir)
    commit = write_commit(repo, _files(home, {}, None), "init hive\n", ACTOR, [])
    refs.cas(repo, MAIN, None, commit)


def _pins(repo: Repo, head: bytes) -> dict[str, dict]:
    _, sha = tree_lookup_path(repo.__getitem__, repo[head].tree, PINS_FILE.encode())
    return json.loads(repo[sha].data)["agents"]


def pins(home: Home) -> dict[str, dict]:
    """Every agent's deployed `{"rev", "approval"}` as the meta repo's main records it."""
    repo = open_repo(home.meta_dir)
    return _pins(repo, repo.refs[MAIN])


def record_deploy(home: Home, name: str, approval_id: int, rev: str) -> bytes:
    """Commit the new pin of `name` on meta's main (compare-and-swap) and return the commit.
    A destroyed agent is never pinned again (its pin was dropped by `record_destroy`): main
    is returned unchanged."""
    repo = open_repo(home.meta_dir)
    with locked(transition_lock(home.meta_dir)):
        head = repo.refs[MAIN]
        if home.is_destroyed(name):
            log.warning("%s is destroyed: not pinning %s in meta", name, rev[:12])
            return head
        current = _pins(repo, head)
        now = int(time.time())  # the pin's time is its meta commit's time, to the second
        # The deployed policy travels with the pin, so the deploy log says what each agent
        # was allowed to do, and when it started running that revision.
        current[name] = {
            "rev": rev,
            "approval": approval_id,
            "time": now,
            "policy": deployed_policy(home, name),
        }
        target = format_target(name, approval_id)
        message = (
            f"deploy {target} {rev[:12]}\n\n"
            f"Agent: {name}\nApproval: {approval_id}\nRevision: {rev}\n"
        )
        files = _files(home, current, _read(repo, head, "flake.lock"))
        commit = write_commit(repo, files, message, ACTOR, [head], when=now)
        refs.cas(repo, MAIN, head, commit)
    return commit


def record_destroy(home: Home, name: str) -> bytes:
    """Commit "destroy NAME" on meta's main (compare-and-swap), dropping the agent's pin
    (if it had one), and return the commit."""
    repo = open_repo(home.meta_dir)
    with locked(transition_lock(home.meta_dir)):
        head = repo.refs[MAIN]
        current = _pins(repo, head)
        dropped = current.pop(name, None)
        was = f"Revision: {dropped['rev']}\n" if dropped else "Revision: none (never deployed)\n"
        message = f"destroy {name}\n\nAgent: {name}\n{was}"
        commit = write_commit(
            repo, _files(home, current, _read(repo, head, "flake.lock")), message, ACTOR, [head]
        )
        refs.cas(repo, MAIN, head, commit)
    return commit
