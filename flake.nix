# hyperhive as a flake: the host module, the agent base module, the pure helpers and the
# package. See docs/nixos.md for a host flake that uses it.
{
  description = "hyperhive: a swarm of Claude Code agents on NixOS, changed only through git";

  # The oldest NixOS release hyperhive supports (docs/nixos.md): its Python set has what the
  # wheels of nix/pypi.nix need (werkzeug >= 3.1 and blinker >= 1.9 for flask 3.1, urllib3
  # >= 2.2.2 for dulwich).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

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
        claude-code = pkgs.callPackage ./nix/claude-code.nix { };
      });

      # The NixOS VM test (needs KVM): nix build .#checks.x86_64-linux.hive -L
      checks.x86_64-linux.hive = import ./nix/tests/hive.nix {
        pkgs = nixpkgs.legacyPackages.x86_64-linux;
        inherit nixpkgs;
        module = self.nixosModules.default;
      };
    };
}
