"""The real nix-instantiate on our .nix files without nixpkgs: a stub of nixpkgs's `lib`
and `pkgs`, JSON in and out, and host-module.nix called with them."""

import json
import subprocess
from pathlib import Path

from hyperhive.resources import NIX_DIR, ROOT

# Just enough of nixpkgs's `lib` for the modules' own code: options are recorded as plain
# attribute sets, types as tags, priorities are ignored.
STUB_LIB = """
let
  tag = name: { inherit name; };
  types = {
    str = tag "str";
    bool = tag "bool";
    package = tag "package";
    path = tag "path";
    port = tag "port";
    ints.positive = tag "ints.positive";
    ints.unsigned = tag "ints.unsigned";
    strMatching = re: { name = "strMatching"; inherit re; };
    enum = values: { name = "enum"; inherit values; };
    listOf = t: { name = "listOf"; of = t; };
    attrsOf = t: { name = "attrsOf"; of = t; };
    nullOr = t: { name = "nullOr"; of = t; };
    submodule = m: { name = "submodule"; options = m.options; };
  };
in {
  inherit types;
  mkOption = o: o;
  getExe' = p: exe: "${p}/bin/${exe}";
  mkEnableOption = d: { type = types.bool; default = false; description = d; };
  mkDefault = x: x;
  mkIf = c: x: if c then x else { };
  literalExpression = text: { _type = "literalExpression"; inherit text; };
  getName = p: p.pname or p;
  getVersion = p: p.version or (builtins.parseDrvName (baseNameOf (toString p))).version;
  optional = c: x: if c then [ x ] else [ ];
  optionals = c: xs: if c then xs else [ ];
  optionalAttrs = c: a: if c then a else { };
}
"""

STUB_PKGS = """{
  callPackage = p: _: "/nix/store/stub-${baseNameOf (toString p)}";
  claude-code = "/nix/store/stub-claude-code";
  git = "/nix/store/stub-git";
  bash = "/nix/store/stub-bash";
  coreutils = "/nix/store/stub-coreutils";
  util-linux = "/nix/store/stub-util-linux";
  path = "/nix/store/stub-nixpkgs";
  stdenv.hostPlatform.system = "x86_64-linux";
}"""


def nix_eval(expr: str, cwd: Path = ROOT) -> object:
    proc = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "--expr", expr],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise NixError(proc.stderr)
    return json.loads(proc.stdout)


class NixError(Exception):
    pass


def nix_str(value: object) -> str:
    """A Nix expression for a JSON-able value."""
    return f"(builtins.fromJSON {json.dumps(json.dumps(value))})"


def host(cfg: dict, select: str, tmp_path: Path) -> object:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "README.md").write_text("hyperhive\n")
    full = {
        "enable": True,
        "home": "/var/lib/hyperhive",
        "bind": "127.0.0.1",
        "port": 8420,
        "runtime": "nixos-container",
        "adminGroup": "hyperhive",
        "retention": {"failedDays": 30, "pruneAt": "03:30"},
        "package": "/nix/store/stub-hyperhive",
        "source": str(src),
        "nixpkgs": "/nix/store/stub-nixpkgs",
        "nat": {"externalInterface": None},
        **cfg,
    }
    expr = f"""
let
  lib = {STUB_LIB};
  pkgs = {STUB_PKGS};
  config = {{
    services.hyperhive = {nix_str(full)};
    nix.package = "/nix/store/stub-nix";
  }};
  m = import {NIX_DIR / "host-module.nix"} {{ inherit config lib pkgs; }};
in {select}
"""
    return nix_eval(expr)
