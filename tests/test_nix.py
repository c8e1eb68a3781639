"""Every .nix file we ship or write parses with the real nix-instantiate, and the meta
flake we write evaluates to the pins we recorded."""

import json
import subprocess
from pathlib import Path

import pytest
from conftest import git

from hyperhive.resources import ROOT
from hyperhive.workflow import meta
from hyperhive.workflow.approvals import Approvals


def nix(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["nix-instantiate", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


SHIPPED = sorted(p for p in ROOT.rglob("*.nix") if ".venv" not in p.parts and ".git" not in p.parts)


def test_something_is_shipped():
    assert ROOT / "nix" / "agent-template.nix" in SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_nix_parses(path):
    nix("--parse", str(path))


def test_new_agent_config_parses(home):
    nix("--parse", str(home.config_dir("manager") / "agent.nix"))


def test_meta_flake_pins_evaluate(home, tmp_path):
    approvals = Approvals(home, "manager")
    approvals.approve(1, "operator")  # the shipped hook deploys it
    pins = meta.pins(home)
    assert pins["manager"]["rev"] == approvals.deployed_commit()
    checkout = tmp_path / "meta"
    git(tmp_path, "clone", "-q", str(home.meta_dir), str(checkout))
    nix("--parse", "flake.nix", cwd=checkout)
    revisions = nix(
        "--eval",
        "--strict",
        "--json",
        "-E",
        "((import ./flake.nix).outputs {}).hyperhive.revisions",
        cwd=checkout,
    )
    assert json.loads(revisions) == {"manager": pins["manager"]["rev"]}
    url = nix(
        "--eval",
        "--strict",
        "--json",
        "-E",
        '(import ./flake.nix).inputs."agent-manager".url',
        cwd=checkout,
    )
    rev = pins["manager"]["rev"]
    pinned = f"refs/hyperhive/pins/{rev}"
    assert json.loads(url) == f"git+file://{home.applied_dir('manager')}?ref={pinned}&rev={rev}"
    # the ref the input names exists and is the revision itself (what Nix < 2.20 fetches)
    assert git(home.applied_dir("manager"), "rev-parse", pinned).strip() == rev


def test_render_flake_quotes_every_name(home):
    # Agent names may be Nix keywords; quoted attribute names keep the flake valid.
    pins = {"in": {"rev": "a" * 40, "approval": 1}, "let": {"rev": "b" * 40, "approval": 2}}
    text = meta.render_flake(home, pins)
    out = subprocess.run(
        [
            "nix-instantiate",
            "--eval",
            "--strict",
            "--json",
            "-E",
            f"(({text}).outputs {{}}).hyperhive.revisions",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert json.loads(out) == {"in": "a" * 40, "let": "b" * 40}


def test_meta_flake_is_locked_and_relocked_without_bumping(home, tmp_path, runtime):
    from conftest import commit_config

    from hyperhive.agents import create_agent

    Approvals(home, "manager").approve(1, "operator")
    create_agent(home, "coder", runtime, "operator")
    Approvals(home, "coder").approve(1, "operator")
    lock = json.loads(git(home.meta_dir, "show", "main:flake.lock"))
    manager_node = lock["nodes"]["agent-manager"]
    assert manager_node["locked"]["rev"] == meta.pins(home)["manager"]["rev"]
    commit_config(home, "coder", {"agent.nix": "{ ... }: { }\n"}, "change coder")
    a = Approvals(home, "coder").propose("HEAD", "operator")
    Approvals(home, "coder").approve(a.id, "operator")
    relocked = json.loads(git(home.meta_dir, "show", "main:flake.lock"))
    assert relocked["nodes"]["agent-manager"] == manager_node  # untouched
    assert relocked["nodes"]["agent-coder"]["locked"]["rev"] == meta.pins(home)["coder"]["rev"]
    # The committed lock is what nix itself accepts for this flake.
    checkout = tmp_path / "meta-check"
    git(tmp_path, "clone", "-q", str(home.meta_dir), str(checkout))
    subprocess.run(
        [
            "nix",
            "--extra-experimental-features",
            "nix-command flakes",
            "flake",
            "lock",
            "--no-update-lock-file",
            f"path:{checkout}",
        ],
        check=True,
        capture_output=True,
    )
