# hyperhive as a Nix package: `pkgs.callPackage ./nix/package.nix { }`.
#
# Its Python dependencies are the exact versions pyproject.toml pins, built from their
# PyPI wheels (nix/pypi.nix: URL and hash of each), and the rest from nixpkgs. Nothing is
# relaxed: the runtime-deps check fails the build when a nixpkgs package is older than a
# wheel requires, and the imports check runs every module a container or the host starts.
#
# The files hyperhive ships beside its Python package (hooks/, nix/, prompts/ — see
# hyperhive/resources.py, which finds them one directory above the `hyperhive` package) are
# copied next to it in site-packages, so the installed package finds them the same way the
# editable checkout does.
{
  lib,
  fetchurl,
  git,
  python3Packages,
}:
let
  hlib = import ./lib.nix;
  py = python3Packages;
  pins = import ./pypi.nix;

  # One pinned wheel (pure Python: py3-none-any), its dependencies taken from the other
  # pins first, then from nixpkgs.
  wheel =
    pname: pin:
    py.buildPythonPackage {
      inherit pname;
      inherit (pin) version;
      format = "wheel";
      src = fetchurl { inherit (pin) url hash; };
      dependencies = map (d: fromPypi.${d} or py.${d}) pin.dependencies;
      pythonImportsCheck = pin.imports;
    };
  fromPypi = builtins.mapAttrs wheel pins;
in
py.buildPythonApplication {
  pname = "hyperhive";
  version = "0.1.0";
  pyproject = true;

  src = builtins.path {
    name = "hyperhive-source";
    path = ../.;
    filter = hlib.sourceFilter;
  };

  build-system = [ py.setuptools ];

  # pyproject.toml's dependencies, each the pinned wheel (tests/test_packaging.py checks
  # that every one of them is in nix/pypi.nix at the version pyproject.toml pins).
  dependencies = with fromPypi; [
    apscheduler
    dulwich
    flask
    flask-sock
    flask-wtf
    gunicorn
    pygments
    unidiff
  ];

  # The git CLI copies long histories into the applied repos and walks them
  # (hyperhive/gitstore/gitcli.py): every `hyperhive` command finds it, whatever PATH it
  # runs with.
  makeWrapperArgs = [
    "--prefix"
    "PATH"
    ":"
    (lib.makeBinPath [ git ])
  ];

  postInstall = ''
    site=$out/${py.python.sitePackages}
    cp -r hooks nix prompts "$site"/
    chmod +x "$site"/hooks/* || true
  '';

  # What the host (`hyperhive up`, the forge) and each container (`hyperhive harness`,
  # `hyperhive mcp`) import: a missing or too old dependency fails here, not on a host.
  pythonImportsCheck = [
    "hyperhive.cli"
    "hyperhive.mcp.server"
    "hyperhive.harness.loop"
    "hyperhive.daemon.up"
    "forge_ui"
  ];

  # The test suite needs git fixtures, nix-instantiate and Chromium: it runs in CI, not here.
  doCheck = false;

  passthru.pythonDeps = fromPypi;

  meta = {
    description = "Run a swarm of AI coding agents in containers, every config change reviewed and deployed through git";
    mainProgram = "hyperhive";
    platforms = lib.platforms.linux;
  };
}
