"""A stand-in for nixos-container (and the runtime's injectable steps) for the tests of
the nixos-container runtime: test_nixos_container.py's deploys and test_checks_nixos.py's
checks."""

import os
from pathlib import Path

import pytest

from hyperhive.home import Home
from hyperhive.runtime import ownership
from hyperhive.runtime.nixos_container import NixosContainerRuntime
from support.hive import fake_program

NAME = "manager"
CONTAINER = "h-manager"
BASE = 655360
SEP = "\x1f"

# A stand-in for nixos-container (nixpkgs' nixos-container.pl): containers are conf files
# in $FAKE_NC/conf, a running one has $FAKE_NC/running/<c>; `create` and `update` "build"
# (a line, a wait for $FAKE_NC/release when $FAKE_NC/gate exists, a line) and
# fail like nix does when $FAKE_NC/broken exists.
FAKE_NIXOS_CONTAINER = r"""
for a in "$@"; do printf '%s\037' "$a"; done >> "$FAKE_NC/argv"; echo >> "$FAKE_NC/argv"
action=$1; c=$2; conf="$FAKE_NC/conf/$c.conf"
build() {
    echo "building the system configuration of $c..."
    if [ -e "$FAKE_NC/gate" ]; then  # a test that looks at the build while it runs
        while [ ! -e "$FAKE_NC/release" ]; do sleep 0.02; done
    fi
    if [ -e "$FAKE_NC/broken" ]; then
        echo "error: attribute 'nonexistent' missing" >&2
        echo "       at /nix/store/xxx-source/agent.nix:3:5:" >&2
        echo "nixos-container: failed to build container from flake" >&2
        return 1
    fi
    echo "built /nix/store/aaaa-nixos-system-$c"
}
case "$action" in
create)
    [ -e "$conf" ] && { echo "nixos-container: container '$c' already exists" >&2; exit 1; }
    mkdir -p "$FAKE_NC/conf"
    printf 'PRIVATE_NETWORK=1\nHOST_ADDRESS=10.233.1.1\nLOCAL_ADDRESS=10.233.1.2\n' > "$conf"
    echo "host IP is 10.233.1.1, container IP is 10.233.1.2" >&2
    build || { rm -f "$conf"; exit 1; } ;;
update)
    [ -e "$conf" ] || { echo "nixos-container: container '$c' does not exist" >&2; exit 1; }
    build || exit 1
    [ -e "$FAKE_NC/running/$c" ] && echo "reloading container..." >&2
    exit 0 ;;
status)
    if [ ! -e "$conf" ]; then
        echo gone; echo "nixos-container: container '$c' does not exist" >&2; exit 2
    fi
    [ -e "$FAKE_NC/running/$c" ] && echo up || echo down ;;
start)
    [ -e "$conf" ] || exit 1
    [ -e "$FAKE_NC/nostart" ] && { echo "Job for container@$c.service failed" >&2; exit 1; }
    mkdir -p "$FAKE_NC/running"; touch "$FAKE_NC/running/$c" ;;
stop) rm -f "$FAKE_NC/running/$c" ;;
destroy) [ -e "$conf" ] || exit 0; rm -f "$conf" "$FAKE_NC/running/$c" ;;
root-login) echo "tty: $(tty)"; read -r line; echo "got: $line" ;;
*) echo "nixos-container: unknown action '$action'" >&2; exit 1 ;;
esac
"""


class Fake:
    def __init__(self, root: Path):
        self.root = root

    def calls(self) -> list[list[str]]:
        path = self.root / "argv"
        if not path.exists():
            return []
        return [line.split(SEP)[:-1] for line in path.read_text().splitlines()]

    def actions(self) -> list[str]:
        return [c[0] for c in self.calls() if c[0] != "status"]

    def flag(self, name: str, on: bool = True) -> None:
        path = self.root / name
        if on:
            path.touch()
        else:
            path.unlink(missing_ok=True)

    def conf(self) -> str:
        return (self.root / "conf" / f"{CONTAINER}.conf").read_text()


@pytest.fixture
def fake(tmp_path: Path, monkeypatch) -> Fake:
    root = tmp_path / "fake-nc"
    root.mkdir()
    fake_program(tmp_path / "bin", "nixos-container", FAKE_NIXOS_CONTAINER)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NC", str(root))
    return Fake(root)


class Recorder:
    """Fakes for the injectable steps: policy evaluation, uid base, chown."""

    def __init__(self, policy: object = None):
        self.policy = {"allowedRecipients": ["operator"]} if policy is None else policy
        self.evaluated: list[tuple[str, str]] = []
        self.bases: list[str] = []
        self.chowned: list[list[ownership.Chown]] = []

    def evaluate(self, flake, name, emit):
        self.evaluated.append((flake, name))
        emit("evaluating hyperhive.* (fake)")
        return self.policy

    def base(self, container):
        self.bases.append(container)
        return BASE

    def chown(self, chowns):
        self.chowned.append(chowns)
        return len(chowns)


def make_runtime(home: Home, fake: Fake, rec: Recorder, **kw) -> NixosContainerRuntime:
    return NixosContainerRuntime(
        home,
        policy_eval=rec.evaluate,
        uid_base=rec.base,
        chown=rec.chown,
        conf_dir=fake.root / "conf",
        **kw,
    )
