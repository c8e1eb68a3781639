# The NixOS module of a hyperhive host: `services.hyperhive`.
#
# Runs `hyperhive up` as a systemd service, creates the admin group that owns
# <home>/run/host.sock, the home directory, and what the nixos-container runtime needs
# (containers, flakes, NAT for the agents' network). Exported by the repository's flake as
# `nixosModules.default`; see docs/nixos.md.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  hlib = import ./lib.nix;
  cfg = config.services.hyperhive;
  inherit (lib)
    mkEnableOption
    mkOption
    mkIf
    mkDefault
    types
    optional
    optionals
    optionalAttrs
    ;
  containers = cfg.runtime == "nixos-container";
  # nixos-container needs root (it writes /etc/nixos-containers, starts container@ units
  # and chowns the agents' state to their mapped uids); the local runtime does not.
  user = if containers then "root" else "hyperhive";
  source = builtins.path {
    name = "hyperhive-source";
    path = cfg.source;
    filter = hlib.sourceFilter;
  };
in
{
  options.services.hyperhive = {
    enable = mkEnableOption "hyperhive, a swarm of Claude Code agents deployed through git";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage <hyperhive>/nix/package.nix { }";
      description = "The hyperhive package the daemon runs.";
    };

    home = mkOption {
      type = types.path;
      default = "/var/lib/hyperhive";
      description = "The hive's state: repos, meta.git, hive.db, logs, sockets.";
    };

    bind = mkOption {
      type = types.str;
      default = "127.0.0.1";
      description = "Address the forge UI listens on (loopback unless you put a proxy in front).";
    };

    port = mkOption {
      type = types.port;
      default = 8420;
      description = "Port of the forge UI.";
    };

    runtime = mkOption {
      type = types.enum [
        "nixos-container"
        "local"
      ];
      default = "nixos-container";
      description = ''
        Where agents run: `nixos-container` (one unprivileged NixOS container per agent,
        built from the meta flake) or `local` (harness subprocesses of the daemon).
      '';
    };

    adminGroup = mkOption {
      type = types.str;
      default = "hyperhive";
      description = ''
        Group owning <home>/run/host.sock (mode 0660) and able to read the home: its
        members use the `hyperhive` CLI against the running daemon.
      '';
    };

    retention.failedDays = mkOption {
      type = types.ints.unsigned;
      default = 30;
      description = ''
        Days a failed/<id> tag (with its build log) or a denied/<id> tag is kept; 0 keeps
        them forever. deployed/<id> tags are always kept.
      '';
    };

    retention.pruneAt = mkOption {
      type = types.strMatching "([01][0-9]|2[0-3]):[0-5][0-9]";
      default = "03:30";
      description = "When the daemon prunes tags each day (HH:MM, the host's local time).";
    };

    source = mkOption {
      type = types.path;
      default = ../.;
      defaultText = lib.literalExpression "the hyperhive source this module comes from";
      description = ''
        hyperhive's source tree: the meta flake imports nix/harness-base.nix and builds the
        container's hyperhive package from it.
      '';
    };

    nixpkgs = mkOption {
      type = types.path;
      default = pkgs.path;
      defaultText = lib.literalExpression "pkgs.path";
      description = "The nixpkgs the agent containers are built with (the meta flake's `nixpkgs` input).";
    };

    nat.externalInterface = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "eth0";
      description = ''
        Host interface the agents' private networks are NATed to (they need the Anthropic
        API). null: configure `networking.nat` yourself.
      '';
    };
  };

  config = mkIf cfg.enable {
    users.groups.${cfg.adminGroup} = { };
    users.users = optionalAttrs (!containers) {
      hyperhive = {
        isSystemUser = true;
        group = cfg.adminGroup;
        home = cfg.home;
        description = "hyperhive daemon";
      };
    };

    # Admins read the home (logs, repos) and talk to the daemon over run/host.sock.
    systemd.tmpfiles.rules = [
      "d ${toString cfg.home} 0750 ${user} ${cfg.adminGroup} - -"
      "d ${toString cfg.home}/run 0750 ${user} ${cfg.adminGroup} - -"
    ];

    environment.systemPackages = [ cfg.package ];
    environment.variables.HYPERHIVE_HOME = toString cfg.home;

    nix.settings.experimental-features = [
      "nix-command"
      "flakes"
    ];

    boot.enableContainers = mkIf containers (mkDefault true);

    networking.nat = mkIf (containers && cfg.nat.externalInterface != null) {
      enable = true;
      internalInterfaces = [
        "ve-h-+"
        "ve-h_+"
      ];
      externalInterface = cfg.nat.externalInterface;
    };

    systemd.services.hyperhive = {
      description = "hyperhive daemon (forge UI, build worker, broker)";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ] ++ optional containers "systemd-machined.service";
      wants = optional containers "systemd-machined.service";
      # /run/current-system/sw: the host's own nixos-container (configured with the host's
      # container directories), machinectl and systemctl; util-linux: the terminal's
      # nsenter into a container's namespaces.
      path = [
        cfg.package
        config.nix.package
        pkgs.git
        pkgs.bash
        pkgs.coreutils
        pkgs.util-linux
      ]
      ++ optionals containers [ "/run/current-system/sw" ];
      environment = {
        HYPERHIVE_HOME = toString cfg.home;
        HYPERHIVE_RETENTION_FAILED_DAYS = toString cfg.retention.failedDays;
        HYPERHIVE_RETENTION_PRUNE_AT = cfg.retention.pruneAt;
        # What the meta flake is rendered with (docs/nixos.md, "The meta flake").
        HYPERHIVE_SOURCE = "${source}";
        HYPERHIVE_NIXPKGS = "${cfg.nixpkgs}";
        HYPERHIVE_SYSTEM = pkgs.stdenv.hostPlatform.system;
      };
      serviceConfig = {
        ExecStart =
          "${cfg.package}/bin/hyperhive "
          + hlib.shellJoin (hlib.upArgs { inherit (cfg) home bind port runtime; });
        User = user;
        # Files and sockets the daemon creates belong to the admin group (host.sock: 0660).
        Group = cfg.adminGroup;
        UMask = "0027";
        Restart = "on-failure";
        RestartSec = 5;
        # `hyperhive up` lets running builds finish for 30 s after SIGTERM.
        TimeoutStopSec = 60;
        KillMode = "mixed";
      };
    };
  };
}
