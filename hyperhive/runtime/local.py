"""The embedded runtime for any Linux machine: an agent is a directory on the host.

A build checks the config out into a staging directory, validates it (every `.nix` file
must parse when `nix-instantiate` is on PATH; `agent.nix` must exist), evaluates its
`hyperhive.*` policy (runtime/policy.py: a restriction it cannot evaluate fails the build)
and swaps it into `agents/<name>/deployed/` only when all of that succeeded; the policy
goes to `agents/<name>/policy.json` and the revision to `deployed.rev` with the swap.

`create` only makes the state directory; the agent exists in this runtime (a deployed
checkout) from its first successful `update`, which also creates it if `create` was
never called. `destroy` removes the deployed checkout, `deployed.rev` and `policy.json`.
"""

import shutil
from pathlib import Path

from hyperhive.gitstore.history import checkout
from hyperhive.gitstore.repos import open_repo
from hyperhive.home import Home
from hyperhive.runtime import policy, record
from hyperhive.runtime.base import BuildError, Emit
from hyperhive.runtime.stream import run_streamed


class LocalRuntime:
    def __init__(self, home: Home):
        self.home = home

    def create(self, name: str) -> None:
        self.home.state_dir(name).mkdir(parents=True, exist_ok=True)

    def update(self, name: str, rev: str, emit: Emit) -> None:
        if self.home.is_destroyed(name):
            raise BuildError(
                f"agent {name} was destroyed (its state is kept): it is not deployed again"
            )
        self.create(name)
        dest = self.home.deployed_dir(name)
        staging = dest.with_name("deployed.new")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            with record.staged(self.home, name, rev):
                emit(f"checking out {rev} into {staging}")
                files = checkout(open_repo(self.home.applied_dir(name)), rev.encode(), staging)
                emit(f"{len(files)} files")
                self._validate(staging, files, emit)
                policy.write_pending(self.home, name, policy.extract(staging, emit))
                self._swap(staging, dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        emit(f"deployed {rev} to {dest}")

    def destroy(self, name: str) -> None:
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
        for rel in sorted(f for f in files if f.endswith(".nix")):
            emit(f"$ nix-instantiate --parse {rel}")
            code = run_streamed([nix, "--parse", rel], emit, cwd=root)
            if code != 0:
                raise BuildError(f"{rel} does not parse (nix-instantiate exited {code})")

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
        return {"state": "deployed", "revision": revision}
