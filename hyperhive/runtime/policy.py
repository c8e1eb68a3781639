"""An agent's deployed policy: its `hyperhive.*` options, evaluated at deploy.

On the local runtime the options are read from the config being deployed with
`nix-instantiate --eval --strict --json` (restricted evaluation with the search path
emptied but for the config itself: the config can read only its own files; the checkout
refuses symlinks that leave it), calling each module with stub arguments: `pkgs` and
`config` hold nothing else than `config.hyperhive` (the merged result), `lib` has only
`mkDefault`, `mkForce`, `mkOverride` and `mkIf` (priorities are ignored), and any other
argument a module's
signature asks for (`modulesPath`, …) throws only if a `hyperhive.*` value uses it. So
modules written `{ ... }:`, `{ config, pkgs, ... }:` or as plain attribute sets all work,
and `pkgs.*` in unrelated options is never evaluated. Modules listed in `imports` are
followed (each file once) and their `hyperhive` definitions merged as NixOS would: lists
concatenated, attribute sets merged, any other conflicting values an error.

The rule that keeps a restriction from being silently dropped:

- nix-instantiate on PATH: the options are evaluated; any evaluation error (nix's
  message), an unknown `hyperhive.<option>` or a value of the wrong type FAILS the build;
- nix-instantiate not on PATH: if any `.nix` file of the config mentions an attribute
  named `hyperhive` (`hyperhive.…` or `hyperhive =`, comments included — a false positive
  only costs a failed build, a false negative would drop a restriction) the build FAILS
  saying the restriction cannot be evaluated; otherwise the policy is the default,
  unrestricted one.

The result is stored beside `deployed.rev` as `agents/<name>/policy.json` by the
runtime's successful deploy; `hyperhive.policy.deployed_policy` reads it for the broker
and the harness, and holds the schema `normalize` checks against.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from hyperhive import policy as schema
from hyperhive.home import Home
from hyperhive.policy import DEFAULT_POLICY, POLICY_FILE, policy_file
from hyperhive.runtime import stream
from hyperhive.runtime.base import BuildError, Emit

EVAL_TIMEOUT = 120

# An attribute named hyperhive: `hyperhive.x`, `hyperhive = …`, `"hyperhive".x`, `config.hyperhive`.
DECLARES_RE = re.compile(r"""(?<![\w'-])"?hyperhive"?\s*(?:\.|=(?!=))""")

EVAL_EXPR = r"""
{ file, part ? "policy", pkgsFile ? null }:
let
  inherit (builtins) attrNames concatStringsSep elemAt filter foldl' functionArgs genList
    isAttrs isFunction isList isPath isString length mapAttrs;
  lib = {
    mkDefault = x: x;
    mkForce = x: x;
    mkOverride = _: x: x;
    mkIf = cond: x: if cond then x else { };
  };
  # the packages of a policy diff are read with stub derivations (policydiff.py), the
  # options always with no pkgs at all
  stubPkgs = if pkgsFile == null then { } else builtins.fromJSON (builtins.readFile pkgsFile);
  missing = n: throw ("hyperhive: the module argument `${n}` is not available when "
    + "the local runtime evaluates hyperhive.* options");
  # arguments without a default that the stub lacks: they throw only when used
  required = f: let a = functionArgs f; in removeAttrs a (filter (n: a.${n}) (attrNames a));
  argsFor = pkgs: f: mapAttrs (n: _: missing n) (required f) // {
    inherit lib pkgs config;
    options = { };
  };
  moduleKeys = [ "config" "options" "imports" "_file" "key" "disabledModules" "meta" ];
  load = pkgs: m:
    let
      raw = if isPath m || isString m then import m else m;
      v = if isFunction raw then raw (argsFor pkgs raw) else raw;
      full = v ? config || v ? options;
      stray = removeAttrs v (moduleKeys ++ [ "freeformType" ]);
      cfg =
        if !full then v
        else if stray == { } then v.config or { }
        else throw ("a module with `config` or `options` cannot also set "
          + "${concatStringsSep ", " (attrNames stray)} at its top level: put them in `config`");
      h = cfg.hyperhive or { };
    in {
      hyperhive =
        if isAttrs h then h else throw "hyperhive must be an attribute set of options";
      imports = v.imports or [ ];
      packages = (cfg.environment or { }).systemPackages or [ ];
    };
  keyOf = parent: i: m: if isPath m || isString m then toString m else "${parent}#${toString i}";
  closure = pkgs: builtins.genericClosure {
    startSet = [ { key = toString file; l = load pkgs file; } ];
    operator = item:
      genList
        (i: let m = elemAt item.l.imports i; in { key = keyOf item.key i m; l = load pkgs m; })
        (length item.l.imports);
  };
  modules = closure { };
  mergeValue = k: x: y:
    if isList x && isList y then x ++ y
    else if isAttrs x && isAttrs y then merge "${k}." x y
    else if x == y then x
    else throw "hyperhive.${k} has conflicting definitions";
  mergeKey = prefix: b: acc: k:
    acc // { ${k} = if acc ? ${k} then mergeValue "${prefix}${k}" acc.${k} b.${k} else b.${k}; };
  merge = prefix: a: b: foldl' (mergeKey prefix b) a (attrNames b);
  policy = foldl' (merge "") { } (map (item: item.l.hyperhive) modules);
  config = { hyperhive = policy; };
  packages = builtins.concatMap (item: item.l.packages) (closure stubPkgs);
in
if part == "both" then { inherit policy packages; } else policy
"""


class EvalTimeout(BuildError):
    """The evaluation ran past its time limit (not a property of the config: not cached)."""


def declares_options(root: Path) -> list[str]:
    """The config's `.nix` files (relative) that textually mention a `hyperhive` attribute."""
    found = []
    for path in sorted(root.rglob("*.nix")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if DECLARES_RE.search(text):
            found.append(str(path.relative_to(root)))
    return found


def extract(root: Path, emit: Emit) -> dict:
    """The policy of the config checked out at `root`; BuildError when it cannot be
    determined (see the module docstring for the rule) or its claude cannot run here."""
    policy = evaluate(root, emit)
    claude = policy.get("claude")
    # the harness runs on this host: a path that cannot run fails the build, not every turn
    if claude is not None and not (os.path.isfile(claude) and os.access(claude, os.X_OK)):
        raise BuildError(f"hyperhive.claude: {claude} is not an executable file on this host")
    emit(f"policy: {json.dumps(policy, sort_keys=True)}")
    return policy


def evaluate(root: Path, emit: Emit, timeout: float = EVAL_TIMEOUT) -> dict:
    """The `hyperhive.*` options of the config at `root`, checked and with their defaults:
    `extract` without the checks against this host (the policy diff of a review uses it)."""
    nix = shutil.which("nix-instantiate")
    if nix is None:
        declaring = declares_options(root)
        if declaring:
            raise BuildError(
                f"{', '.join(declaring)} declares hyperhive.* options, but nix-instantiate is "
                "not on PATH, so the local runtime cannot evaluate (and enforce) them: "
                "install nix or remove the options"
            )
        emit("nix-instantiate is not on PATH and no hyperhive.* option is declared: default policy")
        return dict(DEFAULT_POLICY)
    emit("$ nix-instantiate --eval --strict --json (hyperhive.* options of agent.nix)")
    return normalize(_evaluate(nix, root / "agent.nix", emit, timeout))


def _evaluate(
    nix: str,
    agent_nix: Path,
    emit: Emit,
    timeout: float = EVAL_TIMEOUT,
    args: tuple[str, ...] = (),
    what: str = "the hyperhive.* options",
) -> object:
    root = agent_nix.parent.resolve()
    argv = [
        nix,
        "--eval",
        "--strict",
        "--json",
        "--option",
        "restrict-eval",
        "true",
        "-I",
        str(root),
        "--argstr",
        "file",
        str(root / agent_nix.name),
        *args,
        "--expr",
        EVAL_EXPR,
    ]
    left = stream.remaining()  # a check's time limit, when shorter
    limit = timeout if left is None else min(timeout, left)
    proc = subprocess.Popen(
        argv,
        cwd=root,
        # restricted evaluation reads the search path too: only the config's own (-I)
        env={**os.environ, "NIX_PATH": ""},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=stream.own_group(),  # a check's time limit kills its group
    )
    with stream.limited(proc):
        try:
            out, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            stream.kill_group(proc)
            proc.communicate()
            if limit < timeout:
                raise stream.timed_out() from None
            raise EvalTimeout(f"evaluating {what} took over {timeout:g}s: gave up") from None
    stderr = err.decode(errors="replace")
    for line in stderr.splitlines():
        emit(line)
    if proc.returncode != 0:
        message = nix_error(stderr).replace(f"{root}/", "")
        raise BuildError(f"cannot evaluate {what}: {message}")
    try:
        return json.loads(out)
    except ValueError as e:
        raise BuildError(f"nix-instantiate printed no JSON policy: {e}") from None


def nix_error(stderr: str) -> str:
    """Nix's error message on one line: the `error:` line(s) and the location."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.startswith("error:")), None)
    if start is None:
        return " ".join(lines[-3:]) or "nix-instantiate failed without a message"
    message = [lines[start][len("error:") :].strip()]
    for line in lines[start + 1 :]:
        if line.startswith("at "):
            message.append(f"({line.rstrip(':')})")
            break
        if line[0].isdigit() or line.startswith(("|", "(use")):
            break
        message.append(line)
    return " ".join(message)


def normalize(raw: object) -> dict:
    """Check the evaluated options against the schema (hyperhive/policy.py) and fill in
    the defaults; a refused value fails the build."""
    try:
        return schema.normalize(raw)
    except ValueError as e:
        raise BuildError(str(e)) from None


def write_pending(home: Home, name: str, policy: dict) -> Path:
    """Write the policy next to where it goes; `commit_pending` moves it in place."""
    path = policy_file(home, name).with_name(POLICY_FILE + ".new")
    path.write_text(json.dumps(policy, indent=2, sort_keys=True) + "\n")
    return path


def commit_pending(home: Home, name: str) -> None:
    pending = policy_file(home, name).with_name(POLICY_FILE + ".new")
    os.replace(pending, policy_file(home, name))


def remove_pending(home: Home, name: str) -> None:
    policy_file(home, name).with_name(POLICY_FILE + ".new").unlink(missing_ok=True)


def remove(home: Home, name: str) -> None:
    policy_file(home, name).unlink(missing_ok=True)
    remove_pending(home, name)
