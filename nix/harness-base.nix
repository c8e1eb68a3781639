# The base of every hyperhive agent container (imported by the meta flake before the
# agent's own agent.nix). It declares the `hyperhive.*` options an agent.nix may set, writes
# them to /etc/hyperhive/{extra-mcp,policy}.json for the harness, declares the unprivileged
# `agent` user that runs `claude`, and the harness service.
#
# The option names and types are the ones hyperhive/runtime/policy.py accepts on the local
# runtime: allowedRecipients, allowedBash, model, claude, notesCompactBytes, allowSubagents,
# extraMcpServers.
# `hyperhive.name` and `hyperhive.package` are set by hyperhive (the meta flake), never by an
# agent.nix; `claudePackage` exists only here (the local runtime evaluates no packages).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  hlib = import ./lib.nix;
  cfg = config.hyperhive;
  inherit (lib) mkOption mkDefault types;

  mcpServer = types.submodule {
    options = {
      command = mkOption {
        type = types.str;
        description = "Executable of the MCP server (stdio transport).";
        example = "/run/current-system/sw/bin/mcp-server-fetch";
      };
      args = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Arguments of the command.";
      };
      env = mkOption {
        type = types.attrsOf types.str;
        default = { };
        description = "Environment of the server process.";
      };
      allowedTools = mkOption {
        type = types.listOf types.str;
        default = [ "*" ];
        description = ''
          Tools of this server the agent may call: [ "*" ] (the default) allows every tool
          (`mcp__<key>__*`), a list of names allows exactly `mcp__<key>__<tool>` for each.
        '';
      };
    };
  };

  agent = hlib.agentUser;
  identity = hlib.gitIdentity cfg.name;
  etcJSON = value: {
    text = builtins.toJSON value;
    mode = "0444";
  };
in
{
  options.hyperhive = {
    name = mkOption {
      type = types.strMatching "[a-z][a-z0-9-]{0,30}";
      description = "The agent's name (set by the meta flake).";
    };

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage <hyperhive>/nix/package.nix { }";
      description = "hyperhive itself: `hyperhive harness` and `hyperhive mcp`.";
    };

    claudePackage = mkOption {
      type = types.package;
      default = pkgs.callPackage ./claude-code.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage <hyperhive>/nix/claude-code.nix { }";
      example = lib.literalExpression "pkgs.claude-code";
      description = ''
        The `claude` CLI the harness drives: by default the Claude Code version hyperhive is
        tested with (nix/claude-code.nix). Another package must be Claude Code
        ${hlib.minClaudeVersion} or newer: the build asserts it from the package's version,
        the harness checks `claude --version` when it starts and refuses an older one.
      '';
    };

    extraMcpServers = mkOption {
      type = types.attrsOf mcpServer;
      default = { };
      example = lib.literalExpression ''
        { fetch = { command = "''${pkgs.mcp-server-fetch}/bin/mcp-server-fetch"; allowedTools = [ "fetch" ]; }; }
      '';
      description = ''
        Extra MCP servers for this agent, each under its own key (modules stack them). The
        key `hyperhive` is reserved: the harness drops such an entry with a warning.
      '';
    };

    allowedRecipients = mkOption {
      type = types.nullOr (types.listOf types.str);
      default = null;
      example = [
        "manager"
        "operator"
      ];
      description = "Agents (or `operator`) this agent may send to; null = unrestricted.";
    };

    allowedBash = mkOption {
      type = types.nullOr (types.listOf types.str);
      default = null;
      example = [
        "git *"
        "nix build .*"
      ];
      description = ''
        Bash command patterns (Claude Code's `Bash(<pattern>)` grammar) the agent may run;
        null = the blanket Bash permission.
      '';
    };

    model = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "Model for `claude --model`; null = the CLI's default.";
    };

    claude = mkOption {
      type = types.nullOr (types.strMatching "/.+");
      default = lib.getExe' cfg.claudePackage "claude";
      defaultText = lib.literalExpression "lib.getExe' config.hyperhive.claudePackage \"claude\"";
      description = ''
        Absolute path of the `claude` executable the harness runs; null = `claude` on the
        harness's PATH. Change `claudePackage` to change the CLI; set this for an executable
        outside a package (it is also the option the local runtime reads).
      '';
    };

    notesCompactBytes = mkOption {
      type = types.ints.positive;
      default = 32768;
      description = ''
        When /state/notes.md grows past this many bytes, a short secondary `claude` session
        compacts it (the old version stays beside it as `notes.md.<UTC time>.bak`).
      '';
    };

    allowSubagents = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Whether the agent's `claude` may start sub-agents (its `Agent` and `Workflow`
        tools). Off, they are disallowed: the CLI would run them without asking.
      '';
    };
  };

  config = {
    assertions = [
      {
        assertion = hlib.claudeSupported (lib.getVersion cfg.claudePackage);
        message =
          "hyperhive.claudePackage: ${lib.getName cfg.claudePackage} ${lib.getVersion cfg.claudePackage}"
          + " is older than Claude Code ${hlib.minClaudeVersion}, the oldest the harness supports";
      }
      {
        assertion = hlib.invalidRecipients cfg.allowedRecipients == [ ];
        message =
          "hyperhive.allowedRecipients: not an agent name or `operator`: "
          + builtins.concatStringsSep ", " (hlib.invalidRecipients cfg.allowedRecipients);
      }
    ];

    # Written with the rest of /etc at activation (every boot and every switch).
    environment.etc."hyperhive/extra-mcp.json" = etcJSON (hlib.renderExtraMcp cfg.extraMcpServers);
    environment.etc."hyperhive/policy.json" = etcJSON (hlib.renderPolicy cfg);

    nixpkgs.config.allowUnfreePredicate = mkDefault (pkg: lib.getName pkg == "claude-code");

    users.users.${agent} = {
      isNormalUser = true;
      uid = hlib.agentUid;
      group = hlib.agentGroup; # gid agentGid: the host chowns /state to base + these ids
      home = "/home/${agent}";
      createHome = true;
      description = "hyperhive agent ${cfg.name}";
    };

    # The agent's commits carry its own name (the manager's are attributed correctly).
    programs.git = {
      enable = mkDefault true;
      config.user = {
        name = mkDefault identity.name;
        email = mkDefault identity.email;
      };
    };

    environment.systemPackages = [
      cfg.package
      cfg.claudePackage
    ];

    systemd.services.hyperhive-harness = {
      description = "hyperhive harness of agent ${cfg.name}";
      wantedBy = [ "multi-user.target" ];
      after = [
        "network-online.target"
        "hyperhive-git.socket"
      ];
      wants = [
        "network-online.target"
        "hyperhive-git.socket"
      ];
      path = [
        cfg.package
        cfg.claudePackage
        config.programs.git.package
        pkgs.bash
        pkgs.coreutils
      ];
      environment = {
        HYPERHIVE_AGENT = cfg.name;
        HOME = "/home/${agent}";
        GIT_AUTHOR_NAME = identity.name;
        GIT_AUTHOR_EMAIL = identity.email;
        GIT_COMMITTER_NAME = identity.name;
        GIT_COMMITTER_EMAIL = identity.email;
        # The hive's git remote (the unit below) and the token for it (the manager has one).
        HYPERHIVE_GIT_URL = hlib.gitUrl;
        HYPERHIVE_TOKEN_FILE = hlib.tokenFile;
      };
      # `hyperhive harness` (hyperhive/harness/): its state defaults to /state, its policy to
      # /etc/hyperhive; it runs the policy's `claude` (hyperhive.claude).
      unitConfig.StartLimitIntervalSec = 0;
      serviceConfig = {
        User = agent;
        Group = hlib.agentGroup;
        ExecStart = hlib.shellJoin [
          "${cfg.package}/bin/hyperhive"
          "harness"
          "--socket"
          hlib.agentSocket
        ];
        WorkingDirectory = hlib.stateDir;
        # Credentials (ANTHROPIC_API_KEY=…) the operator put beside the agent's state.
        EnvironmentFile = "-${hlib.stateDir}/hyperhive.env";
        # The host chowns /state to the mapped uid after the container's first start
        # (docs/nixos.md): until then the harness fails and is retried.
        Restart = "always";
        RestartSec = 5;
        NoNewPrivileges = true;
        PrivateTmp = true;
        ProtectSystem = "strict";
        ReadWritePaths = [
          hlib.stateDir
          "/home/${agent}"
          "-/run/hyperhive"
        ];
      };
    };

    # The git remote on the container's own loopback (hlib.gitUrl): each connection goes
    # to /run/hyperhive/git.sock, which the daemon forwards byte for byte to its HTTP
    # listener, where the token is checked as for any client. The host's loopback is not
    # reachable from the container's network namespace: this socket is its way there.
    systemd.sockets.hyperhive-git = {
      description = "hyperhive git remote of agent ${cfg.name}";
      wantedBy = [ "sockets.target" ];
      listenStreams = [ hlib.gitListen ];
    };

    systemd.services.hyperhive-git = {
      description = "hyperhive git remote of agent ${cfg.name}, proxied to ${hlib.gitSocket}";
      requires = [ "hyperhive-git.socket" ];
      after = [ "hyperhive-git.socket" ];
      serviceConfig = {
        Type = "notify";
        ExecStart = hlib.shellJoin [
          "${config.systemd.package}/lib/systemd/systemd-socket-proxyd"
          hlib.gitSocket
        ];
        # The daemon gives git.sock (0600) to the agent user's mapped uid.
        User = agent;
        Group = hlib.agentGroup;
        PrivateNetwork = true; # the listening socket is passed in; the rest is a unix socket
        PrivateTmp = true;
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
      };
    };
  };
}
