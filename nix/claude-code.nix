# The Claude Code CLI hyperhive's harness drives by default (`hyperhive.claudePackage`):
# the native build of @anthropic-ai/claude-code at the version the harness is tested with,
# from the npm registry (the per-platform package holds the executable; its hash is the
# registry's `dist.integrity`). The harness refuses a claude older than
# hyperhive/harness/claude_version.py MIN_VERSION, whichever package it comes from.
#
# Modelled on nixpkgs' pkgs/by-name/cl/claude-code-bin/package.nix: the executable is a
# Bun single-file program, so it is patched for the Nix dynamic loader but never stripped,
# and wrapped with the auto-updater off and ripgrep, ps, bubblewrap and socat on its PATH.
{
  lib,
  stdenvNoCC,
  fetchurl,
  makeBinaryWrapper,
  autoPatchelfHook,
  procps,
  ripgrep,
  bubblewrap,
  socat,
}:
let
  version = "2.1.328";
  platforms = {
    x86_64-linux = {
      npm = "linux-x64";
      hash = "sha512-KuzL+dBHgDCFTHJxwW+xuBJdVKfBsesGx2BBcTOG9sYDGoAD7b1hUV8rsTS4xjoJsB2SmeGraGjBiFuhrYuC9w==";
    };
    aarch64-linux = {
      npm = "linux-arm64";
      hash = "sha512-zeWsClzx/rli8q6RsngKisu5BnuZ41J7Htp0qgsdZomaJCINiksf+mewQ/gyaylKajBZCoE9Z8R+OkLMjIkJig==";
    };
  };
  system = stdenvNoCC.hostPlatform.system;
  platform =
    platforms.${system}
      or (throw "hyperhive: no Claude Code ${version} for ${system}; set hyperhive.claudePackage");
in
stdenvNoCC.mkDerivation {
  pname = "claude-code";
  inherit version;

  src = fetchurl {
    url = "https://registry.npmjs.org/@anthropic-ai/claude-code-${platform.npm}/-/claude-code-${platform.npm}-${version}.tgz";
    inherit (platform) hash;
  };
  sourceRoot = "package";

  dontBuild = true;
  dontStrip = true; # a stripped Bun program runs the bare Bun runtime instead

  nativeBuildInputs = [
    makeBinaryWrapper
    autoPatchelfHook
  ];

  installPhase = ''
    runHook preInstall
    install -Dm755 claude $out/bin/claude
    wrapProgram $out/bin/claude \
      --set DISABLE_AUTOUPDATER 1 \
      --set USE_BUILTIN_RIPGREP 0 \
      --prefix PATH : ${
        lib.makeBinPath [
          procps
          ripgrep
          bubblewrap
          socat
        ]
      }
    runHook postInstall
  '';

  doInstallCheck = true;
  installCheckPhase = ''
    runHook preInstallCheck
    HOME=$(mktemp -d) $out/bin/claude --version | grep -F ${version}
    runHook postInstallCheck
  '';

  meta = {
    description = "Claude Code, the CLI hyperhive's agents run";
    homepage = "https://github.com/anthropics/claude-code";
    license = lib.licenses.unfree;
    sourceProvenance = [ lib.sourceTypes.binaryNativeCode ];
    platforms = builtins.attrNames platforms;
    mainProgram = "claude";
  };
}
