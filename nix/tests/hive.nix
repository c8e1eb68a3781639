# The NixOS VM test of hyperhive (`checks.x86_64-linux.hive` in flake.nix):
#
#   nix build .#checks.x86_64-linux.hive -L      # needs KVM; see docs/nixos.md
#
# One VM, a host with `services.hyperhive.enable = true` (the nixos-container runtime).
# The test creates an agent, commits its agent.nix (a fake `claude`: nix/tests/
# fake-claude.py, which answers through the real hyperhive MCP server), proposes and
# approves it, waits for the container's harness, sends the agent a message and reads its
# reply in the operator's inbox; then it approves a policy change (the agent may no longer
# message the operator) and checks that it took effect: the container's policy.json, and
# the agent's next reply refused, with the refusal sent to the manager instead.
#
# The VM has no network: what the agent's container is built from is put in its store
# beforehand (the same configuration, evaluated here), and the meta flake's nixpkgs is the
# one this test is evaluated with (the host module's default, `pkgs.path`).
{
  pkgs,
  nixpkgs,
  module,
}:
let
  inherit (pkgs) lib;
  hlib = import ../lib.nix;
  system = pkgs.stdenv.hostPlatform.system;

  # the fake claude speaks MCP with the standard library: a plain Python runs it
  fakeClaude = pkgs.writeScriptBin "claude" ''
    #!${pkgs.python3}/bin/python3
    ${builtins.readFile ./fake-claude.py}
  '';

  agentName = "worker";
  container = hlib.containerName agentName;

  # The worker's agent.nix, before and after the policy change. The claude is the fake
  # (a store path the container sees through the host's /nix/store); its package is empty,
  # which the harness-base assertion leaves to the harness's `claude --version` check.
  agentNix =
    recipients:
    pkgs.writeText "agent.nix" ''
      { pkgs, ... }:
      {
        hyperhive.claude = "${fakeClaude}/bin/claude";
        hyperhive.claudePackage = pkgs.emptyDirectory;
        hyperhive.allowedRecipients = [ ${lib.concatMapStringsSep " " (r: ''"${r}"'') recipients} ];
      }
    '';
  before = agentNix [
    "operator"
    "manager"
  ];
  after = agentNix [ "manager" ];

  # The container the meta flake will build, evaluated here with the same modules, so its
  # closure (and what building its few host-specific files needs) is in the VM's store.
  seed =
    file:
    (nixpkgs.lib.nixosSystem {
      inherit system;
      modules = hlib.agentModules {
        name = agentName;
        src = pkgs.runCommand "worker-config" { } "mkdir $out && cp ${file} $out/agent.nix";
        hyperhiveSrc = ../..;
      };
    }).config.system.build;
  seeded = lib.concatMap (
    build:
    [
      build.toplevel
      build.toplevel.inputDerivation
      build.etc.inputDerivation
    ]
  ) (map seed [ before after ]);
in
pkgs.testers.runNixOSTest {
  name = "hyperhive";
  passthru = { inherit before after fakeClaude; };

  nodes.host =
    { lib, pkgs, ... }:
    {
      imports = [ module ];
      services.hyperhive.enable = true;
      environment.systemPackages = [ pkgs.git ];

      virtualisation = {
        memorySize = 4096;
        diskSize = 12 * 1024;
        cores = 2;
        writableStore = true;
        additionalPaths = seeded ++ [
          fakeClaude
          pkgs.stdenv
          pkgs.stdenvNoCC
          pkgs.jq
          pkgs.perl
          pkgs.emptyDirectory
        ];
      };
      # offline: nothing is substituted or looked up in the global flake registry
      nix.settings = {
        substituters = lib.mkForce [ ];
        flake-registry = "";
      };
    };

  testScript = ''
    import json
    import time

    HOME = "/var/lib/hyperhive"
    CONFIG = f"{HOME}/agents/${agentName}/config"


    def hh(args: str) -> str:
        return host.succeed(f"HYPERHIVE_HOME={HOME} hyperhive {args}")


    def wait(what: str, check, timeout: float = 900.0):
        deadline = time.monotonic() + timeout
        while not (found := check()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(2)
        return found


    def propose_and_deploy(agent_nix: str, reason: str) -> str:
        host.succeed(
            f"cp {agent_nix} {CONFIG}/agent.nix",
            f"git -C {CONFIG} -c user.name=vm-test -c user.email=vm@test commit -qam '{reason}'",
        )
        target = hh(f"propose ${agentName} --reason '{reason}'").strip().splitlines()[-1]
        hh(f"approve {target}")
        approval = int(target.split("#")[1])

        def state():
            history = json.loads(hh("history ${agentName} --json"))
            (a,) = [a for a in history["approvals"] if a["id"] == approval]
            if a["state"] == "failed":
                raise AssertionError(json.dumps(a, indent=2))
            return a["state"] == "deployed"

        wait(f"{target} to deploy", state)
        return target


    def inbox(name: str) -> list[str]:
        return [m["body"] for m in json.loads(hh(f"inbox {name} --json"))]


    start_all()
    host.wait_for_unit("hyperhive.service")
    wait("the hive", lambda: "manager" in hh("agent list --json"), timeout=120)

    with subtest("an agent is created, approved, and its container runs the harness"):
        hh("agent create ${agentName}")
        propose_and_deploy("${before}", "the fake claude")
        host.wait_until_succeeds(
            "nixos-container run ${container} -- systemctl is-active hyperhive-harness.service",
            timeout=300,
        )
        host.wait_until_succeeds(
            "nixos-container run ${container} -- journalctl -u hyperhive-harness --no-pager | grep -F 'is Claude Code 2.1.328'",
            timeout=120,
        )

    with subtest("a message gets its reply"):
        hh("send operator ${agentName} 'ping-1'")
        wait("pong-1", lambda: "pong-1" in inbox("operator"), timeout=300)

    with subtest("an approved policy change takes effect"):
        propose_and_deploy("${after}", "no more messages to the operator")
        policy = json.loads(
            host.succeed("nixos-container run ${container} -- cat /etc/hyperhive/policy.json")
        )
        assert policy["allowedRecipients"] == ["manager"], policy
        hh("send operator ${agentName} 'ping-2'")
        wait(
            "the refusal, told to the manager",
            lambda: any(b.startswith("refused pong-2") for b in inbox("manager")),
            timeout=300,
        )
        assert "pong-2" not in inbox("operator")
  '';
}
