# Pure helpers shared by hyperhive's NixOS modules and the meta flake.
#
# Builtins only: no nixpkgs, no `lib`, no `pkgs`, so tests evaluate every function here with
# `nix-instantiate --eval --strict --json` and nothing else installed.
let
  inherit (builtins)
    all
    attrNames
    concatStringsSep
    elem
    filter
    hashString
    isList
    isString
    listToAttrs
    mapAttrs
    match
    replaceStrings
    stringLength
    substring
    throw
    toString
    ;

  # The one agent-name rule (hyperhive/names.py): ^[a-z][a-z0-9-]{0,30}$
  isAgentName = name: isString name && match "[a-z][a-z0-9-]{0,30}" name != null;

  checkAgentName =
    name:
    if isAgentName name then
      name
    else
      throw "hyperhive: invalid agent name ${toJSONish name}: must match ^[a-z][a-z0-9-]{0,30}$";

  toJSONish = v: if isString v then "\"${v}\"" else builtins.toJSON v;

  # `nixos-container create` refuses names longer than 11 characters (the host side of the
  # veth pair is `ve-<container>`, and interface names stop at 15). Agent names may have 31.
  maxContainerName = 11;
in
rec {
  inherit isAgentName checkAgentName maxContainerName;

  # Fixed facts of every agent container.
  agentUser = "agent";
  agentUid = 1000; # inside the container; on the host it is <picked base> + 1000
  agentGroup = "users"; # NixOS's group of normal users
  agentGid = 100; # inside the container; on the host <picked base> + 100
  agentSocket = "/run/hyperhive/agent.sock";
  # The git remote: the daemon forwards gitSocket (hyperhive/daemon/gitsock.py) to its
  # HTTP listener; systemd-socket-proxyd serves it on the container's own loopback.
  gitSocket = "/run/hyperhive/git.sock";
  gitListen = "127.0.0.1:8420";
  gitUrl = "http://127.0.0.1:8420/git";
  tokenFile = "/state/hyperhive-token"; # the manager's (hyperhive/tokens.py STATE_FILE)
  stateDir = "/state";
  etcDir = "/etc/hyperhive";
  builtinServer = "hyperhive"; # the harness's own MCP server key (an extra with it is dropped)

  # The oldest Claude Code the harness drives (hyperhive/harness/claude_version.py
  # MIN_VERSION, which the harness checks against `claude --version` at its start). A
  # package version that is not a version (empty: a hand-made wrapper) is left to that check.
  minClaudeVersion = "2.1.0";
  claudeSupported =
    version:
    match "[0-9]+(\\.[0-9]+)*.*" version == null
    || builtins.compareVersions version minClaudeVersion >= 0;

  # Container of an agent: "h-<name>" when that fits nixos-container's 11 characters
  # (names up to 9 characters). Longer names become "h_" + their first 4 characters + the
  # first 5 hex digits of sha256(name): still 11 characters, and never equal to a short
  # name's container, since "_" never occurs in an agent name.
  containerName =
    name:
    let
      n = checkAgentName name;
    in
    if stringLength n + 2 <= maxContainerName then
      "h-${n}"
    else
      "h_${substring 0 4 n}${substring 0 5 (hashString "sha256" n)}";

  # The meta flake's input holding an agent's applied repo (hyperhive/workflow/meta.py).
  agentInput = name: "agent-${checkAgentName name}";

  # git identity of the agent's `claude`: "<name> <<name>@hyperhive>".
  gitIdentity = name: {
    name = checkAgentName name;
    email = "${name}@hyperhive";
  };

  # -- /etc/hyperhive/extra-mcp.json ------------------------------------------------------

  # One `hyperhive.extraMcpServers.<key>` entry with its defaults filled in. A NixOS
  # submodule value already has them; a raw attribute set (tests, the local runtime) may not.
  renderMcpServer = server: {
    command = server.command;
    args = server.args or [ ];
    env = server.env or { };
    allowedTools = server.allowedTools or [ "*" ];
  };

  # The whole `hyperhive.extraMcpServers` map, key for key. A key named `hyperhive` is kept
  # as-is: dropping it (with a warning) is the harness's job, so the drop is logged where
  # the agent's turns are.
  renderExtraMcp = servers: mapAttrs (_: renderMcpServer) servers;

  # -- /etc/hyperhive/policy.json ---------------------------------------------------------

  # null means unrestricted for allowedRecipients and allowedBash; model, claude (the
  # executable's absolute path) and notesCompactBytes null = the harness's default (the
  # CLI's model, `claude` on PATH, 32 KiB); allowSubagents defaults to false. Keys:
  # hyperhive/runtime/policy.py POLICY_KEYS.
  renderPolicy = cfg: {
    allowedRecipients = cfg.allowedRecipients or null;
    allowedBash = cfg.allowedBash or null;
    model = cfg.model or null;
    claude = cfg.claude or null;
    notesCompactBytes = cfg.notesCompactBytes or null;
    allowSubagents = cfg.allowSubagents or false;
  };

  # What the host stores with a deploy (hyperhive/runtime/policy.py's normalized shape):
  # the policy plus the extra MCP servers.
  deployedPolicy =
    cfg:
    renderPolicy cfg
    // {
      extraMcpServers = renderExtraMcp (cfg.extraMcpServers or { });
    };

  # allowedRecipients entries that are neither "operator" nor a valid agent name (the local
  # runtime refuses those at deploy; the NixOS module turns them into an assertion).
  invalidRecipients =
    recipients:
    if recipients == null then [ ] else filter (r: r != "operator" && !isAgentName r) recipients;

  # -- the host service -------------------------------------------------------------------

  # argv after the `hyperhive` executable for the host's systemd unit.
  upArgs =
    {
      home,
      bind,
      port,
      runtime,
    }:
    [
      "up"
      "--home"
      (toString home)
      "--bind"
      bind
      "--port"
      (toString port)
      "--runtime"
      runtime
    ];

  # POSIX shell quoting, for ExecStart lines (systemd accepts single quotes the same way).
  shellQuote = s: "'" + replaceStrings [ "'" ] [ "'\\''" ] (toString s) + "'";
  shellJoin = args: concatStringsSep " " (map shellQuote args);

  # nspawn flags for an agent container (written as EXTRA_NSPAWN_FLAGS into
  # /etc/nixos-containers/<container>.conf by the nixos-container runtime): a private user
  # namespace whose range nspawn picks and records by chowning the container's root, the
  # agent's state at /state and its socket directory at /run/hyperhive.
  privateUsersFlags = [
    "--private-users=pick"
    "--private-users-ownership=chown"
  ];
  nspawnFlags =
    {
      home,
      name,
    }:
    privateUsersFlags
    ++ [
      "--bind=${toString home}/agents/${checkAgentName name}/state:${stateDir}"
      "--bind=${toString home}/run/agents/${name}:/run/hyperhive"
    ];

  # -- sources --------------------------------------------------------------------------

  # What of the source tree goes into the package and the meta flake's `hyperhive` input:
  # no VCS data, virtualenvs, caches, tests or benchmarks.
  sourceFilter =
    path: type:
    let
      base = baseNameOf (toString path);
    in
    !(elem base [
      ".git"
      ".venv"
      "venv"
      "__pycache__"
      ".pytest_cache"
      ".ruff_cache"
      "node_modules"
      "result"
      "tests"
      "bench"
      "hyperhive.egg-info"
    ]);

  # -- the meta flake ---------------------------------------------------------------------

  # The module that makes a NixOS configuration an agent container.
  containerModule = name: {
    boot.isContainer = true;
    networking.hostName = containerName name;
    networking.useDHCP = false;
    hyperhive.name = checkAgentName name;
  };

  # Modules of agent `name`: the harness base, the agent's own agent.nix at its deployed
  # revision (`src`: the fetched applied repo), the container module. `src` and
  # `hyperhiveSrc` are flake inputs (or anything with an outPath, or path strings).
  agentModules =
    {
      name,
      src,
      hyperhiveSrc,
    }:
    [
      "${hyperhiveSrc}/nix/harness-base.nix"
      "${src}/agent.nix"
      (containerModule name)
    ];

  # Every agent's revision, as recorded in the meta repo's hyperhive.json.
  revisions = agents: mapAttrs (_: a: a.rev) agents;

  # Names of the agents whose input the meta flake lacks (a broken render: fail loudly).
  missingInputs = inputs: agents: filter (n: !(inputs ? ${agentInput n})) (attrNames agents);

  # An attribute set from a list of names (builtins-only `genAttrs`).
  genAttrs = names: f: listToAttrs (map (n: { name = n; value = f n; }) names);

  # Every element of a list is a string (for light assertions without nixpkgs types).
  allStrings = xs: isList xs && all isString xs;
}
