# The outputs of the meta flake (meta.git's flake.nix), as a function.
#
# hyperhive/workflow/meta.py renders flake.nix with literal inputs (Nix requires them
# literal): `nixpkgs`, `hyperhive` (hyperhive's source, flake = false) and one
# `agent-<name>` per agent (its applied repo at the deployed revision, flake = false); its
# outputs are one call of this function:
#
#   outputs = inputs: import "${inputs.hyperhive}/nix/meta-flake.nix" {
#     inherit inputs;
#     agents = (builtins.fromJSON (builtins.readFile ./hyperhive.json)).agents;
#     system = "x86_64-linux";
#   };
#
# `agents` is hyperhive.json's map: name -> { rev, approval, time?, policy? }.
# `nixosSystem` defaults to nixpkgs's; tests pass a stub.
{
  inputs,
  agents,
  system ? "x86_64-linux",
  nixosSystem ? inputs.nixpkgs.lib.nixosSystem,
}:
let
  hlib = import ./lib.nix;
  missing = hlib.missingInputs inputs agents;
  checked =
    if missing == [ ] then
      agents
    else
      throw "hyperhive meta flake: no input for agent(s) ${builtins.concatStringsSep ", " missing}";

  configuration =
    name: _:
    nixosSystem {
      inherit system;
      modules = hlib.agentModules {
        inherit name;
        src = inputs.${hlib.agentInput name};
        hyperhiveSrc = inputs.hyperhive;
      };
    };

  nixosConfigurations = builtins.mapAttrs configuration checked;
in
{
  inherit nixosConfigurations;

  hyperhive = {
    # Every agent's deployed revision (what the meta commit pins).
    revisions = hlib.revisions checked;
    # Every agent's evaluated hyperhive.* options, in the shape the host stores with a
    # deploy: `nix eval --json <meta>#hyperhive.policies.<name>`.
    policies = builtins.mapAttrs (
      name: _: hlib.deployedPolicy nixosConfigurations.${name}.config.hyperhive
    ) checked;
    # Every agent's container name: `nixos-container create <it> --flake <meta>#<name>`.
    containers = builtins.mapAttrs (name: _: hlib.containerName name) checked;
  };
}
