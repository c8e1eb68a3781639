"""The wheel (what nix/package.nix installs) carries every file the forge serves."""

import contextlib
import importlib
import importlib.metadata
import json
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from support.once import once_per_run

from hyperhive.daemon.hostsock import HostSocket
from hyperhive.errors import HiveError

ROOT = Path(__file__).resolve().parent.parent


def build_wheel(out: Path) -> None:
    """The wheel of the tracked files (what nix/package.nix builds), without the venv's,
    into `out`; built with the venv's setuptools (the dev extra's), as nix builds it with
    nixpkgs': pip's isolated build would install one from PyPI first (3 s more of CPU)."""
    src = out / "src"
    for rel in filter(None, TRACKED):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes((ROOT / rel).read_bytes())
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(src)],
        check=True, capture_output=True, cwd=out,
    )  # fmt: skip


@pytest.fixture(scope="session")
def wheel(request) -> Path:
    """The wheel, built once for the whole run."""
    (built,) = once_per_run(request.config, "wheel", build_wheel).glob("hyperhive-*.whl")
    return built


TRACKED = subprocess.run(
    ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
).stdout.split("\0")


def test_the_wheel_has_every_template_and_static_file(wheel):
    shipped = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        rel
        for rel in TRACKED
        if rel.startswith(("forge_ui/templates/", "forge_ui/static/")) and (ROOT / rel).is_file()
    }
    assert wanted, "no forge files found: the test would check nothing"
    assert wanted <= shipped, sorted(wanted - shipped)


# -- nix/pypi.nix: the wheels nix/package.nix builds ----------------------------------------


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def nix_eval(expr: str) -> object:
    out = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "--expr", expr],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


PINS: dict = nix_eval(f"import {ROOT / 'nix' / 'pypi.nix'}")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements(dist: str) -> list[Requirement]:
    """The runtime requirements of an installed distribution (markers of this Python)."""
    found = []
    for line in importlib.metadata.requires(dist) or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            found.append(req)
    return found


def test_every_pyproject_pin_is_built_by_nix_at_the_same_version():
    assert PROJECT["dependencies"], "no dependencies read: the test would check nothing"
    for line in PROJECT["dependencies"]:
        req = Requirement(line)
        spec = list(req.specifier)
        # an exact pin, so what CI tests is what the NixOS package runs
        assert len(spec) == 1 and spec[0].operator == "==", f"{line}: pin it with =="
        pin = PINS.get(canonical(req.name))
        assert pin is not None, f"{req.name} is not in nix/pypi.nix"
        assert pin["version"] == spec[0].version, f"{req.name}: nix/pypi.nix has {pin['version']}"
        assert importlib.metadata.version(req.name) == pin["version"]  # what the venv runs


def test_every_nix_pin_is_needed_and_satisfies_who_needs_it():
    direct = {canonical(Requirement(line).name) for line in PROJECT["dependencies"]}
    needed: dict[str, list[Requirement]] = {}
    for name in PINS:
        for req in requirements(name):
            needed.setdefault(canonical(req.name), []).append(req)
    for name, pin in PINS.items():
        # a transitive pin: some pinned wheel requires it, at a version this one satisfies
        assert name in direct or name in needed, f"nix/pypi.nix pins {name}, which nothing needs"
        for req in needed.get(name, []):
            assert req.specifier.contains(pin["version"]), f"{name} {pin['version']}: {req}"
        assert pin["url"].startswith("https://files.pythonhosted.org/packages/")
        assert pin["url"].endswith(f"-{pin['version']}-py3-none-any.whl")
        assert re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", pin["hash"])


def test_every_pin_lists_the_requirements_of_its_wheel():
    for name, pin in PINS.items():
        declared = {canonical(d) for d in pin["dependencies"]}
        for req in requirements(name):
            # an extra's requirements would have to be named beside it: no pin asks for one
            assert not req.extras, f"{name} needs {req}: name what its extras need"
            assert canonical(req.name) in declared, (
                f"{name} needs {req}; nix/pypi.nix lists {declared}"
            )


# What nix/package.nix takes from nixpkgs (python3Packages attributes), for the stub below.
NIXPKGS_PYTHON = [
    "blinker",
    "click",
    "itsdangerous",
    "jinja2",
    "markupsafe",
    "simple-websocket",
    "typing-extensions",
    "tzlocal",
    "urllib3",
    "werkzeug",
    "wtforms",
]


def evaluate_package() -> dict:
    """nix/package.nix called with a stub nixpkgs: every build function returns its
    arguments, so the evaluation shows what the package is made of."""
    stubs = " ".join(
        f'"{n}" = {{ pname = "nixpkgs-{n}"; version = "0"; }};' for n in NIXPKGS_PYTHON
    )
    expr = f"""
      let
        lib = {{
          makeBinPath = ps: builtins.concatStringsSep ":" (map (p: "${{p}}/bin") ps);
          platforms.linux = [ "x86_64-linux" ];
        }};
        py = {{ {stubs} }} // {{
          buildPythonPackage = a: a;
          buildPythonApplication = a: a;
          setuptools = {{ }};
          python.sitePackages = "lib/python3.12/site-packages";
        }};
        pkg = import {ROOT / "nix" / "package.nix"} {{
          inherit lib;
          fetchurl = a: a;
          git = "/stub/git";
          python3Packages = py;
        }};
        wheel = w: {{
          inherit (w) pname version format pythonImportsCheck;
          relax = w.pythonRelaxDeps or null;
          url = w.src.url;
          deps = map (d: d.pname) w.dependencies;
        }};
      in {{
        deps = map wheel pkg.dependencies;
        all = builtins.mapAttrs (_: wheel) pkg.passthru.pythonDeps;
        imports = pkg.pythonImportsCheck;
        relax = pkg.pythonRelaxDeps or null;
        wrap = pkg.makeWrapperArgs;
      }}
    """
    return nix_eval(expr)


def test_the_package_builds_every_pin_and_checks_the_modules_hosts_run():
    pkg = evaluate_package()
    assert pkg["relax"] is None  # nothing of hyperhive's own requirements is relaxed
    assert pkg["wrap"] == ["--prefix", "PATH", ":", "/stub/git/bin"]  # gitstore/gitcli.py
    direct = sorted(canonical(Requirement(line).name) for line in PROJECT["dependencies"])
    assert sorted(w["pname"] for w in pkg["deps"]) == direct
    assert sorted(pkg["all"]) == sorted(PINS)
    for name, w in pkg["all"].items():
        assert (w["version"], w["url"], w["format"]) == (
            PINS[name]["version"],
            PINS[name]["url"],
            "wheel",
        )
        # a dependency is the pinned wheel when there is one, else nixpkgs'
        for dep, built in zip(PINS[name]["dependencies"], w["deps"], strict=True):
            assert built == (dep if dep in PINS else f"nixpkgs-{dep}")
        assert w["pythonImportsCheck"] == PINS[name]["imports"]
        assert w["relax"] is None  # nor of a wheel's: nixpkgs has what each asks for
    assert {
        "hyperhive.mcp.server",
        "hyperhive.harness.loop",
        "hyperhive.daemon.up",
        "forge_ui",
    } <= set(pkg["imports"])


def runtime_closure() -> set[str]:
    """pyproject.toml's dependencies and theirs, as installed here (canonical names)."""
    todo = [Requirement(line).name for line in PROJECT["dependencies"]]
    seen: set[str] = set()
    while todo:
        name = canonical(todo.pop())
        if name not in seen:
            seen.add(name)
            todo += [req.name for req in requirements(name)]
    return seen


# Run by the interpreter of test_the_checked_modules_import: an import of a module that only
# a distribution outside the runtime dependencies provides (the dev extra's: mcp, pydantic,
# pytest, ...) fails, as it would where only the runtime dependencies are installed.
ONLY_RUNTIME = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class OnlyRuntime(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is not in hyperhive's runtime dependencies")
sys.meta_path.insert(0, OnlyRuntime())
"""


def test_the_checked_modules_import_with_the_runtime_dependencies_only():
    # nix/package.nix's pythonImportsCheck and the wheels' `imports`, against the venv with
    # the dev extra's distributions hidden (the tests need the mcp SDK; hyperhive must not)
    modules = [
        *evaluate_package()["imports"],
        *(m for p in PINS.values() for m in p["imports"]),
    ]
    keep = runtime_closure() | {"hyperhive"}
    assert {"flask", "werkzeug", "dulwich"} <= keep and "mcp" not in keep
    blocked = {
        top
        for top, dists in importlib.metadata.packages_distributions().items()
        if not {canonical(d) for d in dists} & keep
    }
    assert {"mcp", "pydantic", "pytest"} <= blocked  # the finder hides something real
    code = ONLY_RUNTIME + f"import {', '.join(modules)}\n"
    subprocess.run([sys.executable, "-c", code, ",".join(blocked)], check=True, timeout=60)
    # and the finder does hide them: the SDK does not import under it
    refused = subprocess.run(
        [sys.executable, "-c", ONLY_RUNTIME + "import mcp", ",".join(blocked)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "mcp is not in hyperhive's runtime dependencies" in refused.stderr


def test_the_installed_wheel_serves_mcp_with_the_runtime_dependencies_only(wheel, tmp_path):
    """`hyperhive mcp` from the wheel (not this checkout), with the dev extra's
    distributions hidden: the initialize handshake, the tools the daemon offers, a call
    forwarded to it and its refusal coming back as a tool error."""
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), wheel],
        check=True,
        capture_output=True,
    )
    keep = runtime_closure() | {"hyperhive"}
    blocked = {
        top
        for top, dists in importlib.metadata.packages_distributions().items()
        if not {canonical(d) for d in dists} & keep
    }
    sent = []

    def handle(req: dict) -> dict:
        if req["op"] == "whoami":
            return {"name": "worker", "role": "agent", "tools": ["send"]}
        if req["body"] == "refuse me":
            raise HiveError("worker may not send to operator")
        sent.append(req)
        return {"id": 7}

    with tempfile.TemporaryDirectory(prefix="hh-") as short:  # a socket path's 107 bytes
        daemon = HostSocket(Path(short) / "agent.sock", handle, mode=0o600)
        daemon.start()
        try:
            code = ONLY_RUNTIME + (
                f"sys.path.insert(0, {str(site)!r})\n"
                "import hyperhive, sys\n"
                f"assert hyperhive.__file__.startswith({str(site)!r}), hyperhive.__file__\n"
                "from hyperhive.cli import main\n"
                "sys.argv[1:] = []\n"
                f"sys.exit(main(['mcp', '--socket', {str(daemon.path)!r}]))\n"
            )
            lines = [
                {"method": "initialize", "params": {"protocolVersion": "2025-06-18"}},
                {"method": "tools/list"},
                {"method": "tools/call", "params": {"name": "send", "arguments": {
                    "to": "operator", "body": "hello"}}},
                {"method": "tools/call", "params": {"name": "send", "arguments": {
                    "to": "operator", "body": "refuse me"}}},
            ]  # fmt: skip
            # one request at a time: each reply before the next request, as a client does
            proc = subprocess.Popen(
                [sys.executable, "-c", code, ",".join(blocked)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            replies = []
            with contextlib.suppress(BrokenPipeError):  # it exited: its stderr says why
                for i, msg in enumerate(lines, 1):
                    line = json.dumps({"jsonrpc": "2.0", "id": i, **msg}).encode() + b"\n"
                    proc.stdin.write(line)
                    proc.stdin.flush()
                    replies.append(json.loads(proc.stdout.readline() or b"null"))
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()  # end of stdin ends the server
            assert proc.wait(timeout=30) == 0, proc.stderr.read().decode()
            proc.stdout.close()
            proc.stderr.close()
        finally:
            daemon.stop()
    init, listing, ok, refused = (r and r.get("result") for r in replies)
    assert init["serverInfo"]["name"] == "hyperhive", replies
    assert [t["name"] for t in listing["tools"]] == ["send"]
    assert ok["isError"] is False and json.loads(ok["content"][0]["text"]) == {"id": 7}
    assert refused["isError"] is True
    assert "worker may not send to operator" in refused["content"][0]["text"]
    assert sent == [{"op": "send", "to": "operator", "body": "hello"}]
