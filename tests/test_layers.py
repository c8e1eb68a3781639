"""The layers of the package, from the ground up (docs/ARCHITECTURE.md, "Layers"): a module
imports only from its own layer or lower ones. The walk reads every import with `ast`,
function-local and `if TYPE_CHECKING:` ones too, so a lazy import cannot hide an upward
dependency; a function-local import whose module imports the importer back (a cycle,
dodged by importing late) is refused as well. Container-side code (`harness/`, `mcp/`)
never reaches the daemon, not even through what it imports."""

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hyperhive", "forge_ui")

# The layer order, written once (docs/ARCHITECTURE.md says the same in words). A module
# belongs to the layer of the longest prefix listed. `runtime.base` (the interface the
# workflow deploys through), `runtime.ownership` (who owns an agent's files),
# `runtime.stream` (how a command runs: streamed lines, a check's time limit, which the
# workflow's checks set) and `runtime.policy` (the nix evaluation of a config's
# `hyperhive.*` options, which the workflow's policy diff runs on both sides of a change)
# sit below the runtimes that implement and use them.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "ground",
        (
            "hyperhive.errors",
            "hyperhive.names",
            "hyperhive.home",
            "hyperhive.settings",
            "hyperhive.resources",
            "hyperhive.policy",
            "hyperhive.wire",
        ),
    ),
    ("storage", ("hyperhive.gitstore", "hyperhive.broker.db")),
    (
        "domain",
        (
            "hyperhive.workflow",
            "hyperhive.agents",
            "hyperhive.spawn",
            "hyperhive.tokens",
            "hyperhive.sessions",
            "hyperhive.viewed",
            "hyperhive.operator",
            "hyperhive.broker",
            "hyperhive.runtime.base",
            "hyperhive.runtime.ownership",
            "hyperhive.runtime.stream",
            "hyperhive.runtime.policy",
        ),
    ),
    ("runtimes", ("hyperhive.runtime",)),
    ("daemon", ("hyperhive.daemon", "hyperhive.hive")),
    (
        "faces",
        ("forge_ui", "hyperhive.mcp", "hyperhive.harness", "hyperhive.cli", "hyperhive.__main__"),
    ),
]
# What runs in an agent's sandbox or container: it speaks the wire, never the daemon.
CONTAINER_SIDE = ("hyperhive.harness", "hyperhive.mcp")
DAEMON = ("hyperhive.daemon", "hyperhive.hive")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a package's __init__ by the package's name)
    line: int
    local: bool  # inside a function
    typing_only: bool  # under `if TYPE_CHECKING:`


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> int | None:
    best, found = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if _within(module, prefix) and len(prefix) > best:
                best, found = len(prefix), index
    return found


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The project module `name` names, or its closest enclosing one that exists."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(root: Path) -> tuple[dict[str, Path], list[Import]]:
    known = modules(root)
    found = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        found += _walk(tree, module, is_package, known, local=False, typing_only=False)
    return known, found


def _walk(node, module, is_package, known, local, typing_only) -> list[Import]:
    found = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import):
            names = [a.name for a in child.names]
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:  # relative: from the importer's package
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(child.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}".strip(".")
            # `from pkg import mod` imports the module pkg.mod; `from mod import name`, mod
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in child.names
            ]
        elif isinstance(child, ast.stmt | ast.excepthandler | ast.match_case):
            # an import is a statement: expressions hold none, so they are not walked
            inner_local = local or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            inner_typing = typing_only or (isinstance(child, ast.If) and _type_checking(child))
            found += _walk(child, module, is_package, known, inner_local, inner_typing)
            continue
        else:
            continue
        for name in names:
            target = _resolve(name, known) if name.split(".")[0] in PACKAGES else None
            if target is not None and target != module:
                found.append(Import(module, target, child.lineno, local, typing_only))
    return found


def _type_checking(node: ast.If) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`."""
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _parents(module: str, known: dict[str, Path]) -> list[str]:
    """The packages whose __init__ importing `module` runs, if they import the project
    themselves (an __init__ without imports runs nothing of ours)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in known]


def reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def violations(root: Path) -> list[str]:
    known, found = imports(root)
    has_imports = {i.source for i in found}
    problems = [
        f"{m}: in no layer (add it to LAYERS)"
        for m, path in known.items()
        if layer_of(m) is None and (path.name != "__init__.py" or m in has_imports)
    ]
    edges = list(found)
    for i in found:  # importing a.b.c runs a/__init__ and a/b/__init__ first
        edges += [
            Import(i.source, parent, i.line, i.local, i.typing_only)
            for parent in _parents(i.target, known)
            if parent in has_imports and not _within(i.source, parent)
        ]
    for i in edges:
        source, target = layer_of(i.source), layer_of(i.target)
        if source is not None and target is not None and target > source:
            problems.append(
                f"{i.source}:{i.line} imports {i.target}: {LAYERS[source][0]} -> "
                f"{LAYERS[target][0]} is upward"
            )
    # A late import whose target imports the importer back exists to dodge a cycle.
    eager: dict[str, set[str]] = {}
    for i in found:
        if not i.local and not i.typing_only:
            eager.setdefault(i.source, set()).add(i.target)
    for i in found:
        if i.local and not i.typing_only and i.source in reaches(eager, i.target):
            problems.append(
                f"{i.source}:{i.line} imports {i.target} inside a function to dodge a cycle"
            )
    everything: dict[str, set[str]] = {}
    for i in edges:
        everything.setdefault(i.source, set()).add(i.target)
    for module in known:
        if any(_within(module, p) for p in CONTAINER_SIDE):
            for reached in sorted(reaches(everything, module)):
                if any(_within(reached, d) for d in DAEMON):
                    problems.append(f"{module} (container side) reaches {reached}")
    return problems


def test_no_module_imports_upward_or_dodges_a_cycle():
    assert violations(ROOT) == []


def test_every_layer_prefix_names_a_real_module():
    known = modules(ROOT)
    for _, prefixes in LAYERS:
        for prefix in prefixes:
            assert any(_within(m, prefix) for m in known), prefix


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_walk_finds_upward_late_cycle_and_container_imports(tmp_path):
    """The checker itself, on a small made-up package: each kind of wrong import is
    named, and the right ones are not."""
    _write(
        tmp_path,
        {
            "hyperhive/__init__.py": "",
            "hyperhive/errors.py": "",
            "hyperhive/home.py": "from hyperhive.errors import x\n",
            "hyperhive/wire/__init__.py": "",
            # ground reaching up into the daemon, lazily: still upward
            "hyperhive/wire/notify.py": "def f():\n    from hyperhive.daemon import hostsock\n",
            "hyperhive/daemon/__init__.py": "",
            "hyperhive/daemon/hostsock.py": "from hyperhive import home\n",
            "hyperhive/workflow/__init__.py": "",
            "hyperhive/workflow/meta.py": "from hyperhive.runtime import local\n",
            "hyperhive/runtime/__init__.py": "",
            # runtimes -> domain is fine; importing late to dodge the cycle above is not
            "hyperhive/runtime/local.py": "def f():\n    from hyperhive.workflow import meta\n",
            "hyperhive/harness/__init__.py": "",
            # the container side reaching the daemon through a lower module
            "hyperhive/harness/loop.py": "from hyperhive.wire import notify\n",
            "hyperhive/mystery.py": "",
            "forge_ui/__init__.py": "from hyperhive.daemon import hostsock\n",
        },
    )
    problems = violations(tmp_path)
    assert "hyperhive.mystery: in no layer (add it to LAYERS)" in problems
    assert (
        "hyperhive.wire.notify:2 imports hyperhive.daemon.hostsock: ground -> daemon is upward"
        in (problems)
    )
    assert (
        "hyperhive.workflow.meta:1 imports hyperhive.runtime.local: domain -> runtimes is upward"
        in problems
    )
    assert (
        "hyperhive.runtime.local:2 imports hyperhive.workflow.meta inside a function to dodge "
        "a cycle" in problems
    )
    assert "hyperhive.harness.loop (container side) reaches hyperhive.daemon.hostsock" in problems
    assert not [p for p in problems if p.startswith(("forge_ui", "hyperhive.daemon.hostsock"))]
    assert len(problems) == 5, problems
