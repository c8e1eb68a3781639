"""The Nix side of NixOS deploys, evaluated with the real nix-instantiate and no nixpkgs:
nix/lib.nix's pure functions, harness-base.nix and host-module.nix called with a small stub
of nixpkgs's `lib` (mkOption, types, mkIf …), and the meta flake's outputs with a stub
`nixosSystem`. What only a real NixOS evaluation can show is listed in docs/nixos.md."""

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from support.nix import STUB_LIB, STUB_PKGS, NixError, host, nix_eval, nix_str

from hyperhive.harness.notes import DEFAULT_COMPACT_BYTES
from hyperhive.policy import KNOWN_OPTIONS, POLICY_KEYS, normalize
from hyperhive.resources import NIX_DIR, ROOT
from hyperhive.runtime.nixos_container import AGENT_GID, AGENT_UID

SHIPPED = [
    NIX_DIR / "lib.nix",
    NIX_DIR / "harness-base.nix",
    NIX_DIR / "host-module.nix",
    NIX_DIR / "meta-flake.nix",
    NIX_DIR / "package.nix",
    NIX_DIR / "agent-template.nix",
    ROOT / "flake.nix",
]


def lib(call: str) -> object:
    return nix_eval(f"let l = import {NIX_DIR / 'lib.nix'}; in {call}")


# -- every file parses ------------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_nix_parses(path):
    subprocess.run(["nix-instantiate", "--parse", str(path)], check=True, capture_output=True)


# -- lib.nix: extra-mcp.json ------------------------------------------------------------


def test_extra_mcp_two_servers_with_defaults():
    servers = {
        "search": {"command": "/bin/search", "args": ["--fast"], "env": {"K": "v"}},
        "fetch": {"command": "/bin/fetch", "allowedTools": ["fetch", "head"]},
    }
    assert lib(f"l.renderExtraMcp {nix_str(servers)}") == {
        "search": {
            "command": "/bin/search",
            "args": ["--fast"],
            "env": {"K": "v"},
            "allowedTools": ["*"],
        },
        "fetch": {
            "command": "/bin/fetch",
            "args": [],
            "env": {},
            "allowedTools": ["fetch", "head"],
        },
    }


def test_extra_mcp_allowed_tools_default_is_star():
    rendered = lib('l.renderExtraMcp { one.command = "x"; }')
    assert rendered == {"one": {"command": "x", "args": [], "env": {}, "allowedTools": ["*"]}}


def test_extra_mcp_key_hyperhive_is_rendered_as_is():
    # Dropping it (with a warning) is the harness's job.
    rendered = lib(
        'l.renderExtraMcp { hyperhive = { command = "/evil"; args = [ "x" ]; }; ok.command = "y"; }'
    )
    assert rendered["hyperhive"] == {
        "command": "/evil",
        "args": ["x"],
        "env": {},
        "allowedTools": ["*"],
    }
    assert set(rendered) == {"hyperhive", "ok"}


def test_extra_mcp_empty_map():
    assert lib("l.renderExtraMcp { }") == {}


# -- lib.nix: policy.json ---------------------------------------------------------------


def test_policy_recipients_null_is_unrestricted():
    assert lib("l.renderPolicy { allowedRecipients = null; }") == {
        "allowedRecipients": None,
        "allowedBash": None,
        "model": None,
        "claude": None,
        "notesCompactBytes": None,
        "allowSubagents": False,
    }
    assert lib("l.renderPolicy { }") == {
        "allowedRecipients": None,
        "allowedBash": None,
        "model": None,
        "claude": None,
        "notesCompactBytes": None,
        "allowSubagents": False,
    }
    # the keys the local runtime writes for its harness (runtime/local_harness.py)
    assert list(lib("builtins.attrNames (l.renderPolicy { })")) == sorted(POLICY_KEYS)


def test_policy_recipients_list_bash_and_model():
    policy = lib(
        'l.renderPolicy { allowedRecipients = [ "manager" "operator" ]; '
        'allowedBash = [ "git *" ]; model = "claude-opus-4"; extraMcpServers = { }; '
        'claude = "/opt/claude/bin/claude"; notesCompactBytes = 4096; allowSubagents = true; }'
    )
    assert policy == {
        "allowedRecipients": ["manager", "operator"],
        "allowedBash": ["git *"],
        "model": "claude-opus-4",
        "claude": "/opt/claude/bin/claude",
        "notesCompactBytes": 4096,
        "allowSubagents": True,
    }


def test_deployed_policy_adds_the_servers():
    policy = lib(
        'l.deployedPolicy { allowedRecipients = [ "a" ]; extraMcpServers.s.command = "c"; }'
    )
    assert policy == {
        "allowedRecipients": ["a"],
        "allowedBash": None,
        "model": None,
        "claude": None,
        "notesCompactBytes": None,
        "allowSubagents": False,
        "extraMcpServers": {"s": {"command": "c", "args": [], "env": {}, "allowedTools": ["*"]}},
    }


def test_invalid_recipients():
    assert lib('l.invalidRecipients [ "operator" "coder" "Bad" "x_y" ]') == ["Bad", "x_y"]
    assert lib("l.invalidRecipients null") == []


# -- lib.nix: names -----------------------------------------------------------------------


def container_name(name: str) -> str:
    """What the Python runtime must compute for the same agent (kept in step with lib.nix)."""
    if len(name) + 2 <= 11:
        return f"h-{name}"
    return f"h_{name[:4]}{hashlib.sha256(name.encode()).hexdigest()[:5]}"


@pytest.mark.parametrize("name", ["a", "coder", "manager", "abcdefghi", "abcdefghij", "x" * 31])
def test_container_name(name):
    got = lib(f'l.containerName "{name}"')
    assert got == container_name(name)
    assert len(got) <= 11  # nixos-container create refuses longer names


def test_container_name_short_and_long_forms():
    assert lib('l.containerName "coder"') == "h-coder"
    assert lib('l.containerName "in"') == "h-in"  # a Nix keyword is just a name
    long = lib('l.containerName "research-assistant"')
    assert long.startswith("h_rese") and len(long) == 11


@pytest.mark.parametrize("bad", ["Coder", "", "1x", "a_b", "a" * 32, "../x"])
def test_container_name_refuses_invalid_names(bad):
    with pytest.raises(NixError, match="invalid agent name"):
        lib(f"l.containerName {json.dumps(bad)}")


def test_git_identity_and_input_name():
    assert lib('l.gitIdentity "coder"') == {"name": "coder", "email": "coder@hyperhive"}
    assert lib('l.agentInput "coder"') == "agent-coder"


def test_up_args_and_quoting():
    args = lib(
        'l.upArgs { home = "/var/lib/hyperhive"; bind = "127.0.0.1"; port = 8420; '
        'runtime = "nixos-container"; }'
    )
    assert args == [
        "up",
        "--home",
        "/var/lib/hyperhive",
        "--bind",
        "127.0.0.1",
        "--port",
        "8420",
        "--runtime",
        "nixos-container",
    ]
    assert lib("""l.shellJoin [ "a b" "it's" ]""") == "'a b' 'it'\\''s'"


def test_nspawn_flags():
    flags = lib('l.nspawnFlags { home = "/var/lib/hyperhive"; name = "coder"; }')
    assert flags == [
        "--private-users=pick",
        "--private-users-ownership=chown",
        "--bind=/var/lib/hyperhive/agents/coder/state:/state",
        "--bind=/var/lib/hyperhive/run/agents/coder:/run/hyperhive",
    ]


def test_source_filter():
    kept = lib(
        'map (p: l.sourceFilter p "directory") '
        '[ "/s/hyperhive" "/s/.venv" "/s/.git" "/s/tests" "/s/nix" "/s/x/__pycache__" ]'
    )
    assert kept == [True, False, False, False, True, False]


# -- harness-base.nix with a stub lib -----------------------------------------------------


def harness(cfg: dict, select: str) -> object:
    expr = f"""
let
  lib = {STUB_LIB};
  pkgs = {STUB_PKGS};
  config = {{
    hyperhive = {nix_str(cfg)};
    programs.git.package = "/nix/store/stub-git";
  }};
  m = import {NIX_DIR / "harness-base.nix"} {{ inherit config lib pkgs; }};
in {select}
"""
    return nix_eval(expr)


def test_harness_options_agree_with_the_local_runtime():
    options = harness({}, "builtins.mapAttrs (_: o: o.type) m.options.hyperhive")
    # The agent-settable options are exactly the ones policy.py evaluates; name and
    # package are set by the meta flake.
    assert set(options) == set(KNOWN_OPTIONS) | {"name", "package", "claudePackage"}
    assert options["allowedRecipients"] == {
        "name": "nullOr",
        "of": {"name": "listOf", "of": {"name": "str"}},
    }
    assert options["allowedBash"] == {
        "name": "nullOr",
        "of": {"name": "listOf", "of": {"name": "str"}},
    }
    assert options["model"] == {"name": "nullOr", "of": {"name": "str"}}
    assert options["claude"] == {"name": "nullOr", "of": {"name": "strMatching", "re": "/.+"}}
    assert options["notesCompactBytes"] == {"name": "ints.positive"}
    assert options["allowSubagents"] == {"name": "bool"}
    assert options["name"] == {"name": "strMatching", "re": "[a-z][a-z0-9-]{0,30}"}
    servers = options["extraMcpServers"]
    assert servers["name"] == "attrsOf" and servers["of"]["name"] == "submodule"
    sub = servers["of"]["options"]
    assert set(sub) == {"command", "args", "env", "allowedTools"}
    assert sub["command"]["type"] == {"name": "str"} and "default" not in sub["command"]
    assert sub["args"]["default"] == [] and sub["env"]["default"] == {}
    assert sub["allowedTools"]["default"] == ["*"]


def test_harness_option_defaults():
    defaults = harness(
        {"claudePackage": "/nix/store/stub-claude-code"},
        'builtins.mapAttrs (_: o: o.default or "<none>") '
        '(removeAttrs m.options.hyperhive [ "package" "claudePackage" ])',
    )
    assert defaults == {
        "name": "<none>",
        "extraMcpServers": {},
        "allowedRecipients": None,
        "allowedBash": None,
        "model": None,
        # the package's executable, by absolute path: what the harness runs
        "claude": "/nix/store/stub-claude-code/bin/claude",
        "notesCompactBytes": DEFAULT_COMPACT_BYTES,  # the harness's own default
        "allowSubagents": False,  # no sub-agents unless the config says so
    }


CFG = {
    "name": "coder",
    "package": "/nix/store/stub-hyperhive",
    "claudePackage": "/nix/store/stub-claude-code",
    "allowedRecipients": ["manager", "operator"],
    "allowedBash": None,
    "model": "claude-opus-4",
    "claude": "/nix/store/stub-claude-code/bin/claude",
    "notesCompactBytes": 65536,
    "allowSubagents": False,
    "extraMcpServers": {
        "search": {"command": "/bin/search", "args": [], "env": {}, "allowedTools": ["*"]},
        "hyperhive": {"command": "/bin/shadow", "args": ["x"], "env": {}, "allowedTools": ["t"]},
    },
}


def test_harness_writes_the_etc_files():
    etc = harness(CFG, "m.config.environment.etc")
    assert set(etc) == {"hyperhive/extra-mcp.json", "hyperhive/policy.json"}
    assert json.loads(etc["hyperhive/policy.json"]["text"]) == {
        "allowedRecipients": ["manager", "operator"],
        "allowedBash": None,
        "model": "claude-opus-4",
        "claude": "/nix/store/stub-claude-code/bin/claude",
        "notesCompactBytes": 65536,
        "allowSubagents": False,
    }
    policy = json.loads(etc["hyperhive/policy.json"]["text"])
    assert normalize(policy) == policy  # what the harness reads passes the host's checks
    assert json.loads(etc["hyperhive/extra-mcp.json"]["text"]) == CFG["extraMcpServers"]


def test_harness_user_git_identity_and_service():
    got = harness(
        CFG,
        "{ users = m.config.users; git = m.config.programs.git.config; "
        "svc = m.config.systemd.services.hyperhive-harness; }",
    )
    agent = got["users"]["users"]["agent"]
    assert agent["uid"] == 1000 and agent["isNormalUser"] and agent["group"] == "users"
    assert "extraGroups" not in agent  # no wheel, nothing privileged
    assert got["git"]["user"] == {"name": "coder", "email": "coder@hyperhive"}
    svc = got["svc"]
    assert svc["serviceConfig"]["User"] == "agent"
    assert svc["serviceConfig"]["Group"] == "users"
    # The ids the nixos-container runtime chowns /state to (plus the picked base).
    assert lib("[ l.agentUid l.agentGid ]") == [AGENT_UID, AGENT_GID]
    assert svc["serviceConfig"]["ExecStart"] == (
        "'/nix/store/stub-hyperhive/bin/hyperhive' 'harness' '--socket' '/run/hyperhive/agent.sock'"
    )
    assert svc["environment"]["GIT_AUTHOR_EMAIL"] == "coder@hyperhive"
    assert svc["environment"]["HYPERHIVE_AGENT"] == "coder"
    assert svc["serviceConfig"]["WorkingDirectory"] == "/state"


def test_harness_asserts_recipient_names():
    ok = harness(CFG, "map (a: a.assertion) m.config.assertions")
    assert ok == [True, True]
    bad = harness({**CFG, "allowedRecipients": ["Nope"]}, "m.config.assertions")
    assert bad[1]["assertion"] is False and "Nope" in bad[1]["message"]


def test_harness_asserts_a_supported_claude_package():
    def claude(version: str) -> dict:
        package = {"pname": "claude-code", "version": version, "outPath": "/nix/store/c"}
        return harness({**CFG, "claudePackage": package}, "builtins.head m.config.assertions")

    assert claude("2.1.328")["assertion"] is True
    assert claude("2.1.0")["assertion"] is True
    old = claude("1.0.128")
    assert old["assertion"] is False
    assert old["message"] == (
        "hyperhive.claudePackage: claude-code 1.0.128 is older than Claude Code 2.1.0, "
        "the oldest the harness supports"
    )
    # the default is nix/claude-code.nix
    default = harness({}, "m.options.hyperhive.claudePackage.default")
    assert default == "/nix/store/stub-claude-code.nix"


# -- host-module.nix with a stub lib ------------------------------------------------------


def test_host_options(tmp_path):
    options = host({}, "builtins.attrNames m.options.services.hyperhive", tmp_path)
    assert {
        "enable",
        "home",
        "bind",
        "port",
        "runtime",
        "adminGroup",
        "retention",
        "package",
    } <= set(options)
    defaults = host(
        {},
        "let o = m.options.services.hyperhive; in { inherit (o.home) default; "
        "bind = o.bind.default; port = o.port.default; runtime = o.runtime.default; "
        "group = o.adminGroup.default; days = o.retention.failedDays.default; "
        "enable = o.enable.default; runtimes = o.runtime.type.values; }",
        tmp_path,
    )
    assert defaults == {
        "default": "/var/lib/hyperhive",
        "bind": "127.0.0.1",
        "port": 8420,
        "runtime": "nixos-container",
        "group": "hyperhive",
        "days": 30,
        "enable": False,
        "runtimes": ["nixos-container", "local"],
    }


def test_host_unit_runs_hyperhive_up(tmp_path):
    svc = host({"port": 9000}, "m.config.systemd.services.hyperhive", tmp_path)
    sc = svc["serviceConfig"]
    assert sc["ExecStart"] == (
        "/nix/store/stub-hyperhive/bin/hyperhive 'up' '--home' '/var/lib/hyperhive' "
        "'--bind' '127.0.0.1' '--port' '9000' '--runtime' 'nixos-container'"
    )
    assert sc["User"] == "root" and sc["Group"] == "hyperhive"
    env = svc["environment"]
    assert env["HYPERHIVE_HOME"] == "/var/lib/hyperhive"
    assert env["HYPERHIVE_RETENTION_FAILED_DAYS"] == "30"
    assert env["HYPERHIVE_RETENTION_PRUNE_AT"] == "03:30"
    assert env["HYPERHIVE_NIXPKGS"] == "/nix/store/stub-nixpkgs"
    assert env["HYPERHIVE_SOURCE"].startswith("/nix/store/")
    assert env["HYPERHIVE_SOURCE"].endswith("-hyperhive-source")
    assert "/run/current-system/sw" in svc["path"]


def test_host_group_tmpfiles_and_local_runtime(tmp_path):
    got = host(
        {"runtime": "local", "adminGroup": "ops", "home": "/srv/hive"},
        "{ inherit (m.config) users; tmp = m.config.systemd.tmpfiles.rules; "
        "user = m.config.systemd.services.hyperhive.serviceConfig.User; "
        "nat = m.config.networking.nat; }",
        tmp_path,
    )
    assert got["users"]["groups"] == {"ops": {}}
    assert got["users"]["users"]["hyperhive"]["group"] == "ops"
    assert got["user"] == "hyperhive"
    assert got["tmp"] == [
        "d /srv/hive 0750 hyperhive ops - -",
        "d /srv/hive/run 0750 hyperhive ops - -",
    ]
    assert got["nat"] == {}


def test_host_nat_for_agent_interfaces(tmp_path):
    nat = host({"nat": {"externalInterface": "eth0"}}, "m.config.networking.nat", tmp_path)
    assert nat == {
        "enable": True,
        "internalInterfaces": ["ve-h-+", "ve-h_+"],
        "externalInterface": "eth0",
    }


def test_host_disabled_sets_nothing(tmp_path):
    assert host({"enable": False}, "m.config", tmp_path) == {}


# -- the meta flake -----------------------------------------------------------------------

# The stub nixosSystem returns its arguments, and `config.hyperhive` as the agent's own
# agent.nix sets it (the module system's merge and defaults are not modelled here).
STUB_NIXOS_SYSTEM = """args: {
  inherit (args) system modules;
  config.hyperhive = (import (builtins.elemAt args.modules 1) { }).hyperhive or { };
}"""


def agent_repo(tmp_path: Path, name: str, agent_nix: str) -> Path:
    repo = tmp_path / f"applied-{name}"
    repo.mkdir()
    (repo / "agent.nix").write_text(agent_nix)
    return repo


def test_meta_flake_outputs(tmp_path):
    coder = agent_repo(
        tmp_path, "coder", '{ ... }: { hyperhive.allowedRecipients = [ "manager" ]; }\n'
    )
    manager = agent_repo(tmp_path, "manager", "{ ... }: { }\n")
    agents = {
        "coder": {"rev": "a" * 40, "approval": 3},
        "manager": {"rev": "b" * 40, "approval": 1},
    }
    expr = f"""
let
  inputs = {{
    hyperhive = {{ outPath = "{ROOT}"; }};
    "agent-coder" = {{ outPath = "{coder}"; }};
    "agent-manager" = {{ outPath = "{manager}"; }};
    nixpkgs.lib.nixosSystem = {STUB_NIXOS_SYSTEM};
  }};
  out = import {NIX_DIR / "meta-flake.nix"} {{ inherit inputs; agents = {nix_str(agents)}; }};
in {{
  inherit (out) hyperhive;
  coder = {{ inherit (out.nixosConfigurations.coder) system modules; }};
}}
"""
    got = nix_eval(expr)
    assert got["hyperhive"]["revisions"] == {"coder": "a" * 40, "manager": "b" * 40}
    assert got["hyperhive"]["containers"] == {"coder": "h-coder", "manager": "h-manager"}
    assert got["hyperhive"]["policies"]["coder"] == {
        "allowedRecipients": ["manager"],
        "allowedBash": None,
        "model": None,
        "claude": None,  # the stub nixosSystem fills in no option defaults
        "notesCompactBytes": None,
        "allowSubagents": False,
        "extraMcpServers": {},
    }
    assert got["hyperhive"]["policies"]["manager"]["allowedRecipients"] is None
    # the host checks what the flake renders as it checks the local runtime's options
    assert normalize(got["hyperhive"]["policies"]["coder"]) == got["hyperhive"]["policies"]["coder"]
    assert got["coder"]["system"] == "x86_64-linux"
    base, agent_nix, container = got["coder"]["modules"]
    assert base == f"{ROOT}/nix/harness-base.nix"
    assert agent_nix == f"{coder}/agent.nix"
    assert container == {
        "boot": {"isContainer": True},
        "networking": {"hostName": "h-coder", "useDHCP": False},
        "hyperhive": {"name": "coder"},
    }


def test_meta_flake_refuses_a_missing_agent_input(tmp_path):
    expr = f"""
(import {NIX_DIR / "meta-flake.nix"} {{
  inputs = {{ hyperhive = "{ROOT}"; nixpkgs.lib.nixosSystem = {STUB_NIXOS_SYSTEM}; }};
  agents.coder = {{ rev = "{"a" * 40}"; approval = 1; }};
}}).hyperhive.revisions
"""
    with pytest.raises(NixError, match="no input for agent.*coder"):
        nix_eval(expr)


# The flake.nix meta.py should render on a NixOS host (docs/nixos.md, "The meta flake"):
# literal inputs, outputs read from hyperhive.json through nix/meta-flake.nix.
RENDERED_FLAKE = """# Written by hyperhive on every deploy: the deployed revision of every agent.
# Do not edit; propose a change to the agent's config repo instead.
{
  description = "hyperhive meta flake";
  inputs = {
    nixpkgs.url = "path:@NIXPKGS@";
    hyperhive = {
      url = "path:@SOURCE@";
      flake = false;
    };
    "agent-coder" = {
      url = "git+file:///var/lib/hyperhive/applied/coder.git?ref=refs/hyperhive/pins/@REV@&rev=@REV@";
      flake = false;
    };
  };
  outputs = inputs: import "${inputs.hyperhive}/nix/meta-flake.nix" {
    inherit inputs;
    agents = (builtins.fromJSON (builtins.readFile ./hyperhive.json)).agents;
    system = "x86_64-linux";
  };
}
"""


def test_rendered_meta_flake_evaluates(tmp_path):
    rev = "c" * 40
    coder = agent_repo(tmp_path, "coder", '{ ... }: { hyperhive.model = "m"; }\n')
    meta = tmp_path / "meta"
    meta.mkdir()
    text = (
        RENDERED_FLAKE.replace("@NIXPKGS@", "/nix/store/stub-nixpkgs")
        .replace("@SOURCE@", str(ROOT))
        .replace("@REV@", rev)
    )
    # What the engine writes on a NixOS host is exactly this flake.
    from hyperhive.home import Home
    from hyperhive.workflow.meta import NixosInputs, render_flake

    rendered = render_flake(
        Home(Path("/var/lib/hyperhive")),
        {"coder": {"rev": rev}},
        NixosInputs(str(ROOT), "/nix/store/stub-nixpkgs"),
    )
    assert rendered == text
    (meta / "flake.nix").write_text(text)
    (meta / "hyperhive.json").write_text(
        json.dumps({"agents": {"coder": {"rev": rev, "approval": 1, "policy": {}}}})
    )
    subprocess.run(["nix-instantiate", "--parse", "flake.nix"], cwd=meta, check=True)
    expr = f"""
let
  flake = import ./flake.nix;
  out = flake.outputs {{
    self = {{ outPath = ./.; }};
    hyperhive = {{ outPath = "{ROOT}"; }};
    "agent-coder" = {{ outPath = "{coder}"; }};
    nixpkgs.lib.nixosSystem = {STUB_NIXOS_SYSTEM};
  }};
in {{
  inherit (out.hyperhive) revisions policies containers;
  inputs = builtins.attrNames flake.inputs;
}}
"""
    got = nix_eval(expr, cwd=meta)
    assert got["revisions"] == {"coder": rev}
    assert got["containers"] == {"coder": "h-coder"}
    assert got["policies"]["coder"]["model"] == "m"
    assert got["inputs"] == ["agent-coder", "hyperhive", "nixpkgs"]
