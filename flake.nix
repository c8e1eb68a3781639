# hyperhive as a flake: the host module, the agent base module, the pure helpers and the
# package. See docs/nixos.md for a host flake that uses it.
{
  description = "hyperhive: a swarm of Claude Code agents on NixOS, changed only through git";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      # services.hyperhive; its package and source default to this flake's.
      nixosModules.default = ./nix/host-module.nix;
      # The base of every agent container (the meta flake imports it by path).
      nixosModules.harness = ./nix/harness-base.nix;

      lib = import ./nix/lib.nix;

      packages = forAll (pkgs: {
        default = pkgs.callPackage ./nix/package.nix { };
        hyperhive = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      });
    };
}
