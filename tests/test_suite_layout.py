"""The test suite's own shape: a test module imports what it shares from tests/support/,
never from another test module or from conftest.py (a module imported twice under two
names runs its fixtures twice and hides which helpers are shared)."""

import ast
from pathlib import Path

TESTS = Path(__file__).parent


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module `path` imports (absolute, top-level name and line), nested imports too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def forbidden(module: str) -> bool:
    top = module.split(".")[0]
    return top == "conftest" or top.startswith("test_")


def test_no_test_module_imports_another_test_module_or_conftest():
    offenders = [
        f"{path.relative_to(TESTS)}:{line}: imports {module}"
        for path in sorted(TESTS.rglob("*.py"))
        for line, module in imported_modules(path)
        if forbidden(module)
    ]
    assert offenders == [], "import shared helpers from tests/support/ instead:\n" + "\n".join(
        offenders
    )


def test_the_check_sees_every_kind_of_import(tmp_path):
    """The walk finds a plain, a from- and a nested import, and lets support/ through."""
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import test_daemon\n"
        "from conftest import run_cli\n"
        "from support.wait import wait_for\n"
        "def f():\n"
        "    from test_git_http import commit\n"
    )
    found = [m for _, m in imported_modules(sample) if forbidden(m)]
    assert found == ["test_daemon", "conftest", "test_git_http"]
