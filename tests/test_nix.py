"""Every .nix file we ship or write parses with the real nix-instantiate, and the meta
flake we write evaluates to the pins we recorded."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.hive import git

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
    from support.hive import commit_config

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


# -- the NixOS VM test (nix/tests/hive.nix): it needs KVM and nixpkgs, so here it is
# evaluated against stubs: its script must compile, its agent.nix files parse, and what the
# VM gets in its store must be there.

HIVE_TEST_STUBS = """
let
  drv = name: {
    outPath = "/nix/store/stub-${name}";
    inherit name;
    inputDerivation = "/nix/store/stub-${name}-inputs";
  };
  pkgs = {
    lib = {
      concatMapStringsSep = sep: f: l: builtins.concatStringsSep sep (map f l);
      concatMap = f: l: builtins.concatLists (map f l);
      mkForce = x: x;
    };
    stdenv = drv "stdenv" // { hostPlatform.system = "x86_64-linux"; };
    python3 = drv "python3";
    writeScriptBin = name: text: drv "${name}-script" // { inherit text; };
    writeText = name: text: drv "${name}-${builtins.hashString "sha1" text}" // { inherit text; };
    runCommand = name: env: cmd: drv "${name}-${builtins.hashString "sha1" cmd}";
    testers.runNixOSTest = test: test;
  } // builtins.listToAttrs (map (n: { name = n; value = drv n; })
    [ "git" "jq" "perl" "stdenvNoCC" "emptyDirectory" ]);
  nixpkgs.lib.nixosSystem = args: {
    config.system.build = {
      toplevel = drv "toplevel-${builtins.hashString "sha1" (builtins.toJSON args.modules)}";
      etc = drv "etc";
    };
  };
  test = import @HIVE@ { inherit pkgs nixpkgs; module = "/stub/module.nix"; };
  host = test.nodes.host { inherit (pkgs) lib; inherit pkgs; };
in {
  inherit (test) name testScript;
  imports = host.imports;
  enable = host.services.hyperhive.enable;
  paths = map toString host.virtualisation.additionalPaths;
  before = test.passthru.before.text;
  after = test.passthru.after.text;
  claude = test.passthru.fakeClaude.text;
  nix = host.nix.settings;
}
"""


def test_the_vm_test_evaluates_and_its_script_compiles(tmp_path):
    hive = ROOT / "nix" / "tests" / "hive.nix"
    got = json.loads(
        nix("--eval", "--strict", "--json", "-E", HIVE_TEST_STUBS.replace("@HIVE@", str(hive)))
    )
    assert (got["name"], got["imports"], got["enable"]) == (
        "hyperhive",
        ["/stub/module.nix"],
        True,
    )
    compile(got["testScript"], "testScript", "exec")  # the driver's Python
    script = got["testScript"]
    assert "nixos-container run h-worker -- cat /etc/hyperhive/policy.json" in script
    # both agent.nix versions parse, name the fake claude and differ in the policy only
    for which, recipients in (("before", '[ "operator" "manager" ]'), ("after", '[ "manager" ]')):
        (tmp_path / f"{which}.nix").write_text(got[which])
        nix("--parse", str(tmp_path / f"{which}.nix"))
        assert f"hyperhive.allowedRecipients = {recipients};" in got[which]
        assert 'hyperhive.claude = "/nix/store/stub-claude-script/bin/claude";' in got[which]
    # the fake claude is this file, run by a plain Python (it speaks MCP with the stdlib)
    fake = (ROOT / "nix" / "tests" / "fake-claude.py").read_text()
    assert got["claude"].startswith("#!/nix/store/stub-python3/bin/python3\n")
    assert fake.strip() in got["claude"]
    imported = {
        alias.name.partition(".")[0]
        for node in ast.walk(ast.parse(fake))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module)])
    }
    assert imported and imported <= sys.stdlib_module_names, imported - sys.stdlib_module_names
    # offline: the containers' closures (two configs, distinct) and builders are in the store
    tops = [p for p in got["paths"] if p.startswith("/nix/store/stub-toplevel-")]
    assert len(set(tops)) == 4 and "/nix/store/stub-claude-script" in got["paths"]
    assert got["nix"] == {"substituters": [], "flake-registry": ""}


def test_the_flake_exposes_the_vm_test():
    text = (ROOT / "flake.nix").read_text()
    assert "checks.x86_64-linux.hive = import ./nix/tests/hive.nix {" in text
