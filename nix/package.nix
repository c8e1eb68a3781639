# hyperhive as a Nix package: `pkgs.callPackage ./nix/package.nix { }`.
#
# The files hyperhive ships beside its Python package (hooks/, nix/, prompts/ — see
# hyperhive/resources.py, which finds them one directory above the `hyperhive` package) are
# copied next to it in site-packages, so the installed package finds them the same way the
# editable checkout does.
{
  lib,
  python3Packages,
}:
let
  hlib = import ./lib.nix;
in
python3Packages.buildPythonApplication {
  pname = "hyperhive";
  version = "0.1.0";
  pyproject = true;

  src = builtins.path {
    name = "hyperhive-source";
    path = ../.;
    filter = hlib.sourceFilter;
  };

  build-system = [ python3Packages.setuptools ];

  dependencies = with python3Packages; [
    apscheduler
    dulwich
    flask
    flask-sock
    flask-wtf
    gunicorn
    mcp
    pygments
    unidiff
  ];

  # nixpkgs carries its own versions of these; the pins in pyproject.toml are what CI tests.
  pythonRelaxDeps = true;

  postInstall = ''
    site=$out/${python3Packages.python.sitePackages}
    cp -r hooks nix prompts "$site"/
    chmod +x "$site"/hooks/* || true
  '';

  # The test suite needs git fixtures, nix-instantiate and Chromium: it runs in CI, not here.
  doCheck = false;

  meta = {
    description = "Run a swarm of AI coding agents in containers, every config change reviewed and deployed through git";
    mainProgram = "hyperhive";
    platforms = lib.platforms.linux;
  };
}
